"""`sec2sec-live plot`: a session recorded by the real CsvRecorder comes back as the right arrays and one PNG."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main as live_main
from monitor.recorders import CsvRecorder
from monitor.session_csv import read_session
from monitor.session_plot import attribution_grid, default_output, plot_session, title_of
from sec2sec.commands import build_parser as offline_parser
from sec2sec.stream import Estimate

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("valence", "arousal")
SIDECAR = {
    "source": {"replay": "talk.mp4", "clock": "virtual", "speed": 1.0},
    "untrained": True,
    "pretrained_encoders": {"video": True, "audio": False},
    "checkpoint": None,
}
DROPPED = (20, 21)  # windows that never got an estimate
NO_VIDEO = range(5, 10)
NO_AUDIO = range(25, 30)
HORIZON = 10


def estimate(index: int, dropped_total: int) -> Estimate:
    """Window `index` of a planted session: outputs follow slow sines, attribution favours the newest second."""
    seen = min(index + 1, HORIZON)
    raw = np.arange(1, seen + 1, dtype=np.float64)  # oldest first, newest heaviest
    return Estimate(
        window=index,
        outputs={"valence": 0.5 + 0.4 * np.sin(index / 5), "arousal": 0.5 + 0.3 * np.cos(index / 7)},
        attribution=tuple(raw / raw.sum()),
        video_ok=index not in NO_VIDEO,
        audio_ok=index not in NO_AUDIO,
        frames=0 if index in NO_VIDEO else 25,
        audio_coverage=0.0 if index in NO_AUDIO else 1.0,
        compute_ns=400_000_000,
        gap=2 if index == DROPPED[-1] + 1 else 0,
        latency_ns=(450 + 10 * (index % 7)) * 1_000_000,
        dropped_total=dropped_total,
        frames_dropped=index % 3,
        samples_lost=160 if index == 7 else 0,
    )


@pytest.fixture(scope="module")
def session_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("session") / "talk.csv"
    with CsvRecorder(path, NAMES, SIDECAR) as recorder:
        for index in range(40):
            if index not in DROPPED:
                recorder.write(estimate(index, dropped_total=len(DROPPED) if index > DROPPED[-1] else 0))
    return path


def test_session_is_read_by_column_name(session_csv: Path) -> None:
    session = read_session(session_csv)
    kept = [i for i in range(40) if i not in DROPPED]
    assert session.window.tolist() == kept
    assert list(session.outputs) == list(NAMES)
    np.testing.assert_allclose(session.outputs["valence"], [0.5 + 0.4 * np.sin(i / 5) for i in kept], atol=1e-6)
    assert [w for w, ok in zip(kept, session.video_ok, strict=True) if not ok] == list(NO_VIDEO)
    assert [w for w, ok in zip(kept, session.audio_ok, strict=True) if not ok] == list(NO_AUDIO)
    np.testing.assert_allclose(session.latency_ms, [450 + 10 * (i % 7) for i in kept])
    assert session.dropped_total[-1] == 2 and session.dropped_total[0] == 0
    assert session.lost["frames_dropped"].tolist() == [i % 3 for i in kept]  # read as losses, not as outputs
    assert session.lost["samples_lost"].sum() == 160 and not session.lost["samples_restamped"].any()
    assert session.sidecar is not None and session.sidecar["summary"]["windows"] == len(kept)
    assert session.attribution is not None and len(session.attribution[0]) == 1


def test_attribution_grid_is_relative_to_an_even_split(session_csv: Path) -> None:
    grid = attribution_grid(read_session(session_csv))
    assert grid.shape == (HORIZON, 38)
    # Window 2 attended over 3 seconds with weights 1/6, 2/6, 3/6 (oldest first): newest gets 1.5x an even share.
    np.testing.assert_allclose(grid[:3, 2], [1.5, 1.0, 0.5], atol=1e-3)
    assert np.isnan(grid[3:, 2]).all()  # seconds before the session started
    assert not np.isnan(grid[:, -1]).any()


def test_title_says_where_the_numbers_came_from(session_csv: Path, tmp_path: Path) -> None:
    title = title_of(read_session(session_csv))
    assert "replay of talk.mp4 (virtual clock)" in title
    assert "UNTRAINED" in title and "video pretrained, audio RANDOM" in title
    assert "38 windows, 2 dropped" in title
    bare = tmp_path / "bare.csv"
    bare.write_text(session_csv.read_text())  # no sidecar beside it
    assert "no sidecar bare.csv.json" in title_of(read_session(bare))


def pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_plot_writes_a_picture_of_the_requested_size(session_csv: Path, tmp_path: Path) -> None:
    out = plot_session(read_session(session_csv), tmp_path / "talk.png", size=(1200, 700))
    image = pixels(out)
    assert image.shape[:2] == (700, 1200)
    rgb = (image[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 200  # lines, shading, heat strip, text: not a blank canvas
    assert (rgb < 240).any(axis=1).mean() > 0.05  # a good part of it is not white


def test_cli_writes_png_beside_the_csv(session_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert live_main(["plot", str(session_csv)]) == 0
    out = default_output(session_csv)
    assert out == session_csv.with_name("talk.png")
    assert pixels(out).shape[:2] == (900, 1600)
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_cli_takes_output_and_size(session_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.png"
    assert live_main(["plot", str(session_csv), "-o", str(out), "--size", "800x500"]) == 0
    assert pixels(out).shape[:2] == (500, 800)
    assert capsys.readouterr().out.strip() == f"wrote {out}"


def test_plot_is_the_monitors_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`sec2sec-live plot` has its own parser and help; `sec2sec` has no plot (it reads the monitor's files)."""
    with pytest.raises(SystemExit) as done:
        live_main(["plot", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: sec2sec-live plot [-h] [-o PNG]")
    with pytest.raises(SystemExit) as done:
        live_main(["plot", "talk.csv", "--size", "big"])
    assert done.value.code == 2 and "size 'big' is not WIDTHxHEIGHT" in capsys.readouterr().err
    subparsers = next(a for a in offline_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "plot" not in subparsers.choices and "describe" in subparsers.choices


def test_cut_short_last_row_is_skipped(session_csv: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed.csv"
    killed.write_text(session_csv.read_text() + "40,40.000,41.0")  # the row in flight when the run was killed
    with pytest.warns(UserWarning, match="line 40 is cut short"):
        session = read_session(killed)
    assert session.window[-1] == 39


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; check the path"),
        (b"", "is empty, not a session CSV"),
        (b"name,score\nalice,3\n", "is not a session CSV: no column(s) window, start_s, end_s"),
        (b"\xff\xfe\x00binary", "is not a session CSV (UnicodeDecodeError)"),
        (
            b"window,start_s,end_s,valence,attribution,video_ok,audio_ok,latency_ms,dropped_total\n",
            "has a header but no rows",
        ),
        (
            b"window,start_s,end_s,valence,attribution,video_ok,audio_ok,latency_ms,dropped_total\n"
            b"0,0.000,1.000,oops,,1,1,10.0,0\n1,1.000,2.000,0.5,,1,1,10.0,0\n",
            "line 2 is malformed",
        ),
        (b"window,start_s,end_s,attribution,video_ok,audio_ok,latency_ms,dropped_total\n0,0,1,,1,1,1,0\n", "no output"),
    ],
    ids=["missing", "empty", "other_csv", "binary", "header_only", "bad_cell", "no_outputs"],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "session.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_session(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert live_main(["plot", str(path)]) == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error:") and message in stderr[0]
    assert not default_output(path).exists()


def test_output_directory_must_exist(session_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist; create it or use -o"):
        plot_session(read_session(session_csv), tmp_path / "nowhere" / "talk.png")


def test_import_loads_neither_matplotlib_nor_torch() -> None:
    """The reader, the plot and the CLI are light to import: matplotlib waits for a drawing, torch for a run."""
    code = (
        "import sys, monitor.session_csv, monitor.session_plot, monitor.cli\n"
        "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
