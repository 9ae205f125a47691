"""Dataset folders on disk -> clip records (path, film/group, official split, raw targets); splits; labels.

Two datasets, read in the formats their authors publish them (users download them; nothing here can):

- LIRIS-ACCEDE (`liris`): `data/ACCEDE00000.mp4 ...`, `annotations/ACCEDEranking.txt` (tab-separated, header
  `id name valenceRank arousalRank valenceValue arousalValue valenceVariance arousalVariance`),
  `annotations/ACCEDEsets.txt` (`id name set`; 0 test, 1 learning, 2 validation: the official split, by film)
  and `ACCEDEdescription.xml` (per media: id, name, movie, start, end). Targets are `valence` and `arousal`
  (the *Value columns, about 1.3-4.5); binary labels are made at training time by a threshold.
- First Impressions, ChaLearn LAP 2016 (`fi`): `train|validation|test/**/*.mp4` and
  `annotation_training.pkl`, `annotation_validation.pkl`, `annotation_test.pkl` (Python 2 pickles:
  trait -> {video file name: score in [0, 1]}), as `sec2sec prepare fi` unpacks the downloaded zip parts.
  The group of a clip is its YouTube video (the name before the first dot), so a group split keeps all
  clips of one person's video together.

Pickles are read with a restricted unpickler that builds only dicts, strings and numbers.
"""

from __future__ import annotations

import io
import math
import pickle
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sec2sec.config import HeadsConfig
from sec2sec.offline.records import ClipRecord, film_split

DATASETS = ("liris", "fi", "hume", "manifest")
SPLITS = ("train", "validation", "test")
SPLIT_MODES = ("official", "film")
LIRIS_SETS = {0: "test", 1: "train", 2: "validation"}  # ACCEDEsets.txt: 0 test, 1 learning, 2 validation
LIRIS_TARGETS = {"valence": "valenceValue", "arousal": "arousalValue"}
FI_TRAITS = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "openness", "interview")
FI_ANNOTATIONS = {
    "train": "annotation_training.pkl",
    "validation": "annotation_validation.pkl",
    "test": "annotation_test.pkl",
}


def _require(path: Path, fix: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} does not exist; {fix}")
    return path


def _tsv_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """A tab-separated file with a header line -> (line number, row as a dict); the header must hold `columns`."""
    numbered = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)]
    lines = [(n, line) for n, line in numbered if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty; expected a tab-separated header with {', '.join(columns)}")
    header = lines[0][1].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: header {header} lacks column(s) {', '.join(missing)}; expected {list(columns)}")
    rows = []
    for number, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) < len(header):
            raise ValueError(f"{path} line {number}: {len(cells)} tab-separated cells, the header has {len(header)}")
        rows.append((number, dict(zip(header, cells, strict=False))))
    return rows


def _liris_set(path: Path, number: int, text: str) -> str:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in LIRIS_SETS:
        raise ValueError(
            f"{path} line {number}, column set: {text!r}; allowed: 0 (test), 1 (learning), 2 (validation); "
            "re-download ACCEDEsets.txt"
        )
    return LIRIS_SETS[value]


def _liris_targets(row: dict[str, str], here: str) -> dict[str, float]:
    """The valence and arousal values of an ACCEDEranking.txt row; a ValueError naming the line and the
    column for a cell that is not a finite number."""
    out = {}
    for key, column in LIRIS_TARGETS.items():
        text = row[column].strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{here}, column {column}: {text!r} is not a finite number")
        out[key] = value
    return out


def _liris_movies(path: Path) -> dict[str, str]:
    """ACCEDEdescription.xml -> {clip file name: movie}."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise ValueError(f"{path} is not valid XML ({exc}); re-download ACCEDEdescription.xml") from None
    movies = {}
    for media in tree.getroot().iter("media"):
        name, movie = media.findtext("name"), media.findtext("movie")
        if name and movie:
            movies[name.strip()] = movie.strip()
    if not movies:
        raise ValueError(f"{path} lists no <media> with <name> and <movie>; re-download ACCEDEdescription.xml")
    return movies


def read_liris(root: str | Path) -> list[ClipRecord]:
    """A LIRIS-ACCEDE folder -> one record per annotated clip (official split, film, valence/arousal values)."""
    root = Path(root)
    fix = "download LIRIS-ACCEDE (Discrete) and pass its folder as --root"
    ranking = _require(root / "annotations" / "ACCEDEranking.txt", fix)
    sets = _require(root / "annotations" / "ACCEDEsets.txt", fix)
    description = _require(root / "ACCEDEdescription.xml", fix)
    movies = _liris_movies(description)
    split_of = {r["name"].strip(): _liris_set(sets, n, r["set"].strip()) for n, r in _tsv_rows(sets, ("name", "set"))}
    records = []
    for number, row in _tsv_rows(ranking, ("name", *LIRIS_TARGETS.values())):
        name = row["name"].strip()
        if name not in split_of or name not in movies:
            where = sets.name if name not in split_of else description.name
            raise ValueError(f"{ranking}: clip {name} is not listed in {where}; the annotation files disagree")
        path = root / "data" / name
        try:
            targets, problem = _liris_targets(row, f"{ranking.name} line {number}"), ""
        except ValueError as exc:  # one bad row is that row's problem, listed; the others go on
            targets, problem = {}, str(exc)
        records.append(ClipRecord(Path(name).stem, path, movies[name], split_of[name], targets, None, problem))
    return records


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers; numpy scalars of numeric dtype become Python numbers.

    Any other global (a class or function such as os.system) is refused, so a crafted pickle runs no code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")):
            return _numpy_scalar
        if (module, name) == ("numpy", "dtype"):
            return _numpy_dtype
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles the bytes inside a numpy scalar
            return _latin1_bytes
        raise pickle.UnpicklingError(f"it references {module}.{name}")


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("it calls _codecs.encode with arguments other than (text, 'latin1')")
    return text.encode("latin1")


def _numpy_dtype(code: str, *args: Any) -> np.dtype:
    dtype = np.dtype(code)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"it holds a numpy dtype {code!r}; only numeric dtypes are allowed")
    return dtype


def _numpy_scalar(dtype: np.dtype, data: bytes | str) -> float | int:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError("it holds a numpy scalar of a non-numeric dtype")
    raw = data.encode("latin1") if isinstance(data, str) else data
    return np.frombuffer(raw, dtype=dtype, count=1)[0].item()


def load_plain_pickle(path: str | Path) -> Any:
    """Read a (Python 2, latin1) pickle of plain data; a pickle that references code raises ValueError."""
    path = Path(path)
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} was refused: {exc}; only dicts, strings and numbers are allowed (use the original "
            "ChaLearn annotation file)"
        ) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None


def _fi_scores(path: Path) -> dict[str, dict[str, float]]:
    """annotation_*.pkl -> {trait: {file name: score}}, checked to be that shape."""
    data = load_plain_pickle(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} holds a {type(data).__name__}; expected a dict trait -> {{video: score}}")
    out: dict[str, dict[str, float]] = {}
    for trait, scores in data.items():
        if not isinstance(trait, str) or not isinstance(scores, dict):
            raise ValueError(f"{path}: entry {trait!r} is not a trait name mapped to {{video: score}}")
        out[trait] = {str(name): _fi_score(path, trait, name, score) for name, score in scores.items()}
    return out


def _fi_score(path: Path, trait: str, name: object, score: object) -> float:
    """A score of the annotation pickle as a float; a ValueError naming the trait and the video otherwise."""
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(
            f"{path}: {trait} of {name} is {score!r}, not a finite number; use the original ChaLearn annotation file"
        )
    return float(score)


def read_first_impressions(root: str | Path) -> list[ClipRecord]:
    """A First Impressions folder -> one record per annotated clip found on disk (official splits).

    The folder is the unpacked layout; the zip parts as downloaded are unpacked into it by `sec2sec prepare fi`.
    """
    root = Path(root)
    if not (root / FI_ANNOTATIONS["train"]).is_file() and any(root.glob("*-annotation.zip")):
        raise ValueError(
            f"{root} holds the First Impressions zip parts as downloaded; unpack them with "
            f"`sec2sec prepare fi --from {root} --out FOLDER` and pass FOLDER as --root"
        )
    records = []
    for split, file_name in FI_ANNOTATIONS.items():
        annotation = _require(
            root / file_name, "download the ChaLearn First Impressions annotations into the folder given as --root"
        )
        scores = _fi_scores(annotation)
        folder = root / split
        if not folder.is_dir():
            raise ValueError(f"{folder} does not exist; extract the {split} videos of First Impressions there")
        files = {p.name: p for p in sorted(folder.rglob("*.mp4"))}
        names = sorted(set().union(*(s.keys() for s in scores.values())))
        for name in names:
            if name not in files:
                continue
            targets = {t: scores[t][name] for t in scores if name in scores[t]}
            records.append(ClipRecord(Path(name).stem, files[name], name.split(".")[0], split, targets))
    return records


def read_dataset(name: str, root: str | Path, heads: HeadsConfig | None = None) -> list[ClipRecord]:
    """`liris`, `fi`, `hume` or `manifest` -> its clip records. `heads` names a manifest's label columns
    (`outputs`) and their range (`task`: regression labels must lie in [0, 1])."""
    if name == "liris":
        return read_liris(root)
    if name == "fi":
        return read_first_impressions(root)
    if name == "hume":
        from sec2sec.offline.hume import read_hume

        return read_hume(root)
    if name == "manifest":
        from sec2sec.offline.manifest import read_manifest

        return read_manifest(root, heads or HeadsConfig())
    raise ValueError(f"dataset {name!r} is not known; use one of {', '.join(DATASETS)}")


def labelled(record: ClipRecord, outputs: Sequence[str]) -> bool:
    """True when the clip has a clip-level value for every output (withheld test labels: False)."""
    return all(name in record.targets for name in outputs)


def assign_splits(records: Sequence[ClipRecord], mode: str, seed: int) -> list[ClipRecord]:
    """`official` keeps the published split; `film` makes a seeded film-disjoint split (groups)."""
    if mode == "official":
        return list(records)
    if mode == "film":
        return film_split(records, seed)
    raise ValueError(f"split mode {mode!r} is not allowed; use one of {', '.join(SPLIT_MODES)}")


def label_thresholds(records: Sequence[ClipRecord], outputs: Sequence[str], setting: str) -> dict[str, float]:
    """Binary-label threshold per output: the median of the training-split values (`setting` "median"),
    or the number `setting` for every output. A clip is positive when its value is > the threshold."""
    if setting != "median":
        return {name: float(setting) for name in outputs}
    train = [r for r in records if r.split == "train"]
    if not train:
        raise ValueError("the training split is empty, so no median label threshold can be computed")
    return {name: float(statistics.median(target_value(r, name) for r in train)) for name in outputs}


def target_value(record: ClipRecord, name: str) -> float:
    """The raw target `name` of a clip, or a ValueError naming what the clip has."""
    if name not in record.targets:
        raise ValueError(
            f"clip {record.clip_id} has no target {name!r}; it has {sorted(record.targets)} "
            "(set model.heads.outputs to names the dataset provides)"
        )
    return record.targets[name]


def second_labels(
    records: Sequence[ClipRecord], outputs: Sequence[str], thresholds: dict[str, float] | None, seconds: int
) -> np.ndarray:
    """(N, seconds, n_outputs) float32 per-second targets from the clips' traces (thresholded to 0/1 for
    binary outputs), NaN where a second has no label and for every second of a clip without a trace."""
    out = np.full((len(records), seconds, len(outputs)), np.nan, dtype=np.float64)
    for i, r in enumerate(records):
        for k, name in enumerate(outputs):
            trace = (r.seconds or {}).get(name)
            if trace:
                values = np.asarray(trace[:seconds], dtype=np.float64)
                out[i, : len(values), k] = values
    if thresholds is not None:
        limits = np.array([thresholds[n] for n in outputs], dtype=np.float64)
        out = np.where(np.isnan(out), np.nan, (out > limits).astype(np.float64))
    return out.astype(np.float32)


def labels(records: Sequence[ClipRecord], outputs: Sequence[str], thresholds: dict[str, float] | None) -> np.ndarray:
    """(N, n_outputs) float32 targets: 0/1 above the thresholds (binary), or the raw values (regression)."""
    values = np.array([[target_value(r, n) for n in outputs] for r in records], dtype=np.float64)
    values = values.reshape(len(records), len(outputs))
    if thresholds is None:
        return values.astype(np.float32)
    limits = np.array([thresholds[n] for n in outputs], dtype=np.float64)
    return (values > limits).astype(np.float32)
