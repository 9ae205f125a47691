"""Compiled encoders (sec2sec/compiled.py, sec2sec/aoti_cache.py): the cache key, damaged and foreign packages,
the parity fallback, loading from the cache without compiling, concurrent builders, and the CLIs' default.

AOTInductor compiles cost tens of seconds here, so the cache mechanics run on a tiny module (tests/compile_runner.py)
and the real encoders of the small test config are compiled once per session (`encoder_cache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from compile_runner import ITEM_SHAPE, tiny_plan
from conftest import small_config

from sec2sec import aoti_cache, compiled
from sec2sec.compiled import LIVE_BATCH, CompiledFallbackWarning, compile_model, encoder_plans, is_compiled
from sec2sec.config import VideoConfig
from sec2sec.model import Sec2Sec

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"
pytestmark = pytest.mark.slow


def compiled_env(cache: Path) -> dict[str, str]:
    """The environment of a user run: compiled by default, cache in `cache`."""
    env = {k: v for k, v in os.environ.items() if k != "SEC2SEC_COMPILE"}
    return {**env, "SEC2SEC_CACHE": str(cache), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}


def no_compiling(*args: object) -> None:
    raise AssertionError("a package was compiled although the cache held a good one")


def forge_package(spec: aoti_cache.PackageSpec, folder: Path, damage: bool = False) -> Path:
    """A package file with a record that vouches for it (`damage`: then one byte of it flips, as on a bad disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray(os.urandom(4096))
    meta = {"spec": spec.as_json(), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if damage:
        data[100] ^= 0xFF
    (folder / f"{spec.stem()}.pt2").write_bytes(bytes(data))
    (folder / f"{spec.stem()}.json").write_text(json.dumps(meta))
    return folder / f"{spec.stem()}.pt2"


def tiny_spec() -> aoti_cache.PackageSpec:
    plan = tiny_plan()
    return aoti_cache.spec_for(plan.name, plan.module, plan.config, ITEM_SHAPE, 4)


def test_key_changes_with_everything_that_changes_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = tiny_plan()
    base = aoti_cache.spec_for(plan.name, plan.module, plan.config, ITEM_SHAPE, 4)
    assert aoti_cache.spec_for(plan.name, tiny_plan().module, plan.config, ITEM_SHAPE, 4).key() == base.key()
    variants = [
        aoti_cache.spec_for(plan.name, tiny_plan(seed=1).module, plan.config, ITEM_SHAPE, 4),  # weights
        aoti_cache.spec_for(plan.name, plan.module, {"kind": "other"}, ITEM_SHAPE, 4),  # encoder config
        aoti_cache.spec_for(plan.name, plan.module, plan.config, (3, 8, 16), 4),  # input shape
        aoti_cache.spec_for(plan.name, plan.module, plan.config, ITEM_SHAPE, 8),  # batch range
        dataclasses.replace(base, torch_version="2.99.0"),
        dataclasses.replace(base, device="cuda NVIDIA H200 sm_90"),
        dataclasses.replace(base, threads=base.threads + 1),
    ]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    variants.append(aoti_cache.spec_for(plan.name, plan.module, plan.config, ITEM_SHAPE, 4))
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 1 + len(variants)
    assert variants[-1].cpu_capability == "AVX512" and base.torch_version == torch.__version__
    assert base.threads == torch.get_num_threads()
    monkeypatch.setattr(aoti_cache, "FORMAT_VERSION", aoti_cache.FORMAT_VERSION - 1)  # an older build recipe
    assert base.key() not in keys


def test_encoder_config_is_in_the_key_but_the_weights_mode_only_through_the_weights() -> None:
    def video_key(config: VideoConfig) -> str:
        torch.manual_seed(0)
        model = Sec2Sec(dataclasses.replace(small_config(), video=config))
        plan = encoder_plans(model)[0]
        return aoti_cache.spec_for(plan.name, plan.module, plan.config, plan.item_shape, 64).key()

    base = small_config().video
    grid = video_key(dataclasses.replace(base, token_grid=(1, 1, 1)))
    frames = video_key(dataclasses.replace(base, frames_per_window=8))
    assert len({video_key(base), grid, frames}) == 3
    assert video_key(dataclasses.replace(base, weights_path="")) == video_key(base)


def test_a_record_for_other_weights_or_no_record_is_never_trusted(tmp_path: Path) -> None:
    spec = tiny_spec()
    forge_package(spec, tmp_path)
    assert aoti_cache.package_problem(spec, tmp_path) is None
    record = tmp_path / f"{spec.stem()}.json"
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "spec": {**meta["spec"], "weights_sha256": "0" * 64}}))
    assert aoti_cache.package_problem(spec, tmp_path).startswith("stale or foreign")
    record.unlink()
    assert aoti_cache.package_problem(spec, tmp_path).startswith("unfinished")
    forge_package(spec, tmp_path, damage=True)
    assert aoti_cache.package_problem(spec, tmp_path).startswith("damaged")


def test_concurrent_first_runs_rebuild_a_damaged_package_once(tmp_path: Path) -> None:
    """Two processes find the same damaged package: one rebuilds it (the other waits, then loads), and the cache
    ends with one good package and no temporary files."""
    folder, spec = tmp_path / "cache" / "aoti", tiny_spec()
    forge_package(spec, folder, damage=True)
    env = compiled_env(tmp_path / "cache")
    cmd = [sys.executable, str(ROOT / "tests" / "compile_runner.py")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = [subprocess.Popen(cmd, env=env, cwd=ROOT, **pipes) for _ in range(2)]
    results = [run.communicate(timeout=900) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in results]
    assert sorted(out.strip() for out, _ in results) == ["built", "loaded"]
    builder_err = next(err for out, err in results if out.strip() == "built")
    assert "compiling the tiny encoder" in builder_err and "damaged" in builder_err
    names = sorted(p.name.removeprefix(spec.stem()) for p in folder.iterdir())
    assert names == [".eager.pt", ".json", ".lock", ".pt2"]  # no temporary files left
    assert aoti_cache.package_problem(spec, folder) is None
    runner = aoti_cache.load(folder / f"{spec.stem()}.pt2")
    with torch.inference_mode():
        x = torch.randn(4, *ITEM_SHAPE)  # the package's fixed batch
        torch.testing.assert_close(runner(x), tiny_plan().module(x), atol=1e-5, rtol=1e-5)


def test_a_warm_start_compares_with_the_stored_eager_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load runs the eager module once and stores its output; later loads run only the package. A
    damaged reference is computed again; a reference that disagrees with the package discards both."""
    monkeypatch.setenv("SEC2SEC_CACHE", str(tmp_path))
    plan, calls = tiny_plan(), []
    eager = compiled.eager_output
    monkeypatch.setattr(compiled, "eager_output", lambda module, x: calls.append(1) or eager(module, x))
    assert compiled.compile_encoder(plan, max_batch=4, show=False) == "built"
    assert is_compiled(plan.module)
    runs: list[int] = []
    forward = plan.module.forward
    runner = forward.runner
    forward.runner = lambda x: runs.append(x.shape[0]) or runner(x)
    with torch.inference_mode():
        for batch in (1, 3, 4, 6):  # a package has a fixed batch (4): shorter chunks are padded, longer split
            x = torch.randn(batch, *plan.item_shape)
            torch.testing.assert_close(plan.module(x), type(plan.module).forward(plan.module, x))
    assert runs == [4, 4, 4, 4, 4]
    assert compiled.compile_encoder(tiny_plan(), max_batch=4, show=False) == "loaded"
    assert len(calls) == 1
    spec = aoti_cache.spec_for(plan.name, plan.module, plan.config, plan.item_shape, 4)
    reference = aoti_cache.packages_dir() / f"{spec.stem()}.eager.pt"
    reference.write_bytes(reference.read_bytes()[:50])  # truncated: unreadable, so computed again
    assert compiled.compile_encoder(tiny_plan(), max_batch=4, show=False) == "loaded" and len(calls) == 2
    saved = torch.load(reference, weights_only=True)
    torch.save({**saved, "output": saved["output"] + 1.0}, reference)  # wrong values: the package is not trusted
    with pytest.raises(RuntimeError, match="differs from eager"):
        compiled.compile_encoder(tiny_plan(), max_batch=4, show=False)
    assert not reference.exists() and aoti_cache.package_problem(spec, aoti_cache.packages_dir()) == "not built yet"
    other = aoti_cache.spec_for("other", plan.module, plan.config, plan.item_shape, 4)
    aoti_cache.save_reference(other, aoti_cache.packages_dir(), saved["output"])
    shutil.copy(aoti_cache.packages_dir() / f"{other.stem()}.eager.pt", reference)  # another spec's: not used
    assert aoti_cache.load_reference(spec, aoti_cache.packages_dir()) is None


def test_prune_removes_packages_unused_for_days_and_old_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEC2SEC_CACHE", str(tmp_path))
    folder = aoti_cache.packages_dir()
    old, fresh = tiny_spec(), dataclasses.replace(tiny_spec(), name="fresh")
    for spec in (old, fresh):
        forge_package(spec, folder)
        aoti_cache.save_reference(spec, folder, torch.zeros(2))
    leftovers = [folder / f".{old.stem()}.0123abcd.pt2", folder / "orphan-0000.eager.pt", folder / ".new.4567.pt2"]
    for path in leftovers:
        path.write_bytes(b"x" * 10)
    now = time.time()
    days_ago = {folder / f"{old.stem()}.json": 40, leftovers[0]: 2, leftovers[1]: 2, leftovers[2]: 0.1}
    for path, days in days_ago.items():
        os.utime(path, (now - days * 86400, now - days * 86400))
    from sec2sec.cli import main

    assert main(["compile", "--prune", "30"]) == 0
    out = capsys.readouterr().out
    assert "pruned 3 package(s) unused for over 30 days" in out and f"removed {old.stem()}" in out
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted([f"{fresh.stem()}.eager.pt", f"{fresh.stem()}.json", f"{fresh.stem()}.pt2", ".new.4567.pt2"])
    assert main(["compile", "--prune", "30", "--config", "x.toml"]) == 2
    assert "builds nothing" in capsys.readouterr().err


def test_loading_a_package_marks_it_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC2SEC_CACHE", str(tmp_path))
    plan = tiny_plan()
    assert compiled.compile_encoder(plan, max_batch=4, show=False) == "built"
    spec = aoti_cache.spec_for(plan.name, plan.module, plan.config, plan.item_shape, 4)
    record = aoti_cache.packages_dir() / f"{spec.stem()}.json"
    os.utime(record, (time.time() - 40 * 86400, time.time() - 40 * 86400))
    assert compiled.compile_encoder(tiny_plan(), max_batch=4, show=False) == "loaded"
    assert time.time() - record.stat().st_mtime < 60
    assert aoti_cache.prune(aoti_cache.packages_dir(), 30) == ([], 0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch at one thread, as the packages of `encoder_cache` were compiled (the count is in their key)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory, small: Path) -> Path:
    """$SEC2SEC_CACHE with the small config's encoders compiled by `sec2sec compile --config` (seed 0 weights)."""
    root = tmp_path_factory.mktemp("encoder-cache")
    cmd = [sys.executable, "-m", "sec2sec.cli", "compile", "--config", str(small), "--device", "cpu", "--threads", "1"]
    result = subprocess.run(cmd, env=compiled_env(root), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "video encoder: built" in result.stdout and "audio encoder: built" in result.stdout
    assert "compiling the video encoder" in result.stderr and "--no-compile" in result.stderr
    assert "No CUDA runtime is found" not in result.stderr  # torch's CUDA-toolkit probe, noise in a CPU build
    return root


def test_second_run_loads_from_the_cache_without_compiling(
    encoder_cache: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEC2SEC_CACHE", str(encoder_cache))
    monkeypatch.setattr(aoti_cache, "export_and_compile", no_compiling)
    torch.manual_seed(0)
    model = Sec2Sec(small_config()).eval()
    torch.manual_seed(0)
    eager = Sec2Sec(small_config()).eval()
    assert compile_model(model, max_batch=LIVE_BATCH) == {"video": "loaded", "audio": "loaded"}
    assert is_compiled(model.video_encoder) and not is_compiled(eager.video_encoder)
    with torch.inference_mode():
        for batch in (1, 3):  # 3 > the live packages' batch 1: three compiled calls
            image = eager.audio_frontend(0.1 * torch.randn(batch, 16000))
            torch.testing.assert_close(model.audio_encoder(image), eager.audio_encoder(image), atol=1e-4, rtol=1e-4)
        clip = eager.video_frontend(torch.randint(0, 255, (2, 4, 120, 160, 3), dtype=torch.uint8))
        torch.testing.assert_close(model.video_encoder(clip), eager.video_encoder(clip), atol=1e-4, rtol=1e-4)
        model.audio_encoder.trunk[0].weight.mul_(2)  # weights changed after compiling: the eager module runs
        eager.audio_encoder.trunk[0].weight.mul_(2)
        torch.testing.assert_close(model.audio_encoder(image), eager.audio_encoder(image))


def live_rows(cache: Path, small: Path, csv: Path, *extra: str) -> tuple[pd.DataFrame, dict, str]:
    cmd = [sys.executable, "-m", "monitor.cli", "--replay", str(DEMO), "--config", str(small), "--clock", "offline"]
    cmd += ["--no-ui", "--duration", "3", "--device", "cpu", "--threads", "1", "--csv", str(csv), *extra]
    result = subprocess.run(cmd, env=compiled_env(cache), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(csv), json.loads(Path(f"{csv}.json").read_text()), result.stderr


def test_live_default_loads_the_compiled_encoders_and_matches_no_compile(
    encoder_cache: Path, small: Path, tmp_path: Path
) -> None:
    rows, sidecar, stderr = live_rows(encoder_cache, small, tmp_path / "c.csv")
    assert sidecar["compiled_encoders"] == {"video": "loaded", "audio": "loaded"}
    assert "compiling" not in stderr and "warning" not in stderr
    eager_rows, eager_sidecar, _ = live_rows(encoder_cache, small, tmp_path / "e.csv", "--no-compile")
    assert eager_sidecar["compiled_encoders"] == {}
    assert len(rows) == 3
    for column in ("valence", "arousal"):
        assert rows[column].tolist() == pytest.approx(eager_rows[column].tolist(), abs=1e-4)


def test_a_foreign_package_falls_back_to_eager_with_one_warning(
    encoder_cache: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed-0 video package put under the key of other weights: loads, fails parity, is deleted."""
    monkeypatch.setenv("SEC2SEC_CACHE", str(encoder_cache))
    monkeypatch.setattr(aoti_cache, "export_and_compile", no_compiling)
    torch.manual_seed(0)
    good = Sec2Sec(small_config())
    torch.manual_seed(1)
    model = Sec2Sec(small_config()).eval()
    model.audio_encoder.load_state_dict(good.audio_encoder.state_dict())  # the audio package is the right one
    folder = aoti_cache.packages_dir()
    good_video, video = (encoder_plans(m)[0] for m in (good, model))
    good_spec, spec = (aoti_cache.spec_for(p.name, p.module, p.config, p.item_shape, 1) for p in (good_video, video))
    shutil.copy(folder / f"{good_spec.stem()}.pt2", folder / f"{spec.stem()}.pt2")
    meta = json.loads((folder / f"{good_spec.stem()}.json").read_text())
    (folder / f"{spec.stem()}.json").write_text(json.dumps({**meta, "spec": spec.as_json()}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = compile_model(model, max_batch=LIVE_BATCH)
    assert [w.category for w in caught] == [CompiledFallbackWarning]
    assert "video encoder" in str(caught[0].message) and "differs from eager" in str(caught[0].message)
    assert report["audio"] == "loaded" and report["video"].startswith("eager")
    assert not is_compiled(model.video_encoder) and is_compiled(model.audio_encoder)
    assert not (folder / f"{spec.stem()}.pt2").exists()  # deleted: the next run builds it again
    frames = torch.randint(0, 255, (1, 4, 120, 160, 3), dtype=torch.uint8)
    with torch.inference_mode():
        x = model.video_frontend(frames)
        torch.testing.assert_close(model.video_encoder(x), type(model.video_encoder).forward(model.video_encoder, x))


def test_extract_runs_the_compiled_encoders(
    encoder_cache: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """extract (train.seed 0, the small config) finds the packages sec2sec compile built and encodes with them."""
    from synthetic_clips import Second, render, write_liris_tree, write_mp4

    from sec2sec.config import Config, TrainConfig
    from sec2sec.offline import extract as extract_module

    monkeypatch.setenv("SEC2SEC_CACHE", str(encoder_cache))
    monkeypatch.setattr(aoti_cache, "export_and_compile", no_compiling)
    seen: list[dict[str, str]] = []
    real = compiled.compile_model
    skipped = [0.0]  # a clock that jumps 1000 s while the packages are loaded: a first run's build, say
    clock = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + skipped[0])

    def loading(model: torch.nn.Module, max_batch: int) -> dict[str, str]:
        seen.append(real(model, max_batch=max_batch))
        skipped[0] += 1000.0
        return seen[-1]

    monkeypatch.setattr(extract_module, "compile_model", loading)
    monkeypatch.setattr(extract_module, "time", clock)
    root = write_liris_tree(tmp_path / "liris", [("a.mp4", "film", 0, 0.2, 0.3), ("b.mp4", "film", 0, 0.6, 0.7)])
    for name, seed in (("a.mp4", 0), ("b.mp4", 1)):
        write_mp4(root / "data" / name, *render([Second(flash=(2, 5)), Second(beep=(100, 250))], seed=seed))
    config = Config(model=small_config(), train=TrainConfig(seed=0))
    # --batch 1: the packages `sec2sec compile` builds by default (for sec2sec-live), so nothing is built here
    summary = extract_module.extract("liris", root, tmp_path / "out", config, compiled=True, workers=0, batch=1)
    assert seen == [{"video": "loaded", "audio": "loaded"}] and summary.encoded == 2
    assert 0 < summary.seconds < 1000  # the encoding rate's clock starts with the encoders ready


@pytest.mark.requires_cuda
def test_cuda_package_builds_loads_and_matches_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC2SEC_CACHE", str(tmp_path))
    plan = tiny_plan()
    plan.module.cuda()
    assert compiled.compile_encoder(plan, max_batch=4, show=False) == "built"
    assert aoti_cache.spec_for("tiny", plan.module, plan.config, ITEM_SHAPE, 4).device.startswith("cuda ")
    eager = tiny_plan().module.cuda()
    with torch.inference_mode():
        x = torch.randn(3, *ITEM_SHAPE, device="cuda")
        torch.testing.assert_close(plan.module(x), eager(x), atol=1e-4, rtol=1e-4)
    again = tiny_plan()
    again.module.cuda()
    assert compiled.compile_encoder(again, max_batch=4, show=False) == "loaded"
