"""Small generated files that break a decoder's assumptions: a clock that jumps, a resolution that changes
mid-second, absurd frame dimensions. Written with PyAV in a test's tmp_path (a few KB each)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _frame(value: int, width: int, height: int, pts: int, time_base: Fraction) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), value % 256, np.uint8), format="rgb24")
    frame.pts, frame.time_base = pts, time_base
    return frame


def write_clock_jump(path: Path, jump_s: int, fps: int = 25, size: tuple[int, int] = (64, 48)) -> Path:
    """MJPEG in Matroska: one second of frames (0 .. (fps-1)/fps s), then one frame at `jump_s` seconds."""
    time_base = Fraction(1, fps)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuvj420p"
        for i, pts in enumerate([*range(fps), jump_s * fps]):
            for packet in stream.encode(_frame(i * 9, *size, pts, time_base)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_size_change_ts(path: Path, fps: int = 25, seconds: int = 2, change_at: int = 12) -> Path:
    """MPEG-TS (MPEG-2 video) whose frames are 64x48 up to frame `change_at` (mid-way through second 0),
    then 96x80: two encoded segments, the second's timestamps continuing the first's, joined byte for byte
    (as a broadcast or an RTSP camera renegotiating its resolution delivers them)."""
    time_base = Fraction(1, fps)
    parts = []
    for first, last, size in ((0, change_at, (64, 48)), (change_at, fps * seconds, (96, 80))):
        part = path.with_name(f"{path.stem}.{first}.ts")
        with av.open(str(part), "w", format="mpegts") as out:
            stream = out.add_stream("mpeg2video", rate=fps)
            stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
            stream.codec_context.time_base = time_base
            for i in range(first, last):
                for packet in stream.encode(_frame(i * 9, *size, i, time_base)):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        parts.append(part.read_bytes())
        part.unlink()
    path.write_bytes(b"".join(parts))
    return path


def write_rawvideo(path: Path, width: int, height: int, frames: int = 1) -> Path:
    """Uncompressed RGB frames of `width` x `height` in NUT (a container that stores any size as declared)."""
    with av.open(str(path), "w", format="nut") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        for i in range(frames):
            for packet in stream.encode(_frame(i, width, height, i, Fraction(1, 25))):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
