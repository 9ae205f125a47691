"""The user's own data and Hume-Reaction: manifest rows (errors name the row and the column, a bad row never
stops the others), per-second traces (one row per second, or a time column resampled onto seconds),
Hume-Reaction's data_info.csv as shipped, the per-second batch path equal to the live step path, and the
per-second metrics."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import TINY_ENCODERS_TOML, small_config
from helpers.hume_tree import write_hume_info
from helpers.synthetic_clips import Second, render, write_mp4
from helpers.synthetic_windows import random_windows

from sec2sec.commands import main
from sec2sec.config import NANOS_PER_SECOND as SECOND
from sec2sec.config import HeadsConfig
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import read_dataset
from sec2sec.offline.features import read_index
from sec2sec.offline.hume import HUME_EMOTIONS
from sec2sec.offline.metrics import ccc, regression_metrics, score_seconds
from sec2sec.offline.traces import read_trace, resample_to_seconds
from sec2sec.stream import AffectStream

KINDS = ("lstm", "attention_lstm", "gru_transformer", "none")
HEADS = HeadsConfig(task="regression", outputs=("valence", "arousal"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_seconds_batch_output_equals_the_live_step(kind: str) -> None:
    """The per-second outputs training supervises are, second by second, what AffectStream reports live with
    the default horizon (clip_seconds = 4), also past the horizon (6 seconds) where the window slides."""
    torch.manual_seed(0)
    config = small_config(kind)
    video = replace(config.video, resize=40, crop=32, token_grid=(1, 2, 2))
    audio = replace(config.audio, image_size=(32, 64), token_grid=(1, 2))
    model = Sec2Sec(replace(config, video=video, audio=audio, clip_seconds=4)).eval()
    windows = random_windows(6, model.config.video.frames_per_window, seed=1)
    with torch.inference_mode():
        frames = torch.from_numpy(np.stack([w.frames for w in windows]))
        audio = torch.from_numpy(np.stack([w.audio for w in windows]))
        video_tokens, audio_tokens = model.encode(frames, audio)
        logits, _ = model.forward_tokens(video_tokens[None], audio_tokens[None], torch.tensor([6]), per_second=True)
        clip, _ = model.forward_tokens(video_tokens[None, :4], audio_tokens[None, :4], torch.tensor([4]))
    assert logits.shape == (1, 6, 2)
    stream = AffectStream(model)
    for t, window in enumerate(windows):
        live = list(stream.step(window).outputs.values())
        assert live == pytest.approx(torch.sigmoid(logits[0, t]).tolist(), abs=1e-5), t
    assert torch.allclose(logits[0, 3], clip[0], atol=1e-5)  # the clip's output is its last second's


def test_trace_one_row_per_second_and_resampled(tmp_path: Path) -> None:
    per_second = tmp_path / "a.csv"
    per_second.write_text("valence,arousal\n0.1,0.5\n0.2,\n0.3,0.7\n")
    trace = read_trace(per_second, ("valence", "arousal"), clip_ns=4 * SECOND)
    assert trace["valence"] == pytest.approx([0.1, 0.2, 0.3])
    assert trace["arousal"][0] == 0.5 and math.isnan(trace["arousal"][1]) and trace["arousal"][2] == 0.7
    timed = tmp_path / "b.csv"
    # 4 samples a second in seconds 0 and 1, nothing in second 2, one sample at 3.5
    rows = [(0.0, 0.1), (0.25, 0.3), (0.5, 0.5), (0.75, 0.7), (1.0, 0.2), (1.5, 0.2), (3.5, 0.8)]
    timed.write_text("time,valence,arousal\n" + "".join(f"{t},{v},0.5\n" for t, v in rows))
    resampled = read_trace(timed, ("valence", "arousal"), clip_ns=4 * SECOND)["valence"]
    assert resampled == pytest.approx([0.4, 0.2, 0.2 + (0.8 - 0.2) * (2.5 - 1.5) / 2, 0.8])
    sparse = resample_to_seconds(np.array([0.5, 2.2]), np.array([0.3, 0.9]), 3)  # slower than 1 Hz: interpolated
    assert sparse.tolist() == pytest.approx([0.3, 0.3 + 0.6 * 1.0 / 1.7, 0.9])
    bad = tmp_path / "c.csv"
    bad.write_text("time,valence,arousal\n0,0.1,0.2\n1,high,0.2\n")
    with pytest.raises(ValueError, match=r"c.csv row 3, column valence: 'high' is not a number"):
        read_trace(bad, ("valence", "arousal"), clip_ns=4 * SECOND)


def _manifest(root: Path, clip: Path) -> Path:
    """A manifest with good rows, groups, pinned splits, a trace, and one bad row of each kind. Only the clip
    with a trace (a.mp4, 2 s) must be a real video: its trace is checked against its duration."""
    (root / "clips").mkdir(parents=True)
    for name in ("b", "c", "d", "e", "f"):
        (root / "clips" / f"{name}.mp4").write_bytes(clip.read_bytes())
    write_mp4(root / "clips" / "a.mp4", *render([Second(), Second()]))
    (root / "traces").mkdir()
    (root / "traces" / "a.csv").write_text("valence,arousal\n0.2,0.4\n0.4,0.6\n")
    lines = [
        "path,valence,arousal,group,split,trace",
        "clips/a.mp4,,,p1,,traces/a.csv",  # labels from the trace (its mean)
        "clips/b.mp4,0.5,0.5,p1,test,",  # pins group p1 (and so a.mp4) to test
        "clips/c.mp4,0.1,0.9,p2,train,",
        "clips/missing.mp4,0.1,0.2,p3,,",  # no such file
        "clips/d.mp4,1.7,0.2,p4,,",  # outside [0, 1]
        "clips/e.mp4,0.1,0.2,p5,holdout,",  # unknown split
        "clips/f.mp4,0.3,0.3,p6,,",
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_manifest_rows_groups_and_bad_rows(tmp_path: Path) -> None:
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"not a real video; the reader only checks that the file is there")
    records = read_dataset("manifest", _manifest(tmp_path / "own", clip), HEADS)
    by_id = {r.clip_id: r for r in records}
    assert list(by_id) == [f"clips/{n}.mp4" for n in ("a", "b", "c", "missing", "d", "e", "f")]
    a = by_id["clips/a.mp4"]
    assert a.split == "test" and a.group == "p1" and a.targets == pytest.approx({"valence": 0.3, "arousal": 0.5})
    assert a.seconds == {"valence": pytest.approx([0.2, 0.4]), "arousal": pytest.approx([0.4, 0.6])}
    assert by_id["clips/c.mp4"].split == "train" and by_id["clips/f.mp4"].split in ("train", "validation", "test")
    problems = {k: r.problem for k, r in by_id.items() if r.problem}
    assert list(problems) == ["clips/missing.mp4", "clips/d.mp4", "clips/e.mp4"]
    assert problems["clips/missing.mp4"].startswith("manifest.csv row 5, column path: ")
    assert problems["clips/missing.mp4"].endswith("missing.mp4 does not exist")
    assert problems["clips/d.mp4"] == "manifest.csv row 6, column valence: 1.7 is outside [0, 1] (task = regression)"
    assert problems["clips/e.mp4"].startswith("manifest.csv row 7, column split: 'holdout' is not a split")
    binary = read_dataset("manifest", tmp_path / "own", HeadsConfig(task="binary", outputs=("valence",)))
    assert not next(r for r in binary if r.clip_id == "clips/d.mp4").problem  # binary labels: any number
    manifest = tmp_path / "own" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("clips/c.mp4,0.1,0.9,p2,train", "clips/c.mp4,0.1,0.9,p1,train"))
    regrouped = {r.clip_id: r.problem for r in read_dataset("manifest", manifest, HEADS)}
    assert regrouped["clips/b.mp4"] == regrouped["clips/a.mp4"].replace("row 2", "row 3")
    conflict = "manifest.csv row 4, column split: group 'p1' is pinned to test and train"
    assert regrouped["clips/c.mp4"].startswith(conflict)


def test_manifest_bad_row_is_kept_beside_a_good_row_with_its_path(tmp_path: Path) -> None:
    """A duplicate path is a problem whether the first row was good or bad: the later good row must not take
    the bad row's clip id (extraction would then drop the bad row's message once the clip is encoded)."""
    (tmp_path / "a.mp4").write_bytes(b"a clip")
    (tmp_path / "manifest.csv").write_text("path,valence,arousal\na.mp4,1.7,0.2\na.mp4,0.1,0.2\n")
    problems = {r.clip_id: r.problem for r in read_dataset("manifest", tmp_path, HEADS)}
    assert problems["a.mp4"] == "manifest.csv row 2, column valence: 1.7 is outside [0, 1] (task = regression)"
    assert problems["a.mp4 (row 3)"] == "manifest.csv row 3, column path: a.mp4 is listed twice"


def test_manifest_header_errors(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,valence\nx.mp4,0.1\n")
    with pytest.raises(ValueError, match=r"has no `path` column"):
        read_dataset("manifest", tmp_path / "m.csv", HEADS)
    (tmp_path / "m.csv").write_text("path,valence\nx.mp4,0.1\n")
    with pytest.raises(ValueError, match=r"lacks label column\(s\) arousal named by \[model.heads\] outputs"):
        read_dataset("manifest", tmp_path / "m.csv", HEADS)
    with pytest.raises(ValueError, match=r"does not exist; pass the manifest CSV"):
        read_dataset("manifest", tmp_path / "none.csv", HEADS)


def test_hume_layout_as_shipped(tmp_path: Path) -> None:
    root = tmp_path / "hume"
    for split, clip_id in (("train", "00001"), ("val", "00002"), ("test", "00003"), ("train", "00005")):
        (root / split / "mp4").mkdir(parents=True, exist_ok=True)
        (root / split / "mp4" / f"{clip_id}.mp4").write_bytes(b"x")
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    rows = [("00001", "Train", values), ("00002", "Val", values), ("00003", "Test", None), ("00004", "Train", values)]
    write_hume_info(root, [*rows, ("00005", "Train", [*values[:6], 1.5])])
    records = {r.clip_id: r for r in read_dataset("hume", root)}
    assert [(r.split, r.path.name) for r in list(records.values())[:3]] == [
        ("train", "00001.mp4"),
        ("validation", "00002.mp4"),
        ("test", "00003.mp4"),
    ]
    assert records["00001"].targets == dict(zip(HUME_EMOTIONS, values, strict=True))
    assert records["00003"].targets == {} and not records["00003"].problem  # withheld: extracted, never scored
    assert records["00004"].problem.startswith("data_info.csv row 5, column File_ID: ")
    assert records["00004"].problem.endswith("train/mp4/00004.mp4 does not exist")
    assert records["00005"].problem == "data_info.csv row 6, column Surprise: 1.5000 is outside [0, 1]"


def test_per_second_and_regression_metrics() -> None:
    truth = np.array([0.1, 0.4, 0.2, 0.9])
    assert ccc(truth, truth) == pytest.approx(1.0)
    assert ccc(truth, truth + 0.2) < 0.9 and np.corrcoef(truth, truth + 0.2)[0, 1] == pytest.approx(1.0)
    row = regression_metrics(truth, truth + 0.1, baseline=float(truth.mean()))
    assert row["mse"] == pytest.approx(0.01) and row["baseline_mse"] == pytest.approx(float(truth.var()))
    seconds = np.array([[[0.1], [0.5], [np.nan]], [[0.3], [np.nan], [0.9]]])
    predicted = np.array([[[0.1], [0.5], [0.0]], [[0.3], [0.0], [0.9]]])
    scores = score_seconds(("v",), "regression", seconds, predicted)["v"]
    assert scores["pearson_r"] == pytest.approx(1.0) and scores["ccc"] == pytest.approx(1.0)
    assert scores["mse"] == pytest.approx(0.0)


OWN_TOML = (
    """
[model]
clip_seconds = 2
"""
    + TINY_ENCODERS_TOML
    + """
[model.heads]
task = "regression"
outputs = ["valence", "arousal"]
"""
)


def _timed_trace(path: Path, times: list[float]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("time,valence,arousal\n" + "".join(f"{t!r},0.5,0.5\n" for t in times))
    return path.name


def test_extract_lists_each_bad_row_and_encodes_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sec2sec extract` on a manifest with one row of each fault: an unquoted comma in a group name, a path
    through a loop of symbolic links, a cell that is not UTF-8, one file under other spellings (`sub/..`, its
    absolute path, a link: the later rows are listed; a link with other labels lists both rows), traces in
    milliseconds and in Unix time. Every such row is listed (row and column named), the good clip is encoded."""
    own = tmp_path / "own"
    write_mp4(own / "clips" / "a.mp4", *render([Second(), Second()]))  # 2.5 s
    for name in ("d", "e", "f"):
        (own / "clips" / f"{name}.mp4").write_bytes((own / "clips" / "a.mp4").read_bytes())
    (own / "clips" / "b.mp4").write_bytes(b"never decoded: the row is refused first")
    (own / "clips" / "sub").mkdir()
    (own / "loop").symlink_to(own / "loop2")
    (own / "loop2").symlink_to(own / "loop")
    (own / "link.mp4").symlink_to(own / "clips" / "a.mp4")
    _timed_trace(own / "traces" / "ms.csv", [40.0 * k for k in range(63)])  # 0 to 2480 ms
    _timed_trace(own / "traces" / "unix.csv", [1_700_000_000 + 0.04 * k for k in range(63)])
    lines = [
        b"path,valence,arousal,group,split,trace",
        b"clips/a.mp4,0.2,0.4,Smith J,train,",
        b"clips/b.mp4,0.3,0.5,Smith, J,,",  # row 3: an unquoted comma
        b"loop/c.mp4,0.3,0.5,p3,,",
        b"clips/f.mp4,0.6,0.6,p4,,",  # the clip that is encoded
        b"clips/sub/../f.mp4,0.6,0.6,p4,,",  # row 6: f.mp4 again, same labels
        str(own / "clips" / "f.mp4").encode() + b",0.6,0.6,p4,,",  # row 7: f.mp4 by its absolute path
        b"link.mp4,0.9,0.1,p8,validation,",  # row 8: a.mp4 again, other labels: rows 2 and 8 are listed
        b"clips/d.mp4,,,p9,,traces/ms.csv",
        b"clips/e.mp4,,,p10,,traces/unix.csv",
        b"clips/e.mp4,0.1,0.1,M\xfcller,,",  # row 11: Latin-1, not UTF-8
    ]
    (own / "own.csv").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "config.toml"
    config.write_text(OWN_TOML)
    cache = tmp_path / "cache"
    args = ["extract", "--dataset", "manifest", "--root", str(own / "own.csv"), "--config", str(config)]
    assert main([*args, "--out", str(cache), "--workers", "0", "--dtype", "float32", "--precision", "float32"]) == 0
    assert "1 clips encoded (2 windows, " in capsys.readouterr().out
    assert list(read_index(cache).clips) == ["clips/f.mp4"]
    report = dict(line.split("\t", 1) for line in (cache / "unreadable.tsv").read_text().splitlines()[1:])
    report = {clip: reason.split(": ", 1)[1] for clip, reason in report.items()}  # after "<the clip's file>: "
    ms, unix = own / "traces" / "ms.csv", own / "traces" / "unix.csv"
    assert report == {
        "clips/a.mp4": "own.csv row 2, column path: clips/a.mp4 is listed again on row 8 (as link.mp4) with other "
        "labels or split; keep the row that is right and remove the other",
        "clips/b.mp4": "own.csv row 3: 7 cells, but the header has 6 columns (path to trace); a cell that holds a "
        'comma must be quoted ("Smith, J")',
        "loop/c.mp4": "own.csv row 4, column path: loop/c.mp4 runs into a loop of symbolic links; link the file itself",
        "clips/sub/../f.mp4": "own.csv row 6, column path: clips/sub/../f.mp4 is the file clips/f.mp4 of row 5; "
        "list each clip once",
        (own / "clips" / "f.mp4").as_posix(): f"own.csv row 7, column path: {own / 'clips' / 'f.mp4'} is the file "
        "clips/f.mp4 of row 5; list each clip once",
        "link.mp4": "own.csv row 8, column path: link.mp4 is the file clips/a.mp4 of row 2; list each clip once",
        "clips/d.mp4": f"own.csv row 9, column trace: trace {ms}, column time: times run from 0 to 2480, but the "
        "clip lasts 2.5 s; they look like milliseconds; the column holds seconds from the clip's start (0 to 3.6): "
        "divide by 1000",
        "clips/e.mp4": f"own.csv row 10, column trace: trace {unix}, column time: times run from 1.7e+09 to "
        "1.7e+09, but the clip lasts 2.5 s; they look like Unix timestamps (seconds since 1970); the column holds "
        "seconds from the clip's start (0 to 3.6): subtract 1700000000",
        "clips/e.mp4 (row 11)": "own.csv row 11, column group: holds bytes that are not UTF-8 text; save the file "
        "as UTF-8",
    }


def test_manifest_rows_whatever_they_hold(tmp_path: Path) -> None:
    """Any row is that row's problem: a NUL character, a name too long for the file system, a folder, a cell
    past the csv module's field limit, a bad row's later twin; a header naming a column twice is refused."""
    (tmp_path / "a.mp4").write_bytes(b"a clip")
    (tmp_path / "folder.mp4").mkdir()
    lines = [
        "path,valence,arousal",
        "a\x00.mp4,0.1,0.2",
        f"{'n' * 300}.mp4,0.1,0.2",
        "folder.mp4,0.1,0.2",
        f"a.mp4,0.1,{'9' * 200_000}",  # over csv.field_size_limit() (131072)
        "a.mp4,0.1,0.2",
    ]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    problems = [r.problem for r in read_dataset("manifest", tmp_path, HEADS)]
    assert problems[:4] == [
        "manifest.csv row 2, column path: 'a\\x00.mp4' holds a NUL character; give the file's path",
        f"manifest.csv row 3, column path: {'n' * 300}.mp4 cannot be read (File name too long)",
        f"manifest.csv row 4, column path: {tmp_path / 'folder.mp4'} is not a file (a folder or a device); give a "
        "clip's file",
        "manifest.csv row 5: not CSV (field larger than field limit (131072))",
    ]
    assert problems[4] == ""  # row 5 could not be read, so its path is not known to be taken
    (tmp_path / "manifest.csv").write_text("path,valence,arousal,valence\na.mp4,0.1,0.2,0.3\n")
    with pytest.raises(ValueError) as refused:
        read_dataset("manifest", tmp_path, HEADS)
    assert str(refused.value) == (
        f"{tmp_path / 'manifest.csv'}: the header names column 'valence' twice (columns 2 and 4); rename or remove "
        "one of them"
    )


def test_manifest_file_listed_twice_with_the_same_labels(tmp_path: Path) -> None:
    """A hard link is the same file too; with the same labels and split only the later row is listed."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"a clip")
    (tmp_path / "hard.mp4").hardlink_to(tmp_path / "clips" / "a.mp4")
    (tmp_path / "manifest.csv").write_text("path,valence,arousal,split\nclips/a.mp4,0.1,0.2,train\nhard.mp4,0.1,0.2,\n")
    records = read_dataset("manifest", tmp_path, HEADS)
    assert [(r.clip_id, r.problem) for r in records] == [
        ("clips/a.mp4", ""),
        ("hard.mp4", "manifest.csv row 3, column path: hard.mp4 is the file clips/a.mp4 of row 2; list each clip once"),
    ]


def test_hume_file_id_listed_twice(tmp_path: Path) -> None:
    """Hume-Reaction's data_info.csv with File_IDs repeated: with other intensities both rows are listed (which
    is right cannot be told); with the same, the later one; the records' ids stay distinct."""
    root = tmp_path / "hume"
    for clip_id in ("00001", "00002"):
        (root / "train" / "mp4").mkdir(parents=True, exist_ok=True)
        (root / "train" / "mp4" / f"{clip_id}.mp4").write_bytes(b"x")
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    rows = [("00001", "Train", values), ("00002", "Train", values), ("00001", "Train", values[::-1])]
    write_hume_info(root, [*rows, ("00002", "Train", values)])
    records = read_dataset("hume", root)
    assert [(r.clip_id, r.problem) for r in records] == [
        (
            "00001",
            "data_info.csv row 2, column File_ID: [00001] is listed again on row 4 with other intensities or split; "
            "keep the row that is right and remove the other",
        ),
        ("00002", ""),
        (
            "00001 (row 4)",
            "data_info.csv row 4, column File_ID: [00001] is listed again (first on row 2); list each clip once",
        ),
        (
            "00002 (row 5)",
            "data_info.csv row 5, column File_ID: [00002] is listed again (first on row 3); list each clip once",
        ),
    ]


EXPECTED = "the column holds seconds from the clip's start (0 to 11.5)"  # of a 10 s clip


@pytest.mark.parametrize(
    ("times", "hint"),
    [
        ([0.0, 40.0, 9960.0], f"they look like milliseconds; {EXPECTED}: divide by 1000"),
        ([0.0, 9.96e6], f"they look like microseconds; {EXPECTED}: divide by 1000000"),
        (
            [1.7e12, 1.7e12 + 9960],
            f"they look like Unix timestamps in milliseconds; {EXPECTED}: subtract 1700000000000, divide by 1000",
        ),
        ([3600.0, 3609.0], f"they start 3600 s late; {EXPECTED}: subtract the time of the clip's first frame"),
        ([0.0, 1e300], f"{EXPECTED}; is it the trace of another clip?"),
    ],
)
def test_trace_far_past_its_clip_says_what_unit_it_seems_to_be(times: list[float], hint: str, tmp_path: Path) -> None:
    """A 10 s clip's trace whose times run far past it: refused with the unit its times seem to be in, and what
    the column should hold; the memory it takes is bounded by the clip, whatever the numbers in the file."""
    import tracemalloc

    path = tmp_path / "t.csv"
    path.write_text("time,valence\n" + "".join(f"{t!r},0.5\n" for t in times))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as refused:
            read_trace(path, ("valence",), clip_ns=10 * SECOND)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value) == (
        f"trace {path}, column time: times run from {times[0]:g} to {times[-1]:g}, but the clip lasts 10.0 s; {hint}"
    )
    assert peak < 1_000_000, peak


def test_trace_within_the_slack_is_cut_to_its_clip(tmp_path: Path) -> None:
    """A trace may run a little past its clip (1 s + 5 %): those seconds are cut. One row per second, more
    rows than that: refused, saying how many rows a second of clip it holds and the fix."""
    timed = tmp_path / "timed.csv"
    timed.write_text("time,valence\n" + "".join(f"{k * 0.25},{k / 100}\n" for k in range(14)))  # 0 to 3.25 s
    assert read_trace(timed, ("valence",), clip_ns=2_500_000_000)["valence"] == pytest.approx([0.015, 0.055, 0.095])
    per_second = tmp_path / "rows.csv"
    per_second.write_text("valence\n" + "0.5\n" * 4)
    assert read_trace(per_second, ("valence",), clip_ns=3 * SECOND)["valence"] == [0.5, 0.5, 0.5]
    per_second.write_text("valence\n" + "0.5\n" * 250)  # 25 rows a second of a 10 s clip, no time column
    with pytest.raises(ValueError) as refused:
        read_trace(per_second, ("valence",), clip_ns=10 * SECOND)
    assert str(refused.value) == (
        f"trace {per_second} has 250 rows, one per second of clip without a time column, but the clip lasts 10.0 s "
        "(25 rows per second); add a time column (seconds from the clip's start) for samples at another rate"
    )


def test_metrics_undefined_say_why_and_json_holds_no_nan(tmp_path: Path) -> None:
    """What `evaluate --out` relies on: each undefined metric has a reason, and the JSON written holds null
    where a number is not finite (strict readers refuse NaN and Infinity)."""
    import json

    from sec2sec.offline.metrics import why_undefined
    from sec2sec.offline.output_files import replace_json

    assert why_undefined("pearson_r", np.array([0.5, 0.5]), np.array([0.1, 0.2])) == (
        "every label is 0.5; a correlation needs labels that vary"
    )
    assert why_undefined("pearson_r", np.array([0.1, 0.5]), np.array([0.3, 0.3])) == (
        "every prediction is 0.3; a correlation needs predictions that vary"
    )
    assert why_undefined("ccc", np.array([0.4]), np.array([0.4])) == "1 labelled value(s); ccc needs at least 2"
    assert why_undefined("mse", np.array([0.4, 0.2]), np.array([np.nan, 0.1])) == (
        "1 of the predictions are not numbers (the model gave NaN)"
    )
    out = tmp_path / "e.json"
    out.write_text("earlier")
    replace_json(out, {"r": math.nan, "values": [math.inf, np.float32(1.5), np.float64("nan")], "pair": (1, -math.inf)})
    refuse = {"parse_constant": lambda name: pytest.fail(f"{name} is not JSON")}
    assert json.loads(out.read_text(), **refuse) == {"r": None, "values": [None, 1.5, None], "pair": [1, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no temporary file left
