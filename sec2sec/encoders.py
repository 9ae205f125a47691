"""Encoders: a normalised clip or MFCC image -> a map of 512-d tokens (the cells of ResNet layer4).

Attention downstream runs over these cells (the published code attended over ONE pooled vector per
segment, which makes attention a linear layer); adaptive average pooling to a configured grid bounds
the token count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet, resnet18
from torchvision.models.video import VideoResNet, r2plus1d_18

from sec2sec.config import AudioConfig, VideoConfig
from sec2sec.folded_trunk import FoldedCache
from sec2sec.weights import load_pretrained

TOKEN_WIDTH = 512  # channels of layer4 in both ResNet-18 variants


def _resnet_trunk(model: ResNet | VideoResNet) -> nn.Sequential:
    """Everything before global pooling: stem, layer1..layer4."""
    stem = [model.conv1, model.bn1, model.relu, model.maxpool] if hasattr(model, "bn1") else [model.stem]
    return nn.Sequential(*stem, model.layer1, model.layer2, model.layer3, model.layer4)


class TrunkEncoder(nn.Module):
    """An encoder around a ResNet trunk that runs its folded form (`sec2sec.folded_trunk`) in inference.

    `compute_dtype` (float32, or bfloat16: `sec2sec.precision`) is the inference arithmetic; it is a runtime
    setting, not part of the state dict, and training always runs in float32."""

    trunk: nn.Sequential

    def __init__(self) -> None:
        super().__init__()
        self._folded = FoldedCache()
        self.compute_dtype = torch.float32

    def run_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 -> the trunk's map, float32: folded in inference (eval mode, nothing recorded for
        autograd), in `compute_dtype`; else torchvision's own modules (training, fine-tuning, BatchNorm in
        training mode)."""
        recording = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if recording or self.trunk.training:
            return self.trunk(x)
        dtype = self.compute_dtype
        return self._folded.get(self.trunk, dtype)(x.to(dtype)).float()

    def clear_folded(self) -> None:
        """Release the folded weights (they are made again by the next eager inference call)."""
        self._folded.clear()


class VideoEncoder(TrunkEncoder):
    """(B, 3, m, crop, crop) -> tokens (B, Nv, 512), Nv = prod(token_grid), ordered (time, height, width).

    `r2plus1d_18`: the R(2+1)D-18 trunk (Kinetics-400 weights when available); in inference its convolutions
    run folded with their BatchNorm, as 2D ones on channels-last views (`sec2sec.folded_trunk`).
    `resnet18_2d`: the cheaper ImageNet ResNet-18 applied to each frame, its maps stacked over time.
    """

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoder == "r2plus1d_18":
            full = r2plus1d_18(weights=None)
            self.pretrained = load_pretrained(full, "r2plus1d_18", config.weights, config.weights_path)
        else:
            full = resnet18(weights=None)
            self.pretrained = load_pretrained(full, "resnet18", config.weights, config.weights_path)
        self.trunk = _resnet_trunk(full)

    def feature_map(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, m, H, W) -> layer4 map (B, 512, T', H', W')."""
        if self.config.encoder == "r2plus1d_18":
            return self.run_trunk(clip)
        b, c, m, h, w = clip.shape
        maps = self.run_trunk(clip.transpose(1, 2).reshape(b * m, c, h, w))
        return maps.reshape(b, m, *maps.shape[1:]).transpose(1, 2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool3d(self.feature_map(clip), self.config.token_grid)
        return pooled.flatten(2).transpose(1, 2)


class AudioEncoder(TrunkEncoder):
    """(B, 3, n_mfcc, frames) MFCC image -> tokens (B, Na, 512), Na = prod(token_grid), (frequency, time).

    Each image is standardised per channel (cepstral mean/variance normalisation, so ImageNet filters see
    inputs of a familiar scale; absolute level is traded away), resized to `image_size`, and passed through
    the ResNet-18 trunk (ImageNet weights when available).
    """

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        full = resnet18(weights=None)
        self.pretrained = load_pretrained(full, "resnet18", config.weights, config.weights_path)
        self.trunk = _resnet_trunk(full)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, n_mfcc, frames) -> layer4 map (B, 512, F', T')."""
        mean = image.mean(dim=(2, 3), keepdim=True)
        std = image.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        x = F.interpolate(
            (image - mean) / std,
            size=self.config.image_size,
            mode="bilinear",
            align_corners=False,
        )
        return self.run_trunk(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.feature_map(image), self.config.token_grid)
        return pooled.flatten(2).transpose(1, 2)
