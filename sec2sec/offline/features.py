"""Clips -> encoder token maps per one-second window, and the on-disk feature cache that holds them.

A cache folder holds:
- `index.json`: format, dataset, the model config the tokens were made with, the storage dtype, the encoders'
  arithmetic (`precision`: float32 or bfloat16, see `sec2sec.precision`; `autocast`: off or the CUDA autocast
  dtype), the encoder identity (sha256 per encoder),
  every finished clip (shard, row, group, official split, raw targets, windows read and kept) in dataset
  order, and every unreadable clip (or bad dataset row) with the reason; a clip with per-second labels
  also holds `seconds` ({output: [value per second, null where unlabelled]});
- `encoders.pt`: the encoder weights used (a state dict per encoder). With random encoders (no pretrained
  weights available) this file is the only way a trained model can be given the same encoders live, so
  `train` builds its checkpoints from exactly these weights and `evaluate` checks the hashes;
- `shard-NNNNN.pt`: per clip, video tokens (T, Nv, 512) and audio tokens (T, Na, 512) in the cache dtype,
  `video_ok`/`audio_ok` (T,) and the length, T = model.clip_seconds (longer clips are trimmed, shorter ones
  padded with ok = False; both recorded);
- `index.rank<r>.json` only while a torchrun extraction runs (or after one was killed): the shards rank r
  finished, merged into `index.json` by rank 0 (see `cache_writer`).

Clips are read with `file_windows`, the reader and windower of live replay, so training windows and live
windows are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sec2sec.checkpoint import tensor_digest
from sec2sec.config import ModelConfig, from_dict, to_dict
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.distributed import RankStalled
from sec2sec.video import same_size, trim_to_input
from sec2sec.windows import Window, iter_file_windows

FORMAT = "sec2sec-features"
FORMAT_VERSION = 1
ENCODE_BATCH = 8  # windows per encoder call (extract --batch default)
DTYPES = {"float16": torch.float16, "float32": torch.float32}
ENCODERS = ("video_encoder", "audio_encoder")
DECODE_TIMEOUT_S = 600.0  # one clip's decoding (a 15 s clip takes well under a second): longer is a hung decoder
MAX_GAP_S = 60  # a clip whose clock jumps further than this over nothing ends at the jump (see decode_clip)


def encoder_identity(model: Sec2Sec) -> dict[str, str]:
    """{"video_encoder": sha256, "audio_encoder": sha256} of the encoders the model has."""
    out = {}
    for name in ENCODERS:
        module = getattr(model, name)
        if module is not None:
            out[name] = tensor_digest(module.state_dict())
    return out


@dataclass(frozen=True)
class DecodedClip:
    """One clip read into windows, padded/trimmed to T = clip_seconds.

    frames uint8 (T, m, H, W, 3) (zeros where video_ok is False), audio float32 (T, sample_rate),
    video_ok / audio_ok bool (T,), `length` positions up to the last window kept, `windows` seconds the file
    spans (to its end, or to a jump that ended it: `note`); `error` is the reason the clip could not be read
    ("" when it could).
    """

    clip_id: str
    frames: torch.Tensor | None
    audio: torch.Tensor | None
    video_ok: torch.Tensor | None
    audio_ok: torch.Tensor | None
    length: int
    windows: int
    error: str = ""
    note: str = ""  # why the clip was cut short (a jump in its clock), "" when it was read to its end


def decode_clip(
    record: ClipRecord,
    frames_per_window: int,
    sample_rate: int,
    seconds: int,
    short_side: int | None = None,
    crop: int | None = None,
    max_gap_s: int = MAX_GAP_S,
) -> DecodedClip:
    """Read a clip through `iter_file_windows` (only the frames a window slot uses are converted, scaled to
    `short_side` in the decoding worker, as replay does) into `seconds` positions (window i at position i;
    seconds with neither modality stay masked); with `crop` too, frames are trimmed to the square the front
    end crops from (`trim_to_input`). Only the first `seconds` windows are kept. A jump of more than
    `max_gap_s` seconds with neither video nor audio (a broken clock) ends the clip there, with a `note`.
    Never raises on a bad file."""
    kept: list[Window] = []
    span, note = 0, ""
    try:
        for w in iter_file_windows(str(record.path), frames_per_window, sample_rate, short_side):
            if w.index - span > max_gap_s:
                note = f"ended at {span} s: the next data is {w.index - span} s later (more than {max_gap_s} s)"
                break
            span = w.index + 1
            if w.index < seconds:
                kept.append(w)
    except (ValueError, OSError, RuntimeError) as exc:
        return DecodedClip(record.clip_id, None, None, None, None, 0, 0, f"{type(exc).__name__}: {exc}")
    if not kept:
        return DecodedClip(record.clip_id, None, None, None, None, 0, 0, "the file decoded to no windows")
    shape = next((w.frames.shape for w in kept if w.frames is not None), (frames_per_window, 8, 8, 3))
    frames = np.zeros((seconds, *shape), dtype=np.uint8)
    audio = np.zeros((seconds, sample_rate), dtype=np.float32)
    video_ok = np.zeros(seconds, dtype=bool)
    audio_ok = np.zeros(seconds, dtype=bool)
    for w in kept:
        if w.frames is not None:  # a clip whose resolution changed: every window at the first one's size
            same = w.frames.shape[1:3] == shape[1:3]  # the usual case: copied once, not rescaled into a copy first
            frames[w.index], video_ok[w.index] = w.frames if same else same_size(list(w.frames), shape[1:3]), True
        if w.audio_ok:
            audio[w.index], audio_ok[w.index] = w.audio, True
    if short_side is not None and crop is not None:
        frames = np.ascontiguousarray(trim_to_input(frames, short_side, crop))
    return DecodedClip(
        record.clip_id,
        torch.from_numpy(frames),
        torch.from_numpy(audio),
        torch.from_numpy(video_ok),
        torch.from_numpy(audio_ok),
        kept[-1].index + 1,
        span,
        note=note,
    )


Decode = Callable[..., DecodedClip]  # decode_clip's signature: what a ClipReader calls per clip


class ClipReader(torch.utils.data.Dataset):
    """A torch Dataset of DecodedClip, so a DataLoader worker process decodes while the main one encodes.
    What crosses to the main process is model-sized: m frames per window, at most (resize, resize) pixels.
    `decode` is `decode_clip` (a test may give another module-level function: a worker unpickles it by name)."""

    def __init__(self, records: list[ClipRecord], config: ModelConfig, decode: Decode = decode_clip) -> None:
        self.records = records
        self.config = config
        self.decode = decode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> DecodedClip:
        c = self.config
        v = c.video
        return self.decode(self.records[i], v.frames_per_window, c.audio.sample_rate, c.clip_seconds, v.resize, v.crop)


def _keep(item: DecodedClip) -> DecodedClip:
    return item


# Decoding workers start from a fresh interpreter, never by fork. A forked child gets the parent's memory but
# not its threads: a parent that scaled frames with PyAV (replay, the Python API, a notebook) holds FFmpeg
# scaler contexts whose slice threads do not exist in the child, and the child's first `frame.reformat`
# waits for them for ever (issue 27). `spawn` pays an interpreter start and the imports once per worker
# and run (the loader is iterated once per extraction), a second or two beside minutes of encoding.
WORKER_START = "spawn"


def _decode_worker_init(worker_id: int) -> None:
    """A decoding worker's own settings, set where it starts: one torch thread (it decodes, with FFmpeg's
    own threads; the main process runs the encoders on the cores)."""
    torch.set_num_threads(1)


def clip_loader(
    records: list[ClipRecord],
    config: ModelConfig,
    workers: int,
    decode_timeout_s: float | None = None,
    decode: Decode = decode_clip,
) -> Iterator[DecodedClip]:
    """Decoded clips in order; with `workers` >= 1, decoding runs in that many processes (started by
    `WORKER_START`, once per call) ahead of the caller, and a clip that takes more than `decode_timeout_s`
    (default `DECODE_TIMEOUT_S`) to arrive (a decoder that hung) raises RankStalled."""
    timeout = DECODE_TIMEOUT_S if decode_timeout_s is None else decode_timeout_s
    loader = torch.utils.data.DataLoader(
        ClipReader(records, config, decode),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_keep,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,  # one pass per loader: the workers start once and end with it
        timeout=timeout if workers else 0,
        multiprocessing_context=WORKER_START if workers else None,
        worker_init_fn=_decode_worker_init if workers else None,
    )
    try:
        yield from loader
    except RuntimeError as exc:
        if "timed out" not in str(exc):
            raise
        raise RankStalled(
            f"no decoded clip came from the decoding workers for {timeout:g} s (a decoder hung on a "
            "clip); the run is stopped. A resumed run skips the clips already done; --workers 0 decodes inline"
        ) from None


def encode_clip(model: Sec2Sec, clip: DecodedClip, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A decoded clip -> video tokens (T, Nv, 512) and audio tokens (T, Na, 512), float32, zero where not ok.

    Runs the model's encoders (with gradient if enabled by the caller) on the ok windows, `batch` at a time.
    """
    outs = []
    for encoder, data, ok, n in (
        (model.video_encoder, clip.frames, clip.video_ok, model.video_tokens),
        (model.audio_encoder, clip.audio, clip.audio_ok, model.audio_tokens),
    ):
        if encoder is None:
            outs.append(None)
            continue
        device = next(encoder.parameters()).device
        tokens = torch.zeros(len(ok), n, 512, device=device)
        rows = ok.nonzero().flatten().tolist()
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            x = data[part].to(device)
            v, a = model.encode(x, None) if encoder is model.video_encoder else model.encode(None, x)
            tokens = tokens.index_put((torch.tensor(part, device=device),), v if v is not None else a)
        outs.append(tokens)
    return outs[0], outs[1]


@dataclass(frozen=True)
class CacheIndex:
    """What `index.json` holds (see the module docstring)."""

    dataset: str
    root: str
    dtype: str
    config: ModelConfig
    encoders: dict[str, str]
    pretrained: dict[str, bool]
    clips: dict[str, dict[str, Any]]
    unreadable: dict[str, str]
    shards: list[str]
    autocast: str = "off"  # the encoders ran in float32 ("off") or under CUDA autocast to this dtype
    precision: str = "float32"  # the encoders' trunks ran in float32 or bfloat16 (caches made before: float32)

    def records(self) -> list[ClipRecord]:
        """The finished clips as ClipRecords (official split, group, raw targets), in index order."""
        return [
            ClipRecord(cid, Path(c["path"]), c["group"], c["split"], dict(c["targets"]), _trace(c.get("seconds")))
            for cid, c in self.clips.items()
        ]


def _trace(seconds: dict[str, list[float | None]] | None) -> dict[str, list[float]] | None:
    """A clip entry's per-second targets (null: an unlabelled second) -> floats with NaN, or None."""
    if not seconds:
        return None
    return {k: [float("nan") if v is None else float(v) for v in values] for k, values in seconds.items()}


def write_index(folder: Path, index: CacheIndex) -> None:
    """Write `index.json` atomically (temporary file, then rename)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": index.dataset,
        "root": index.root,
        "dtype": index.dtype,
        "config": to_dict(index.config),
        "encoders": index.encoders,
        "pretrained": index.pretrained,
        "shards": index.shards,
        "autocast": index.autocast,
        "precision": index.precision,
        "clips": index.clips,
        "unreadable": index.unreadable,
    }
    tmp = folder / "index.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(folder / "index.json")


def read_index(folder: str | Path) -> CacheIndex:
    """Read and validate `index.json` of a feature cache."""
    path = Path(folder) / "index.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; make the cache first with `sec2sec extract --out {folder}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-run `sec2sec extract`") from None
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a sec2sec feature cache of version {FORMAT_VERSION}")
    return CacheIndex(
        dataset=data["dataset"],
        root=data["root"],
        dtype=data["dtype"],
        config=from_dict(ModelConfig, data["config"], "model"),
        encoders=dict(data["encoders"]),
        pretrained={k: bool(v) for k, v in data["pretrained"].items()},
        clips=dict(data["clips"]),
        unreadable=dict(data["unreadable"]),
        shards=list(data["shards"]),
        autocast=str(data.get("autocast", "off")),
        precision=str(data.get("precision", "float32")),
    )


def read_encoders(folder: str | Path, index: CacheIndex) -> dict[str, dict[str, torch.Tensor]]:
    """`encoders.pt` -> {"video_encoder": state dict, "audio_encoder": state dict}, hashes checked."""
    path = Path(folder) / "encoders.pt"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; the cache is incomplete, re-run `sec2sec extract`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, digest in index.encoders.items():
        if name not in state or tensor_digest(state[name]) != digest:
            raise ValueError(f"{path}: the {name} weights do not match the hash in index.json; re-run extraction")
    return state


@dataclass(frozen=True)
class Features:
    """Cached tokens of N clips: video (N, T, Nv, 512) / audio (N, T, Na, 512) in the cache dtype (or None),
    video_ok / audio_ok bool (N, T), lengths int64 (N,); rows follow `ids`."""

    ids: list[str]
    video: torch.Tensor | None
    audio: torch.Tensor | None
    video_ok: torch.Tensor
    audio_ok: torch.Tensor
    lengths: torch.Tensor


def load_features(folder: str | Path, index: CacheIndex, ids: list[str]) -> Features:
    """The cached rows of clips `ids`, in that order (shards are memory-mapped while reading)."""
    folder = Path(folder)
    missing = [i for i in ids if i not in index.clips]
    if missing:
        raise ValueError(f"clip(s) {missing[:5]} are not in the cache {folder}; run `sec2sec extract` again")
    by_shard: dict[str, list[int]] = {}
    for position, cid in enumerate(ids):
        by_shard.setdefault(index.clips[cid]["shard"], []).append(position)
    parts: dict[str, list[torch.Tensor | None]] = {k: [None] * len(ids) for k in ("v", "a", "vo", "ao", "n")}
    for shard, positions in by_shard.items():
        data = torch.load(folder / shard, map_location="cpu", weights_only=True, mmap=True)
        for p in positions:
            row = index.clips[ids[p]]["row"]
            for key, name in (("v", "video"), ("a", "audio"), ("vo", "video_ok"), ("ao", "audio_ok")):
                parts[key][p] = data[name][row].clone()
            parts["n"][p] = data["lengths"][row].clone()
    if not ids:
        empty = torch.zeros(0, index.config.clip_seconds, dtype=torch.bool)
        return Features([], None, None, empty, empty, torch.zeros(0, dtype=torch.long))
    return Features(
        ids=list(ids),
        video=torch.stack(parts["v"]),
        audio=torch.stack(parts["a"]),
        video_ok=torch.stack(parts["vo"]),
        audio_ok=torch.stack(parts["ao"]),
        lengths=torch.stack(parts["n"]).long(),
    )


def stack_features(ids: list[str], parts: list[tuple]) -> Features:
    def stack(k: int) -> torch.Tensor | None:
        return None if not parts or parts[0][k] is None else torch.stack([p[k] for p in parts])

    return Features(ids, stack(0), stack(1), stack(2), stack(3), torch.tensor([p[4] for p in parts]).long())
