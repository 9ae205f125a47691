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
from helpers.configs import small_config
from helpers.hume_tree import write_hume_info
from helpers.synthetic_windows import random_windows

from sec2sec.config import HeadsConfig
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import read_dataset
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
    trace = read_trace(per_second, ("valence", "arousal"))
    assert trace["valence"] == pytest.approx([0.1, 0.2, 0.3])
    assert trace["arousal"][0] == 0.5 and math.isnan(trace["arousal"][1]) and trace["arousal"][2] == 0.7
    timed = tmp_path / "b.csv"
    # 4 samples a second in seconds 0 and 1, nothing in second 2, one sample at 3.5
    rows = [(0.0, 0.1), (0.25, 0.3), (0.5, 0.5), (0.75, 0.7), (1.0, 0.2), (1.5, 0.2), (3.5, 0.8)]
    timed.write_text("time,valence,arousal\n" + "".join(f"{t},{v},0.5\n" for t, v in rows))
    resampled = read_trace(timed, ("valence", "arousal"))["valence"]
    assert resampled == pytest.approx([0.4, 0.2, 0.2 + (0.8 - 0.2) * (2.5 - 1.5) / 2, 0.8])
    sparse = resample_to_seconds(np.array([0.5, 2.2]), np.array([0.3, 0.9]))  # slower than 1 Hz: interpolated
    assert sparse.tolist() == pytest.approx([0.3, 0.3 + 0.6 * 1.0 / 1.7, 0.9])
    bad = tmp_path / "c.csv"
    bad.write_text("time,valence,arousal\n0,0.1,0.2\n1,high,0.2\n")
    with pytest.raises(ValueError, match=r"c.csv row 3, column valence: 'high' is not a number"):
        read_trace(bad, ("valence", "arousal"))


def _manifest(root: Path, clip: Path) -> Path:
    """A manifest with good rows, groups, pinned splits, a trace, and one bad row of each kind."""
    (root / "clips").mkdir(parents=True)
    for name in ("a", "b", "c", "d", "e", "f"):
        (root / "clips" / f"{name}.mp4").write_bytes(clip.read_bytes())
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
