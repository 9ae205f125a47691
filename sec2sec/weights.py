"""Pretrained encoder weights: torchvision's weight enums, the local torch hub cache, or an explicit file.

Nothing here fails silently: a missing file under `weights = "pretrained"` is an error that names the
expected path and the way out; under `weights = "auto"` it is a warning, and the model records
`pretrained = False` so checkpoints and every output carry the fact.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, WeightsEnum
from torchvision.models.video import R2Plus1D_18_Weights


class WeightsError(ValueError):
    """Pretrained weights that were asked for and could not be loaded."""


class PretrainedWeightsMissing(UserWarning):
    """`weights = "auto"` found no cached weights and built the encoder with random weights."""


ENUMS: dict[str, WeightsEnum] = {
    "r2plus1d_18": R2Plus1D_18_Weights.KINETICS400_V1,
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
}


def cached_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps this enum's file: $TORCH_HOME/hub/checkpoints/<file name of its URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is reported the same way
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatched keys"
        raise WeightsError(f"weights from {source} do not fit {type(model).__name__}: {first}") from None


def load_pretrained(model: nn.Module, arch: str, mode: str, path: str = "", download: bool = True) -> bool:
    """Fill torchvision model `model` (architecture `arch`) with pretrained weights; True if it was.

    mode: "none" (random), "auto" (the cached file if present, else a warning), "pretrained" (cached file,
    else torchvision's download; an error when neither works). `path` overrides mode with a local file.
    """
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise WeightsError(f'weights file {file} does not exist; fix weights_path or set weights_path = ""')
        _load_into(model, _read_state_dict(file), str(file))
        return True
    if mode == "none":
        return False
    enum = ENUMS[arch]
    file = cached_path(enum)
    if file.is_file():
        _load_into(model, _read_state_dict(file), str(file))
        return True
    if mode == "auto":
        warnings.warn(
            f"no pretrained {arch} weights at {file}; using RANDOM encoder weights (outputs are flagged "
            f"pretrained=false). Download {enum.url} to that path or set weights_path to use them.",
            PretrainedWeightsMissing,
            stacklevel=2,
        )
        return False
    if download:
        try:
            _load_into(model, enum.get_state_dict(progress=False, check_hash=True), enum.url)
            return True
        except WeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - network/IO errors all mean "not available here"
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise WeightsError(
                f"pretrained {arch} weights not found at {file} and the download of {enum.url} failed ({reason}); "
                f'put the file there, set weights_path to a local copy, or set weights = "none" to run without them'
            ) from None
    raise WeightsError(
        f"pretrained {arch} weights not found at {file}; put {enum.url} there, set weights_path, "
        f'or set weights = "none" to run without them'
    )
