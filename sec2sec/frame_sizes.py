"""Frame geometry shared by the decoding workers, the windower and the video front end: one size for a
window's frames, the centre crop's origin, the square a decoding worker hands over.

No torchvision at import (only to rescale a frame of another size), so a decoding worker process, which
imports this when it starts, stays light.
"""

from __future__ import annotations

import numpy as np
import torch


def same_size(frames: list[np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) frames, possibly of several sizes (a stream that changed resolution) -> one uint8
    (n, H, W, 3) array at `size` (H, W), default the size of the last frame (the newest resolution); frames
    of another size are rescaled (bilinear, antialiased), those already at that size are kept as they are."""
    height, width = size or frames[-1].shape[:2]
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for k, rgb in enumerate(frames):
        if rgb.shape[:2] == (height, width):
            out[k] = rgb
        else:
            import torchvision.transforms.v2.functional as TF  # here: decoding workers import no torchvision

            image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
            resized = TF.resize(image, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            out[k] = resized.permute(1, 2, 0).numpy()
    return out


def crop_origin(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """(top, left) of the centre `crop` x `crop` square in an image of `size` (H, W), rounded up-left (as the
    feature caches were built). The one place live and offline frames are cropped from."""
    return (size[0] - crop) // 2, (size[1] - crop) // 2


def trim_to_input(frames: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Frames (..., H, W, 3) whose short side is already `resize` -> the (resize, resize) square around the
    front end's centre crop, so less crosses from a decoding worker. The front end then leaves the square
    unscaled and crops the very same `crop` pixels (bit-identical input). Other sizes (a source smaller than
    `resize`, which the front end scales up) come back unchanged."""
    h, w = frames.shape[-3:-1]
    if min(h, w) != resize or (h, w) == (resize, resize):
        return frames
    (top, left), (inner_top, inner_left) = crop_origin((h, w), crop), crop_origin((resize, resize), crop)
    top, left = top - inner_top, left - inner_left
    return frames[..., top : top + resize, left : left + resize, :]


def resized_size(height: int, width: int, resize: int, crop: int) -> tuple[int, int]:
    """(H, W) with the short side scaled to `resize` (rounded, aspect kept), never below `crop`."""
    scale = resize / min(height, width)
    return max(crop, round(height * scale)), max(crop, round(width * scale))
