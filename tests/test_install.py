"""The package as a user installs it: the wheel built from this tree, installed into a folder outside it.

The development venv holds an editable install of some checkout, and the tests run with this tree on the path;
so every command here runs from a temporary folder with only the installed wheel on PYTHONPATH, and each check
first proves (by `__file__`) that the modules it runs came from the wheel.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.configs import small_toml

from sec2sec.config import shipped_config_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a copy of the source tree, then `pip install --target` of that wheel -> the target folder."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("sec2sec", "monitor"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), "-q"]
    subprocess.run(build, check=True, capture_output=True, timeout=300, cwd=base)
    (wheel,) = (base / "dist").glob("sec2sec_live-*.whl")
    target = base / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel), "-q"]
    subprocess.run(install, check=True, capture_output=True, timeout=300, cwd=base)
    return target


def run(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command of the installed package, with only the wheel's folder on PYTHONPATH (never this tree)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env, check=False
    )


def test_the_wheel_holds_every_package_and_the_configs(installed: Path) -> None:
    (wheel,) = installed.parent.glob("dist/*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for d in ("sec2sec", "monitor") for p in (ROOT / d).rglob("*.py")}
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "sec2sec" / "configs").glob("*.toml")}
    assert sources <= names and "sec2sec/offline/extract.py" in names and "monitor/demo_clip.py" in names
    assert configs <= names and "sec2sec/configs/first_impressions.toml" in names
    weights = {f"sec2sec/face_weights/{n}" for n in ("pnet.pt", "rnet.pt", "onet.pt", "LICENSE", "README.md")}
    assert weights <= names  # the face detector's weights, licence and provenance ship as package data
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.mark.slow
def test_installed_commands_and_configs_work_outside_the_source_tree(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import sec2sec.offline.extract as e, monitor.cli as m, sec2sec.config as c\n"
        "print(e.__file__); print(m.__file__)\n"
        "print(c.config_path('first_impressions'))\n"
        "print(c.load_config('first_impressions').model.heads.outputs)\n"
    )
    result = run(installed, "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    extract_file, cli_file, config_file, outputs = result.stdout.splitlines()
    for path in (extract_file, cli_file, config_file):
        assert Path(path).is_relative_to(installed), path  # the wheel's copy, not this tree or the editable one
    assert Path(config_file) == installed / "sec2sec" / "configs" / "first_impressions.toml"
    assert outputs == "('extraversion', 'neuroticism', 'agreeableness', 'conscientiousness', 'openness')"

    faces = "import sec2sec.faces as f\nd = f.FaceDetector()\nprint(f.__file__); print(d.pnet.conv1.weight.shape)\n"
    detector = run(installed, "-c", faces, cwd=tmp_path)  # the shipped weights pass their sha256 and load
    assert detector.returncode == 0, detector.stderr
    faces_file, shape = detector.stdout.splitlines()
    assert Path(faces_file).is_relative_to(installed) and shape == "torch.Size([10, 3, 3, 3])"

    extract = run(installed, "-m", "sec2sec", "extract", "--help", cwd=tmp_path)
    assert extract.returncode == 0 and "--dataset {liris,fi,hume,manifest}" in extract.stdout, extract.stderr
    assert "--framing {frame,face}" in extract.stdout and "--face {largest,centre}" in extract.stdout
    assert "first_impressions" in " ".join(extract.stdout.split())
    live = run(installed, "-m", "monitor.cli", "--help", cwd=tmp_path)
    assert live.returncode == 0 and "--replay" in live.stdout, live.stderr
    for script in ("sec2sec", "sec2sec-live"):  # the console scripts pip wrote
        assert (installed / "bin" / script).is_file()

    wrong = run(installed, "-m", "sec2sec", "describe", "--config", "first_impression", cwd=tmp_path)
    assert wrong.returncode == 2
    names = ", ".join(shipped_config_names())
    assert wrong.stderr.startswith(f"error: no shipped config is named 'first_impression'; use one of {names}")
    assert len(wrong.stderr.splitlines()) == 1


@pytest.mark.slow
def test_installed_demo_clip_replays(installed: Path, tmp_path: Path) -> None:
    """The demo clip's generator ships in the wheel: write a 2-second clip, replay it offline into a CSV and
    plot that CSV with the installed `sec2sec-live plot`."""
    made = run(installed, "-m", "monitor.demo_clip", "clips/demo.mp4", "--seconds", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "clips" / "demo.mp4").stat().st_size > 10_000
    (tmp_path / "small.toml").write_text(small_toml())
    args = ["--replay", "clips/demo.mp4", "--config", "small.toml", "--clock", "offline", "--no-ui", "--csv", "a.csv"]
    replay = run(installed, "-m", "monitor.cli", *args, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["window"] for row in rows] == ["0", "1"]
    assert all(row["video_ok"] == "1" and row["audio_ok"] == "1" for row in rows)
    plot = run(installed, "-m", "monitor.cli", "plot", "a.csv", "--size", "640x400", cwd=tmp_path)
    assert plot.returncode == 0 and plot.stdout.strip() == "wrote a.png", plot.stderr
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")


def test_the_readme_opens_with_two_commands_and_ci_installs_as_the_first() -> None:
    """The README's first block: the set-up joined with the replay of the shipped sample, then the tests; `.ci/run`
    installs exactly as that set-up does and runs exactly that test command."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```\n", 2)[1]
    setup_and_replay, tests = block.splitlines()
    setup, replay = setup_and_replay.split(" && .venv/bin/sec2sec-live ")
    assert setup.startswith("python3 -m venv .venv && .venv/bin/pip install torch==")
    assert replay == "--replay samples/demo_face.mp4 --csv demo.csv" and (ROOT / "samples" / "demo_face.mp4").is_file()
    assert tests == ".venv/bin/python -m pytest -q"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert setup in [line.replace("pip install -q ", "pip install ") for line in ci]
    assert ci[-1] == tests
