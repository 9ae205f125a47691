"""Make the demo clip the README replays: a cartoon face whose mouth follows a voiced tone track.

`python -m monitor.demo_clip demo_face.mp4` writes it (H.264 + AAC, 320x240, 25 fps, 12 s,
well under 1 MB). The first half is calm (slow low voice, relaxed brows); the second half is animated
(faster, higher, louder voice, raised brows, wider mouth), so a model has something that changes.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, RATE = 320, 240, 25, 16_000


def voice(seconds: float, rate: int = RATE) -> np.ndarray:
    """A voiced tone track (float32 mono): syllable bursts of a harmonic tone; pitch, rate and level rise
    in the second half."""
    t = np.arange(int(seconds * rate)) / rate
    excited = t >= seconds / 2
    pitch = np.where(excited, 260.0, 140.0)
    syllables = np.where(excited, 5.0, 2.5)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * np.cumsum(syllables) / rate), 0, None) ** 2
    level = np.where(excited, 0.5, 0.2)
    samples: np.ndarray = (level * envelope * tone / 2.3).astype(np.float32)  # `tone` is a sum(): Any to mypy
    return samples


def face(t: float, mouth_open: float, seconds: float) -> np.ndarray:
    """One RGB frame (HEIGHT, WIDTH, 3) uint8 at time t s."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    shade = 40 + y / HEIGHT * 60
    frame[...] = np.stack([shade, shade, shade * 1.4], axis=-1).astype(np.uint8)
    cx = WIDTH / 2 + 12 * np.sin(2 * np.pi * 0.3 * t)
    cy = HEIGHT / 2
    skin = ((x - cx) / 75) ** 2 + ((y - cy) / 95) ** 2 <= 1
    frame[skin] = (224, 172, 140)
    blink = (t % 3.0) < 0.12
    excited = t >= seconds / 2
    for side in (-1, 1):
        ex, ey = cx + side * 28, cy - 22
        eye = ((x - ex) / 11) ** 2 + ((y - ey) / (1.5 if blink else 7)) ** 2 <= 1
        frame[eye] = (250, 250, 250)
        pupil = (x - ex) ** 2 + (y - ey) ** 2 <= (0 if blink else 16)
        frame[pupil] = (30, 30, 60)
        brow_y = ey - (19 if excited else 13)
        brow = (np.abs(y - brow_y - 0.1 * (x - ex) * side) < 2) & (np.abs(x - ex) < 13)
        frame[brow] = (90, 60, 40)
    width = 22 + (10 if excited else 0)
    mouth = ((x - cx) / width) ** 2 + ((y - (cy + 40)) / (2 + 16 * mouth_open)) ** 2 <= 1
    frame[mouth] = (120, 30, 40)
    return frame


def write_demo_clip(path: str | Path, seconds: int = 12) -> Path:
    """Write the demo clip and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = voice(seconds)
    audio = audio[: len(audio) // 1024 * 1024]  # whole AAC frames: no padded tail past the video's end
    frame_samples = RATE // FPS
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "30", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        aus = out.add_stream("aac", rate=RATE, layout="mono")
        for i in range(seconds * FPS):
            chunk = audio[i * frame_samples : (i + 1) * frame_samples]
            mouth_open = min(1.0, float(np.sqrt(np.mean(chunk**2))) * 5)
            frame = av.VideoFrame.from_ndarray(face(i / FPS, mouth_open, seconds), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in vs.encode(frame):
                out.mux(packet)
        sound = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        sound.sample_rate, sound.pts, sound.time_base = RATE, 0, Fraction(1, RATE)
        for packet in aus.encode(sound):
            out.mux(packet)
        for stream in (vs, aus):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the sec2sec-live demo clip")
    parser.add_argument("path", nargs="?", default="demo_face.mp4", help="where to write it (folders are created)")
    parser.add_argument("--seconds", type=int, default=12)
    args = parser.parse_args(argv)
    print(write_demo_clip(args.path, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
