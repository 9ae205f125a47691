"""`sec2sec prepare fi` on tiny First Impressions downloads in the organisers' naming: outer parts (train-1.zip,
train-2.zip, val-1.zip, test-1.zip) holding inner zips (training80_NN.zip ...) of real mp4 clips, and the
annotation pickles (Python 2 format) inside train-annotation.zip, val-annotation.zip, test-annotation.zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from helpers.synthetic_clips import Second, python2_pickle, render, write_mp4
from helpers.zipcrypto import write_encrypted_zip

import sec2sec.offline.prepare as prepare_module
from sec2sec.commands import main
from sec2sec.offline.datasets import read_first_impressions
from sec2sec.offline.prepare import MARKER, prepare_first_impressions

TRAITS = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "openness", "interview")
INNER = {
    "training80_01.zip": ["abcDEF12345.001.mp4", "abcDEF12345.002.mp4"],
    "training80_02.zip": ["ghiJKL67890.000.mp4"],
    "training80_03.zip": ["mnoPQR13579.004.mp4"],
    "validation80_01.zip": ["valVID00001.000.mp4", "valVID00002.001.mp4"],
    "test80_01.zip": ["tstVID00001.000.mp4"],
}
# outer part -> its inner zips and how it stores them (the organisers' parts could be either)
OUTER = {
    "train-1.zip": (["training80_01.zip", "training80_02.zip"], zipfile.ZIP_STORED),
    "train-2.zip": (["training80_03.zip"], zipfile.ZIP_DEFLATED),
    "val-1.zip": (["validation80_01.zip"], zipfile.ZIP_DEFLATED),
    "test-1.zip": (["test80_01.zip"], zipfile.ZIP_STORED),
}
ANNOTATIONS = {
    "train-annotation.zip": ("annotation_training.pkl", "training80_"),
    "val-annotation.zip": ("annotation_validation.pkl", "validation80_"),
    "test-annotation.zip": ("annotation_test.pkl", "test80_"),
}
SPLIT_OF = {"training80_": "train", "validation80_": "validation", "test80_": "test"}


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real one-second mp4 per clip name (the bytes differ: the first frame's brightness is the clip number)."""
    folder, out = tmp_path_factory.mktemp("clips"), {}
    for k, name in enumerate(n for names in INNER.values() for n in names):
        frames, audio = render([Second(flash=(0, 0))], tail_ms=100)
        frames[0] = 60 + 20 * k
        out[name] = write_mp4(folder / name, frames[:8], audio).read_bytes()
    return out


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _scores(names: list[str]) -> bytes:
    return python2_pickle(
        {t: {n: round(0.1 * (j + 1) + 0.01 * i, 4) for i, n in enumerate(names)} for j, t in enumerate(TRAITS)}
    )


def _downloads(folder: Path, clip_bytes: dict[str, bytes], extra: dict[str, list[str]] | None = None) -> Path:
    """The downloads folder; `extra` adds clip names to an annotation (clips that no part holds)."""
    folder.mkdir(parents=True)
    inner = {}
    for name, clips in INNER.items():
        members = {clip: clip_bytes[clip] for clip in clips}
        if name == "training80_01.zip":  # a Mac's resource-fork copy, which is not a clip
            members[f"__MACOSX/._{clips[0]}"] = b"\x00\x05\x16\x07"
        inner[name] = _zip(members)
    for name, (members, compression) in OUTER.items():
        (folder / name).write_bytes(_zip({m: inner[m] for m in members}, compression))
    for name, (pickle_name, prefix) in ANNOTATIONS.items():
        clips = [c for inner_name, names in INNER.items() if inner_name.startswith(prefix) for c in names]
        clips += (extra or {}).get(pickle_name, [])
        (folder / name).write_bytes(_zip({pickle_name: _scores(clips)}, zipfile.ZIP_DEFLATED))
    return folder


def _expected() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for inner_name, names in INNER.items():
        out[next(s for p, s in SPLIT_OF.items() if inner_name.startswith(p))] += names
    return {s: sorted(n) for s, n in out.items()}


def _layout(out: Path) -> dict[str, list[str]]:
    return {s: sorted(p.name for p in (out / s).iterdir()) for s in ("train", "validation", "test")}


def _same_clips(out: Path, clip_bytes: dict[str, bytes]) -> bool:
    return all((out / s / n).read_bytes() == clip_bytes[n] for s, names in _expected().items() for n in names)


def test_prepare_unpacks_nested_parts_into_the_reader_layout(tmp_path: Path, clip_bytes, capsys, monkeypatch) -> None:
    downloads, out = _downloads(tmp_path / "downloads", clip_bytes), tmp_path / "fi"
    with pytest.raises(ValueError, match=r"holds the First Impressions zip parts as downloaded; unpack them with"):
        read_first_impressions(downloads)
    assert main(["prepare", "fi", "--from", str(downloads), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train-1.zip/training80_02.zip: 1 clips (1 unpacked now)" in printed
    assert "prepare done: 7 clips unpacked, 0 already there" in printed and "train 4, validation 2, test 1" in printed
    assert _layout(out) == _expected() and _same_clips(out, clip_bytes)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            MARKER,
            "annotation_test.pkl",
            "annotation_training.pkl",
            "annotation_validation.pkl",
            "test",
            "train",
            "validation",
        ]
    )
    records = read_first_impressions(out)
    assert [(r.clip_id, r.split, r.group) for r in records][:3] == [
        ("abcDEF12345.001", "train", "abcDEF12345"),
        ("abcDEF12345.002", "train", "abcDEF12345"),
        ("ghiJKL67890.000", "train", "ghiJKL67890"),
    ]
    assert len(records) == 7 and records[0].path == out / "train" / "abcDEF12345.001.mp4"
    assert records[1].targets["extraversion"] == pytest.approx(0.11)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    opened, real_open = [], prepare_module._Unpacker._open

    def counting_open(self, file, label: str, redownload: str):
        opened.append(label)
        return real_open(self, file, label, redownload)

    monkeypatch.setattr(prepare_module._Unpacker, "_open", counting_open)
    again = prepare_first_impressions(downloads, out)
    assert len(opened) == 7 and not any("(member" in label for label in opened)  # finished inner zips stay shut
    assert (again.unpacked, again.skipped, again.clips) == (0, 7, {"train": 4, "validation": 2, "test": 1})
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps  # nothing rewritten


def test_an_interrupted_prepare_continues(tmp_path: Path, clip_bytes, monkeypatch) -> None:
    downloads, out = _downloads(tmp_path / "downloads", clip_bytes), tmp_path / "fi"
    real_copy, calls = prepare_module._copy, []

    def dying_copy(src, target: Path) -> None:  # the 5th file is cut off half-written, as by a kill
        calls.append(target.name)
        if len(calls) == 5:
            target.with_name(f".{target.name}.part").write_bytes(src.read(100))
            raise KeyboardInterrupt
        real_copy(src, target)

    monkeypatch.setattr(prepare_module, "_copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        prepare_first_impressions(downloads, out)
    monkeypatch.setattr(prepare_module, "_copy", real_copy)
    done = sorted(out.rglob("*.mp4"))
    # the training pickle and 3 clips were written; the cut fell inside training80_03.zip, whose temporary copy
    # was removed on the way out, leaving the half-written clip under its temporary name only
    assert calls[-1] == "mnoPQR13579.004.mp4" and len(done) == 3
    assert [p.name for p in out.rglob(".*.part")] == [".mnoPQR13579.004.mp4.part"]
    damaged = done[0]
    damaged.write_bytes(damaged.read_bytes()[:50])  # a clip of the wrong size is unpacked again
    summary = prepare_first_impressions(downloads, out)
    assert (summary.unpacked, summary.skipped) == (7 - 3 + 1, 3 - 1)
    assert _layout(out) == _expected() and _same_clips(out, clip_bytes)
    assert not any(out.rglob("*.part"))


def test_password_protected_parts(tmp_path: Path, clip_bytes, capsys) -> None:
    downloads, out = _downloads(tmp_path / "downloads", clip_bytes), tmp_path / "fi"
    with zipfile.ZipFile(downloads / "train-1.zip") as plain:
        members = {name: plain.read(name) for name in OUTER["train-1.zip"][0]}
    write_encrypted_zip(downloads / "train-1.zip", members, "s3cret")
    args = ["prepare", "fi", "--from", str(downloads), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {downloads / 'train-1.zip'} (member training80_01.zip) is encrypted; pass")
    assert "--password" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--password", "wrong"]) == 2
    err = capsys.readouterr().err  # ZipCrypto's check byte lets 1 wrong password in 256 through to the CRC check
    assert str(downloads / "train-1.zip") in err and "--password" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--password", "s3cret"]) == 0
    assert _layout(out) == _expected() and _same_clips(out, clip_bytes)


def _error(capsys, downloads: Path, out: Path) -> str:
    assert main(["prepare", "fi", "--from", str(downloads), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    return err


def test_bad_downloads_are_named_with_the_fix(tmp_path: Path, clip_bytes, capsys) -> None:
    downloads, out = _downloads(tmp_path / "d1", clip_bytes), tmp_path / "fi"
    part = downloads / "train-2.zip"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # a download cut short
    err = _error(capsys, downloads, out)
    assert f"{part} is damaged (File is not a zip file)" in err and "download train-2.zip again" in err

    downloads = _downloads(tmp_path / "d2", clip_bytes)
    data = bytearray((downloads / "train-1.zip").read_bytes())
    where = data.find(clip_bytes["abcDEF12345.002.mp4"][:64]) + 40
    data[where] ^= 0xFF  # one flipped byte inside a clip: its CRC no longer matches
    (downloads / "train-1.zip").write_bytes(bytes(data))
    err = _error(capsys, downloads, tmp_path / "fi2")
    assert f"{downloads / 'train-1.zip'} (member training80_01.zip)" in err and "Bad CRC-32" in err
    assert "download train-1.zip again" in err

    downloads = _downloads(tmp_path / "d3", clip_bytes)
    (downloads / "train-1.zip").unlink()
    err = _error(capsys, downloads, tmp_path / "fi3")
    assert f"{downloads / 'train-1.zip'} is missing (found train-2.zip); download every train part" in err

    downloads = _downloads(tmp_path / "d4", clip_bytes)
    (downloads / "test-annotation.zip").unlink()
    err = _error(capsys, downloads, tmp_path / "fi4")
    assert f"{downloads / 'test-annotation.zip'} does not exist; download it from the ChaLearn" in err

    downloads = _downloads(tmp_path / "d5", clip_bytes, {"annotation_validation.pkl": ["lostVID0001.000.mp4"]})
    err = _error(capsys, downloads, tmp_path / "fi5")
    assert "1 clip(s) scored in annotation_validation.pkl (e.g. lostVID0001.000.mp4) are in none of val-1.zip" in err
    assert "a validation part is missing or incomplete" in err


def test_inner_zips_unpacked_by_hand_are_taken(tmp_path: Path, clip_bytes) -> None:
    downloads, out = _downloads(tmp_path / "downloads", clip_bytes), tmp_path / "fi"
    for name in ("train-1.zip", "train-2.zip"):
        with zipfile.ZipFile(downloads / name) as part:
            part.extractall(downloads)
        (downloads / name).unlink()
    summary = prepare_first_impressions(downloads, out)
    assert summary.clips == {"train": 4, "validation": 2, "test": 1}
    assert _layout(out) == _expected() and _same_clips(out, clip_bytes)
