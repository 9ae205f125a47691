"""Sampled frames -> a normalised clip tensor for the video encoder."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from sec2sec.config import VideoConfig
from sec2sec.frame_sizes import crop_origin, resized_size

# torchvision's normalisation for its Kinetics-400 video models and its ImageNet image models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_frames(frames: torch.Tensor, m: int) -> None:
    """Refuse frames the front end cannot use, saying what was received and what is allowed."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB; got dtype {frames.dtype}")
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (B, m, H, W, 3) or (m, H, W, 3) RGB; got shape {tuple(frames.shape)}")
    if frames.shape[1] != m:
        raise ValueError(
            f"got {frames.shape[1]} frames per window; this model takes m = {m} (config video.frames_per_window)"
        )
    if frames.shape[2] < 8 or frames.shape[3] < 8:
        raise ValueError(f"frames are {frames.shape[3]}x{frames.shape[2]} pixels; at least 8x8 is needed")


class VideoFrontEnd(nn.Module):
    """uint8 (B, m, H, W, 3) frames of any size -> (B, 3, m, crop, crop) float32, normalised.

    Short side resized to `resize` (bilinear, antialiased; frames already at that size pass through
    untouched), then a centre crop; Kinetics-400 statistics for the R(2+1)D encoder, ImageNet statistics for
    the per-frame 2D encoder. All three steps are torchvision.transforms.v2.functional on tensors.
    """

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.config = config
        kinetics = config.encoder == "r2plus1d_18"
        mean, std = (KINETICS_MEAN, KINETICS_STD) if kinetics else (IMAGENET_MEAN, IMAGENET_STD)
        self.mean, self.std = list(mean), list(std)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim == 4:
            frames = frames.unsqueeze(0)
        check_frames(frames, self.config.frames_per_window)
        b, m, h, w, _ = frames.shape
        crop = self.config.crop
        x = TF.to_dtype(frames.reshape(b * m, h, w, 3).permute(0, 3, 1, 2), torch.float32, scale=True)
        size = resized_size(h, w, self.config.resize, crop)
        if size != (h, w):
            x = TF.resize(x, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        top, left = crop_origin(size, crop)
        x = TF.normalize(TF.crop(x, top, left, crop, crop), self.mean, self.std)
        return x.reshape(b, m, 3, crop, crop).permute(0, 2, 1, 3, 4)
