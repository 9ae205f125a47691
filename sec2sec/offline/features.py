"""Clips -> encoder token maps per one-second window, and the on-disk feature cache that holds them.

A cache folder holds:
- `index.json`: format, dataset, the model config the tokens were made with, the storage dtype, the encoders'
  arithmetic (`precision`: float32 or bfloat16, see `sec2sec.precision`; `autocast`: off or the CUDA autocast
  dtype), the encoder identity (sha256 per encoder), the framing (`framing`: frame or face, as in the config;
  under face also `face`, how the subject was chosen, and `detector`: the face detector's name and weights
  sha256, `sec2sec.faces.detector_identity`),
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

Clips are decoded by `sec2sec.offline.decoding` (the reader and windower of live replay), framed by the model's
framing (`sec2sec.framing`) in the decoding worker, so training windows and live windows are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sec2sec.checkpoint import tensor_digest
from sec2sec.config import ModelConfig, from_dict, to_dict
from sec2sec.model import ENCODER_MODULES, Sec2Sec
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.decoding import DecodedClip

FORMAT = "sec2sec-features"
FORMAT_VERSION = 1
ENCODE_BATCH = 8  # windows per encoder call (extract --batch default)
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def encoder_identity(model: Sec2Sec) -> dict[str, str]:
    """{"video_encoder": sha256, "audio_encoder": sha256} of the encoders the model has."""
    out = {}
    for name in ENCODER_MODULES:
        module = getattr(model, name)
        if module is not None:
            out[name] = tensor_digest(module.state_dict())
    return out


Encode = Callable[[torch.Tensor | None, torch.Tensor | None], tuple[torch.Tensor | None, torch.Tensor | None]]


def encode_modality(encode: Encode, modality: int, x: torch.Tensor) -> torch.Tensor:
    """One modality's batch (0: frames uint8 (B, m, H, W, 3), 1: audio (B, sample_rate)) -> tokens
    (B, N, 512) through `encode` (`Sec2Sec.encode`); the model must have that modality's encoder."""
    v, a = encode(x, None) if modality == 0 else encode(None, x)
    tokens = v if modality == 0 else a
    if tokens is None:
        raise ValueError(f"the model has no {('video', 'audio')[modality]} encoder")
    return tokens


Tokens = tuple[torch.Tensor | None, torch.Tensor | None]  # (video tokens, audio tokens), None: no such encoder


def encode_clip(model: Sec2Sec, clip: DecodedClip, batch: int) -> Tokens:
    """A decoded clip -> video tokens (T, Nv, 512) and audio tokens (T, Na, 512), float32, zero where not ok.

    Runs the model's encoders (with gradient if enabled by the caller) on the ok windows, `batch` at a time.
    """
    outs: list[torch.Tensor | None] = []
    for modality, (encoder, data, ok, n) in enumerate(
        (
            (model.video_encoder, clip.frames, clip.video_ok, model.video_tokens),
            (model.audio_encoder, clip.audio, clip.audio_ok, model.audio_tokens),
        )
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
            tokens = tokens.index_put((torch.tensor(part, device=device),), encode_modality(model.encode, modality, x))
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
    face: str = ""  # face framing: how the subject was chosen (largest, centre); "" under frame framing
    detector: dict[str, str] = field(default_factory=dict)  # face framing: the detector's name and weights_sha256

    @property
    def framing(self) -> str:
        """The framing the frames were extracted with (the config's `video.framing`)."""
        return self.config.video.framing

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
        "framing": index.framing,
        "face": index.face,
        "detector": index.detector,
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
        face=str(data.get("face", "")),
        detector=dict(data.get("detector", {})),
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
    found: dict[int, dict[str, torch.Tensor]] = {}  # position in ids -> that clip's row of each shard array
    for shard, positions in by_shard.items():
        data = torch.load(folder / shard, map_location="cpu", weights_only=True, mmap=True)
        for p in positions:
            row = index.clips[ids[p]]["row"]
            found[p] = {name: data[name][row].clone() for name in ("video", "audio", "video_ok", "audio_ok", "lengths")}
    if not ids:
        empty = torch.zeros(0, index.config.clip_seconds, dtype=torch.bool)
        return Features([], None, None, empty, empty, torch.zeros(0, dtype=torch.long))
    rows = [found[p] for p in range(len(ids))]
    return Features(
        ids=list(ids),
        video=torch.stack([r["video"] for r in rows]),
        audio=torch.stack([r["audio"] for r in rows]),
        video_ok=torch.stack([r["video_ok"] for r in rows]),
        audio_ok=torch.stack([r["audio_ok"] for r in rows]),
        lengths=torch.stack([r["lengths"] for r in rows]).long(),
    )


# One clip's tokens as `encode_clip` / `WindowBatcher` give them, with its masks and length: video tokens
# (T, Nv, 512) or None (no video encoder), audio tokens (T, Na, 512) or None, video_ok (T,), audio_ok (T,), length.
ClipTokens = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor, int]


def stack_features(ids: list[str], parts: list[ClipTokens], clip_seconds: int) -> Features:
    """Clips' tokens (in the order of `ids`) -> Features; T = `clip_seconds` shapes the masks of no clips."""
    if not parts:
        empty = torch.zeros(0, clip_seconds, dtype=torch.bool)
        return Features(ids, None, None, empty, empty, torch.zeros(0, dtype=torch.long))
    video, audio = [p[0] for p in parts], [p[1] for p in parts]
    return Features(
        ids,
        _stacked(video),
        _stacked(audio),
        torch.stack([p[2] for p in parts]),
        torch.stack([p[3] for p in parts]),
        torch.tensor([p[4] for p in parts]).long(),
    )


def _stacked(tokens: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Tokens of every clip stacked, or None where the model has no encoder of that modality (all None)."""
    present = [t for t in tokens if t is not None]
    if not present:
        return None
    if len(present) != len(tokens):
        raise ValueError("some clips have tokens of a modality and others none; they come from one model")
    return torch.stack(present)
