"""Video front end and frame sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sec2sec.config import VideoConfig
from sec2sec.video import IMAGENET_MEAN, KINETICS_MEAN, KINETICS_STD, VideoFrontEnd
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
