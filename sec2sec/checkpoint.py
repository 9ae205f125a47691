"""Checkpoints: the model's weights plus everything needed to rebuild it and to judge its outputs.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts, read back with
`torch.load(weights_only=True)`, so a file with code in its pickle is refused rather than run.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from sec2sec.config import ModelConfig, from_dict, to_dict
from sec2sec.model import Sec2Sec


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (identity of a set of weights)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


FORMAT = "sec2sec-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message says why and what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds besides the weights."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    pretrained: dict[str, bool]
    trained: bool
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: Sec2Sec, trained: bool, meta: dict[str, Any] | None = None) -> None:
    """Write model + config + flags; written to a temporary name first, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_dict(model.config),
        "outputs": list(model.config.heads.outputs),
        "task": model.config.heads.task,
        "clip_seconds": model.config.clip_seconds,
        "pretrained": model.pretrained,
        "trained": trained,
        "meta": meta or {},
        "state_dict": model.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt file made by `sec2sec train`")
    try:
        with warnings.catch_warnings():
            # a plain pickle (protocol > 2) makes torch warn before refusing it; the refusal below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as f:
            is_pickle = f.read(1) == b"\x80"  # the PROTO opcode: a raw pickle, not torch's zip format
        if not is_pickle:
            raise CheckpointError(f"checkpoint {path} is not a readable checkpoint (not a torch file)") from None
        detail = next((line.strip() for line in str(exc).splitlines() if "nsupported" in line), "unsupported data")
        raise CheckpointError(
            f"checkpoint {path} was refused: it is a pickle holding objects other than tensors and plain data "
            f"({detail[:120]}); only load checkpoints made by `sec2sec train`"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file; all mean the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(
            f"checkpoint {path} is not a readable checkpoint (truncated or another format: {reason})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a sec2sec checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('format_version')}; "
            f"this sec2sec reads version {FORMAT_VERSION}"
        )
    return payload


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint file without building the model."""
    path = Path(path)
    payload = _read(path)
    try:
        config = from_dict(ModelConfig, payload["config"], "model")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} holds an invalid model config: {exc}") from None
    return Checkpoint(
        config=config,
        state_dict=payload["state_dict"],
        pretrained=dict(payload.get("pretrained", {})),
        trained=bool(payload.get("trained", False)),
        meta=dict(payload.get("meta", {})),
    )


def model_from_checkpoint(path: str | Path, expect: ModelConfig | None = None) -> tuple[Sec2Sec, Checkpoint]:
    """Rebuild the model a checkpoint was made for and load its weights.

    `expect`: a config the caller intends to use; a checkpoint made for another task or other outputs
    is refused with both named.
    """
    ckpt = read_checkpoint(path)
    if expect is not None and (expect.heads != ckpt.config.heads):
        raise CheckpointError(
            f"checkpoint {path} predicts {ckpt.config.heads.task} {list(ckpt.config.heads.outputs)} but the config "
            f"asks for {expect.heads.task} {list(expect.heads.outputs)}; use a matching --config or checkpoint"
        )
    no_download = without_weight_files(ckpt.config)
    model = Sec2Sec(no_download)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit its own config ({first})") from None
    for name, encoder in (("video", model.video_encoder), ("audio", model.audio_encoder)):
        if encoder is not None:
            encoder.pretrained = ckpt.pretrained.get(name, False)
    return model, ckpt


def without_weight_files(config: ModelConfig) -> ModelConfig:
    """The config with `weights = "none"` for both encoders: a checkpoint (or a feature cache) carries the
    encoder weights, so building the model must neither look for nor download any."""
    return replace(
        config,
        video=replace(config.video, weights="none", weights_path=""),
        audio=replace(config.audio, weights="none", weights_path=""),
    )


def encoder_settings_mismatch(made: ModelConfig, wanted: ModelConfig) -> str | None:
    """The first setting of video / audio / clip_seconds on which two configs' encoder inputs differ (weight file
    settings aside), as a dotted key under `model` ("video.framing", "clip_seconds"; see `setting`), or None:
    features extracted under `made` only fit a model of `wanted` when None."""
    made, wanted = without_weight_files(made), without_weight_files(wanted)
    for section in ("video", "audio"):
        a, b = getattr(made, section), getattr(wanted, section)
        differing = [f.name for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)]
        if differing:
            return f"{section}.{differing[0]}"
    return "clip_seconds" if made.clip_seconds != wanted.clip_seconds else None


def setting(config: ModelConfig, key: str) -> Any:
    """The value of a dotted key under `model` ("video.framing") in `config`."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
