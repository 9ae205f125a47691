"""`sec2sec prepare fi`: ChaLearn First Impressions as downloaded (nested zip parts) -> the folder `extract` reads.

The organisers ship each split as outer zip parts holding inner zips of mp4 clips, and the annotations as zips
holding one pickle each:

    train-1.zip ... train-6.zip   -> training80_NN.zip   -> *.mp4     train-annotation.zip -> annotation_training.pkl
    val-1.zip ...                 -> validation80_NN.zip -> *.mp4     val-annotation.zip   -> annotation_validation.pkl
    test-1.zip ...                -> test80_NN.zip       -> *.mp4     test-annotation.zip  -> annotation_test.pkl

`prepare` unpacks them into exactly what `read_first_impressions` takes: `OUT/train|validation|test/*.mp4` and
the three pickles in OUT. Inner zips (or pickles) already lying in DOWNLOADS, unpacked from their outer part by
hand, are taken as well. Members are streamed (never a whole archive in memory): an inner zip stored without
compression is read in place through the outer zip, a compressed one is first copied to a temporary file in OUT.

Resumable: every file is written to a temporary name and renamed when complete; a clip already in OUT with the
member's size is skipped, and an inner zip whose clips are all in place (recorded in `OUT/.prepare-fi.json`
with its CRC) is not opened again, so a run interrupted at any point continues where it stopped.
One `--password` (the legacy ZipCrypto one zipfile reads) is tried on every encrypted member. Bad downloads
(a damaged zip, a wrong or missing password, a missing part or annotation, annotated clips in none of the
parts) stop with one line naming the file and the fix.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sec2sec.offline.datasets import FI_ANNOTATIONS, load_plain_pickle

MARKER = ".prepare-fi.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """How one split is shipped: outer parts `<outer>-N.zip` holding `<inner>NN.zip`, and its annotation zip."""

    outer: str
    inner: str
    annotation_zip: str


SOURCES = {
    "train": Source("train", "training80_", "train-annotation.zip"),
    "validation": Source("val", "validation80_", "val-annotation.zip"),
    "test": Source("test", "test80_", "test-annotation.zip"),
}


@dataclass(frozen=True)
class PrepareSummary:
    """Clips written now, clips found already in place, and clips per split in OUT afterwards."""

    unpacked: int
    skipped: int
    clips: dict[str, int]


@contextmanager
def _archive(label: str, redownload: str) -> Iterator[None]:
    """Errors met while reading archive `label` -> one ValueError naming it and the fix."""
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if "password required" in text:
            raise ValueError(f"{label} is encrypted; pass the password the organisers sent with --password") from None
        if "Bad password" in text:
            raise ValueError(f"{label}: wrong --password; use the one the organisers sent for this file") from None
        raise
    except NotImplementedError as exc:  # e.g. Deflate64 or AES, which zipfile cannot read
        raise ValueError(
            f"{label} uses a method zipfile cannot read ({exc}); unpack {redownload} with 7z or unzip into the "
            "--from folder (its inner zips are taken from there)"
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # a wrong ZipCrypto password passes the one-byte check 1 time in 256 and shows as a CRC error
        maybe = " (or the --password is wrong)" if "CRC" in str(exc) else ""
        raise ValueError(f"{label} is damaged ({exc}){maybe}; download {redownload} again") from None


def _copy(src: IO[bytes], target: Path) -> None:
    """Stream `src` into `target` through a temporary file renamed at the end (a partial file never counts)."""
    tmp = target.with_name(f".{target.name}.part")
    with open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    tmp.replace(target)


def _has(target: Path, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size


def _macos_extra(info: zipfile.ZipInfo) -> bool:
    """The resource-fork copies (`__MACOSX/._name`) that zips made on a Mac carry beside every file."""
    return info.filename.startswith("__MACOSX/") or Path(info.filename).name.startswith("._")


def _numbered(folder: Path, prefix: str, what: str) -> list[Path]:
    """`<prefix>N.zip` files of `folder`, by N; a gap in the numbers is a missing download."""
    found = {}
    for path in folder.glob(f"{prefix}*.zip"):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.zip", path.name)
        if match:
            found[int(match.group(1))] = path
    for n in range(1, max(found, default=0) + 1):
        if n not in found:
            width = len(next(p for p in found.values()).name) - len(prefix) - 4
            missing = f"{prefix}{n:0{width}d}.zip"
            raise ValueError(
                f"{folder / missing} is missing (found {', '.join(found[k].name for k in sorted(found))}); "
                f"download every {what} part into {folder}"
            )
    return [found[k] for k in sorted(found)]


class _Unpacker:
    """Unpacks into `out`, keeping the done-marker of finished inner zips; counts what it writes and skips."""

    def __init__(self, out: Path, password: str | None, report: Callable[[str], None]) -> None:
        self.out, self.report = out, report
        self.pwd = password.encode("utf-8") if password else None
        self.unpacked = self.skipped = 0
        self.done: dict[str, dict[str, Any]] = {}
        marker = out / MARKER
        if marker.is_file():
            try:
                self.done = json.loads(marker.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass  # only an optimisation: without it every inner zip is opened and its clips checked by size

    def _open(self, file: Path | IO[bytes], label: str, redownload: str) -> zipfile.ZipFile:
        with _archive(label, redownload):
            archive = zipfile.ZipFile(file)
        if self.pwd:
            archive.setpassword(self.pwd)
        return archive

    def _mark(self, key: str, entry: dict[str, Any]) -> None:
        self.done[key] = entry
        tmp = self.out / f".{MARKER}.part"
        tmp.write_text(json.dumps(self.done, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.out / MARKER)

    def clips(self, archive: zipfile.ZipFile, folder: Path, label: str, redownload: str) -> dict[str, int]:
        """Every mp4 member of `archive` -> `folder`/<its file name>; returns {file name: size}."""
        sizes = {}
        for info in archive.infolist():
            name = Path(info.filename).name
            if info.is_dir() or not name.lower().endswith(".mp4") or _macos_extra(info):
                continue
            sizes[name] = info.file_size
            target = folder / name
            if _has(target, info.file_size):
                self.skipped += 1
                continue
            with _archive(f"{label} (member {info.filename})", redownload), archive.open(info) as src:
                _copy(src, target)
            self.unpacked += 1
        return sizes

    def inner(
        self, source: Path, folder: Path, member_of: tuple[zipfile.ZipFile, zipfile.ZipInfo] | None = None
    ) -> None:
        """One inner zip of clips: the file `source` itself, or (`member_of` = (outer, info)) the member `info`
        of the open outer zip `source`."""
        info = None if member_of is None else member_of[1]
        name = source.name if info is None else Path(info.filename).name
        key = name if info is None else f"{source.name}/{info.filename}"
        label = str(source) if info is None else f"{source} (member {info.filename})"
        size = source.stat().st_size if info is None else info.compress_size
        stamp = {"crc": None if info is None else info.CRC, "size": size}
        previous = self.done.get(key, {})
        if {k: previous.get(k) for k in stamp} == stamp and all(
            _has(folder / clip, n) for clip, n in previous.get("clips", {}).items()
        ):
            self.skipped += len(previous["clips"])
            return
        tmp = member = None
        if member_of is None:
            archive = self._open(source, label, source.name)
        elif member_of[1].compress_type == zipfile.ZIP_STORED and not member_of[1].flag_bits & 0x1:
            with _archive(label, source.name):
                member = member_of[0].open(member_of[1])  # stored, not encrypted: seekable in place, no copy
                archive = self._open(member, label, source.name)
        else:
            tmp = self.out / f".{name}.part"
            with _archive(label, source.name), member_of[0].open(member_of[1]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            archive = self._open(tmp, label, source.name)
        try:
            before = self.unpacked
            clips = self.clips(archive, folder, label, source.name)
        finally:
            archive.close()
            if member is not None:
                member.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._mark(key, {**stamp, "clips": clips})
        self.report(f"{key}: {len(clips)} clips ({self.unpacked - before} unpacked now)")

    def outer(self, path: Path, inner_prefix: str, folder: Path) -> None:
        """An outer part: its inner zips of clips (and any clips stored directly in it)."""
        with self._open(path, str(path), path.name) as archive:
            members = archive.infolist()
            for info in members:
                if re.fullmatch(re.escape(inner_prefix) + r"\d+\.zip", Path(info.filename).name):
                    self.inner(path, folder, (archive, info))
            if any(Path(i.filename).name.lower().endswith(".mp4") for i in members):
                self.clips(archive, folder, str(path), path.name)

    def annotation(self, downloads: Path, zip_name: str, pickle_name: str) -> Path:
        """`pickle_name` from DOWNLOADS/`zip_name` (or lying in DOWNLOADS) -> OUT/`pickle_name`."""
        target, loose = self.out / pickle_name, downloads / pickle_name
        source = downloads / zip_name
        if not source.is_file():
            if not loose.is_file():
                raise ValueError(
                    f"{source} does not exist; download it from the ChaLearn First Impressions page into {downloads}"
                )
            if not _has(target, loose.stat().st_size):
                with open(loose, "rb") as src:
                    _copy(src, target)
            return target
        with self._open(source, str(source), source.name) as archive:
            info = next((i for i in archive.infolist() if Path(i.filename).name == pickle_name), None)
            if info is None:
                raise ValueError(f"{source} holds no {pickle_name}; download {source.name} again")
            if not _has(target, info.file_size):
                with _archive(str(source), source.name), archive.open(info) as src:
                    _copy(src, target)
        return target


def _annotated(path: Path) -> set[str]:
    """Clip file names an annotation pickle scores (trait -> {name: score})."""
    data = load_plain_pickle(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} is not a First Impressions annotation (trait -> {{video: score}})")
    return {str(name) for scores in data.values() for name in scores}


def prepare_first_impressions(
    downloads: str | Path, out: str | Path, password: str | None = None, report: Callable[[str], None] | None = None
) -> PrepareSummary:
    """Unpack the First Impressions downloads in `downloads` into `out` (see the module docstring)."""
    downloads, out = Path(downloads), Path(out)
    if not downloads.is_dir():
        raise ValueError(f"{downloads} is not a folder; pass the folder holding train-1.zip ... as --from")
    out.mkdir(parents=True, exist_ok=True)
    unpacker = _Unpacker(out, password, report or (lambda line: None))
    counts = {}
    for split, source in SOURCES.items():
        annotation = unpacker.annotation(downloads, source.annotation_zip, FI_ANNOTATIONS[split])
        folder = out / split
        folder.mkdir(exist_ok=True)
        outers = _numbered(downloads, f"{source.outer}-", split)
        loose = _numbered(downloads, source.inner, split) if not outers else []
        if not outers and not loose:
            raise ValueError(
                f"{downloads} holds no {source.outer}-1.zip ... (nor {source.inner}01.zip ...); download the "
                f"{split} parts of First Impressions there"
            )
        for path in outers:
            unpacker.outer(path, source.inner, folder)
        for path in loose:
            unpacker.inner(path, folder)
        missing = _annotated(annotation) - {p.name for p in folder.glob("*.mp4")}
        if missing:
            parts = ", ".join(p.name for p in outers or loose)
            raise ValueError(
                f"{len(missing)} clip(s) scored in {annotation.name} (e.g. {min(missing)}) are in none of {parts}; "
                f"a {split} part is missing or incomplete: download it into {downloads} and run again"
            )
        counts[split] = sum(1 for _ in folder.glob("*.mp4"))
    for stale in [*out.glob(".*.part"), *out.glob("*/.*.part")]:  # left by an interrupted run
        stale.unlink(missing_ok=True)
    return PrepareSummary(unpacker.unpacked, unpacker.skipped, counts)
