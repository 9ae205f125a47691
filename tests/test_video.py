"""Video front end and frame sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sec2sec.config import VideoConfig
from sec2sec.video import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, VideoFrontEnd
from sec2sec.windows import pick_frames, sample_frame_times


def test_any_size_becomes_normalised_112_clip() -> None:
    frames = np.zeros((8, 360, 640, 3), dtype=np.uint8)
    frames[..., 0] = 255  # pure red
    clip = VideoFrontEnd(VideoConfig())(torch.from_numpy(frames))
    assert clip.shape == (1, 3, 8, 112, 112)
    expected_red = (1.0 - KINETICS_MEAN[0]) / KINETICS_STD[0]
    expected_green = (0.0 - KINETICS_MEAN[1]) / KINETICS_STD[1]
    assert torch.allclose(clip[0, 0], torch.full((8, 112, 112), expected_red), atol=1e-4)
    assert torch.allclose(clip[0, 1], torch.full((8, 112, 112), expected_green), atol=1e-4)


def test_centre_crop_keeps_the_middle() -> None:
    frames = np.zeros((1, 100, 300, 3), dtype=np.uint8)
    frames[:, :, 130:170] = 255  # a white bar in the centre third
    clip = VideoFrontEnd(VideoConfig(frames_per_window=1))(torch.from_numpy(frames))[0, :, 0]
    row = clip[0, 56]
    assert row[56] > row[0] + 3  # white centre, black borders of the crop


def test_2d_encoder_uses_imagenet_statistics() -> None:
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    clip = VideoFrontEnd(VideoConfig(frames_per_window=2, encoder="resnet18_2d"))(frames)
    assert clip[0, 0, 0, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[0] / 0.229, abs=1e-4)


def reference_front_end(frames: torch.Tensor, config: VideoConfig) -> torch.Tensor:
    """The front end as it was before torchvision.transforms.v2 (F.interpolate, slicing, broadcast maths)."""
    kinetics = config.encoder == "r2plus1d_18"
    mean, std = (KINETICS_MEAN, KINETICS_STD) if kinetics else (IMAGENET_MEAN, IMAGENET_STD)
    b, m, h, w, _ = frames.shape
    x = frames.reshape(b * m, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
    scale = config.resize / min(h, w)
    size = (max(config.crop, round(h * scale)), max(config.crop, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - config.crop) // 2, (size[1] - config.crop) // 2
    x = x[:, :, top : top + config.crop, left : left + config.crop]
    x = x.reshape(b, m, 3, config.crop, config.crop).permute(0, 2, 1, 3, 4)
    return (x - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)


@pytest.mark.parametrize(
    ("height", "width", "encoder"),
    [
        (360, 640, "r2plus1d_18"),  # downscale, odd margin on the long side
        (480, 360, "r2plus1d_18"),  # portrait
        (128, 171, "r2plus1d_18"),  # already at the short side: no resize
        (100, 90, "resnet18_2d"),  # upscale to the short side
        (113, 113, "r2plus1d_18"),  # below resize, the crop floor
    ],
)
def test_front_end_matches_the_previous_implementation(height: int, width: int, encoder: str) -> None:
    config = VideoConfig(frames_per_window=2, encoder=encoder)
    frames = torch.randint(
        0, 256, (2, 2, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    clip = VideoFrontEnd(config)(frames)
    reference = reference_front_end(frames, config)
    assert clip.shape == reference.shape == (2, 3, 2, config.crop, config.crop)
    torch.testing.assert_close(clip, reference, atol=1e-4, rtol=0)


def test_frames_at_the_short_side_skip_the_resize() -> None:
    """Frames that arrive already downscaled (short side == resize) reach the crop untouched."""
    config = VideoConfig(frames_per_window=1)
    frames = torch.randint(
        0, 256, (1, config.resize, 171, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    clip = VideoFrontEnd(config)(frames)[0, :, 0]
    top, left = (config.resize - config.crop) // 2, (171 - config.crop) // 2
    pixels = frames[0, top : top + config.crop, left : left + config.crop].permute(2, 0, 1).float() / 255.0
    expected = (pixels - torch.tensor(KINETICS_MEAN).view(3, 1, 1)) / torch.tensor(KINETICS_STD).view(3, 1, 1)
    torch.testing.assert_close(clip, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(8, 64, 64, 3, dtype=torch.float32), "frames must be uint8 RGB"),
        (torch.zeros(8, 64, 64, dtype=torch.uint8), "must be (B, m, H, W, 3)"),
        (torch.zeros(8, 64, 64, 4, dtype=torch.uint8), "must be (B, m, H, W, 3)"),
        (torch.zeros(5, 64, 64, 3, dtype=torch.uint8), "got 5 frames per window; this model takes m = 8"),
        (torch.zeros(0, 64, 64, 3, dtype=torch.uint8), "got 0 frames per window"),
        (torch.zeros(8, 4, 4, 3, dtype=torch.uint8), "at least 8x8"),
    ],
)
def test_bad_frames_are_refused(frames: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError) as err:
        VideoFrontEnd(VideoConfig())(frames)
    assert message in str(err.value)


def test_sample_times_are_subinterval_centres() -> None:
    assert sample_frame_times(0, 4) == [125_000_000, 375_000_000, 625_000_000, 875_000_000]
    assert sample_frame_times(2, 2) == [2_250_000_000, 2_750_000_000]


def test_pick_frames_subsamples_a_fast_camera_evenly() -> None:
    times = [i * 1_000_000_000 // 30 for i in range(30)]  # 30 fps, window 0
    assert pick_frames(times, 0, 4) == [4, 11, 19, 26]


def test_pick_frames_repeats_a_slow_camera() -> None:
    times = [100_000_000, 600_000_000]  # 2 fps
    assert pick_frames(times, 0, 4) == [0, 1, 1, 1]  # centres 125, 375, 625, 875 ms


def test_pick_frames_ignores_other_windows_and_handles_empty() -> None:
    times = [900_000_000, 1_100_000_000, 1_900_000_000, 2_000_000_000]
    assert pick_frames(times, 1, 2) == [1, 2]
    assert pick_frames(times, 5, 2) == []
