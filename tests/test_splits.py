"""Pinned splits: the clip -> split assignment is written once into the cache folder and reused; a cache whose
clips changed since is refused by train and evaluate until it is re-split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.synthetic_clips import Second, render, write_liris_tree, write_mp4

from sec2sec.commands import main
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.splits import apply_split, clip_set_digest, pinned_split, split_file

TOML = """
[model]
clip_seconds = 1
[model.video]
frames_per_window = 4
resize = 32
crop = 32
token_grid = [1, 2, 2]
weights = "none"
[model.audio]
weights = "none"
[model.fusion]
width = 32
heads = 4
ff_width = 64
feature_width = 32
[model.temporal]
hidden = 16
[model.heads]
outputs = ["valence"]
[train]
epochs = 1
batch_size = 4
"""


def _records(n: int) -> list[ClipRecord]:
    return [ClipRecord(f"c{i:03d}", Path(f"c{i:03d}.mp4"), f"film{i % 9}", "train", {"valence": 1.0}) for i in range(n)]


def test_film_split_is_pinned_per_seed_and_refused_after_a_change(tmp_path: Path) -> None:
    records = _records(40)
    first = pinned_split(tmp_path, "liris", records, "film", 3)
    assert first.path == tmp_path / "splits-film-seed3.json" and first.path.is_file()
    data = json.loads(first.path.read_text())
    assert (data["mode"], data["seed"], data["clips"], data["clip_digest"]) == ("film", 3, 40, clip_set_digest(records))
    assert sorted(data["train"] + data["validation"] + data["test"]) == sorted(r.clip_id for r in records)
    assert data["digest"] == first.digest
    # films never straddle splits, and the pinned file is read back, not recomputed
    split = apply_split(records, first)
    assert all(len({r.split for r in split if r.group == g}) == 1 for g in {r.group for r in records})
    data["test"], data["train"] = data["train"], data["test"]  # a hand edit is caught by the digest
    first.path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"splits-film-seed3.json was edited.*remove .* to have the split made"):
        pinned_split(tmp_path, "liris", records, "film", 3)
    first.path.unlink()
    assert pinned_split(tmp_path, "liris", records, "film", 3) == first
    # another seed pins a second assignment beside the first one, which stays
    other = pinned_split(tmp_path, "liris", records, "film", 4)
    assert other.path == tmp_path / "splits-film-seed4.json" and other.digest != first.digest
    assert pinned_split(tmp_path, "liris", records, "film", 3) == first
    official = pinned_split(tmp_path, "liris", records, "official", 7)
    assert official.path == split_file(tmp_path, "official", 0) and set(official.split_of.values()) == {"train"}
    # a removed clip and an added one: refused with the command that re-splits
    changed = [*records[1:], ClipRecord("new", Path("new.mp4"), "film9", "test", {"valence": 2.0})]
    with pytest.raises(ValueError) as caught:
        pinned_split(tmp_path, "liris", changed, "film", 3)
    message = str(caught.value)
    assert "1 clip(s) added, 1 removed" in message and "\n" not in message
    assert f"sec2sec split --cache {tmp_path} --split film --split-seed 3 --resplit" in message
    regrouped = [ClipRecord(r.clip_id, r.path, "one", r.split, r.targets) for r in records]
    with pytest.raises(ValueError, match="the group or official split of some clips changed"):
        pinned_split(tmp_path, "liris", regrouped, "film", 4)
    again = pinned_split(tmp_path, "liris", changed, "film", 3, resplit=True)
    assert set(again.split_of) == {r.clip_id for r in changed} and again.digest != first.digest
    assert pinned_split(tmp_path, "liris", changed, "film", 3) == again


def _liris(root: Path, n: int) -> Path:
    """n one-second clips in LIRIS-ACCEDE format, one film per clip: clips 0-1 learning, then validation and test
    alternate; labels alternate."""
    rows = []
    for i in range(n):
        name = f"ACCEDE{i:05d}.mp4"
        if not (root / "data" / name).is_file():
            seconds = [Second(flash=(2, 5) if i % 2 else None, beep=(100, 250))]
            write_mp4(root / "data" / name, *render(seconds, tail_ms=200, noise=0.01, seed=i))
        split = 1 if i < 2 else (2 if i % 2 == 0 else 0)
        rows.append((name, f"film{i}.mp4", split, 4.0 if i % 2 else 1.5, 3.0))
    return write_liris_tree(root, rows)


@pytest.mark.slow
def test_train_and_evaluate_refuse_a_changed_cache_until_it_is_resplit(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TOML)
    cache, root = tmp_path / "cache", tmp_path / "liris"
    extract = ["extract", "--dataset", "liris", "--root", str(root), "--out", str(cache), "--config", str(config)]
    train = ["train", "--config", str(config), "--cache", str(cache), "--out", str(tmp_path / "run")]
    evaluate = ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--cache", str(cache)]
    _liris(root, 4)
    assert main([*extract, "--workers", "0"]) == 0
    assert main(train) == 0
    pinned = cache / "splits-official.json"
    before = pinned.read_bytes()
    assert json.loads(before)["test"] == ["ACCEDE00003"]
    assert main([*train, "--restart"]) == 0 and main(evaluate) == 0
    assert pinned.read_bytes() == before  # re-running reads the pinned split back
    capsys.readouterr()

    _liris(root, 6)  # two more clips (one validation, one test) extracted into the same cache
    assert main([*extract, "--workers", "0"]) == 0
    capsys.readouterr()
    for command in ([*train, "--restart"], evaluate):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: cache {cache} holds other clips than when the official split was pinned")
        assert "(2 clip(s) added, 0 removed)" in err and "\n" not in err
        assert f"`sec2sec split --cache {cache} --split official --resplit`" in err
    assert pinned.read_bytes() == before

    assert main(["split", "--cache", str(cache), "--split", "official", "--resplit"]) == 0
    out = capsys.readouterr().out
    assert "train 2 clips / 2 groups, validation 2 clips / 2 groups, test 2 clips / 2 groups" in out
    assert json.loads(pinned.read_text())["test"] == ["ACCEDE00003", "ACCEDE00005"]
    assert main(evaluate) == 2  # the checkpoint was trained on the split before the re-split
    assert "was trained on another assignment of the official split" in capsys.readouterr().err
    assert main([*train, "--restart"]) == 0 and main([*evaluate, "--out", str(tmp_path / "scores.json")]) == 0
    scored = json.loads((tmp_path / "scores.json").read_text())["predictions"]
    assert sorted(scored) == ["ACCEDE00003", "ACCEDE00005"]
