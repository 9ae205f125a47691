"""Synthetic audio-visual clips with a planted answer, and tiny dataset folders in the real on-disk formats.

Clips are real mp4 files (H.264 video + AAC audio, written with PyAV), so the tests run the same reader and
windower as live replay. Every second of a clip is built from `Second` events; clips carry 0.5 s of blank
tail so that the last window a test uses is complete (AAC priming and padding fall into the tail).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

FPS = 16
SAMPLE_RATE = 16_000
SIZE = 112
DARK, BRIGHT = 50, 220


@dataclass(frozen=True)
class Second:
    """What happens in one second: a flash over `flash` = (first, last) frame numbers (of 16), a tone of
    `tone_hz` at amplitude `loudness` over `beep` = (start_ms, end_ms); None for neither."""

    flash: tuple[int, int] | None = None
    beep: tuple[int, int] | None = None
    tone_hz: int = 1000
    loudness: float = 0.5


FIRST_HALF_FLASH, SECOND_HALF_FLASH = (2, 5), (10, 13)
FIRST_HALF_BEEP, SECOND_HALF_BEEP = (100, 250), (600, 750)
# Mid-second events for order tasks: 250 ms away from the window edges, so AAC's pre-echo and decay never
# reach the neighbouring windows (which would tell a window what its neighbour holds).
MID_FLASH, MID_BEEP = (4, 11), (250, 750)


def render(
    seconds: list[Second], tail_ms: int = 500, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Events -> frames uint8 (n, SIZE, SIZE, 3) at FPS and audio float32 (samples,) at SAMPLE_RATE.

    `noise`: standard deviation of a white-noise floor under all audio. Without it a silent window is all
    zeros and the audio encoder's per-image standardisation magnifies codec residue near its edges.
    """
    n_frames = len(seconds) * FPS + tail_ms * FPS // 1000
    frames = np.full((n_frames, SIZE, SIZE, 3), DARK, dtype=np.uint8)
    n_samples = len(seconds) * SAMPLE_RATE + tail_ms * SAMPLE_RATE // 1000
    audio = (np.random.default_rng(seed).standard_normal(n_samples) * noise).astype(np.float32)
    for i, s in enumerate(seconds):
        if s.flash is not None:
            frames[i * FPS + s.flash[0] : i * FPS + s.flash[1] + 1] = BRIGHT
        if s.beep is not None:
            a, b = (i * SAMPLE_RATE + ms * SAMPLE_RATE // 1000 for ms in s.beep)
            t = np.arange(b - a) / SAMPLE_RATE
            audio[a:b] += s.loudness * np.sin(2 * np.pi * s.tone_hz * t)
    return frames, audio


def write_mp4(path: Path, frames: np.ndarray | None, audio: np.ndarray | None) -> Path:
    """Write frames (n, H, W, 3) uint8 at FPS and mono audio at SAMPLE_RATE as H.264 + AAC mp4 (None: a
    file without that stream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:  # every stream is added before the first packet is muxed
        video = sound = None
        if frames is not None:
            video = container.add_stream("libx264", rate=FPS)
            video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "10"}
        if audio is not None:
            sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        if video is not None:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode())
        if sound is None:
            return path
        for start in range(0, audio.size, 1024):
            chunk = audio[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    return path


def write_liris_tree(root: Path, clips: list[tuple[str, str, int, float, float]]) -> Path:
    """A LIRIS-ACCEDE folder: (file name, movie, set 0/1/2, valenceValue, arousalValue) per clip; the mp4
    files themselves are written by the caller into root/data."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ranking = ["id\tname\tvalenceRank\tarousalRank\tvalenceValue\tarousalValue\tvalenceVariance\tarousalVariance"]
    sets = ["id\tname\tset"]
    media = []
    for i, (name, movie, split, valence, arousal) in enumerate(clips):
        ranking.append(f"{i}\t{name}\t{i}\t{i}\t{valence}\t{arousal}\t0.1\t0.1")
        sets.append(f"{i}\t{name}\t{split}")
        media.append(
            f"  <media>\n    <id>{i}</id>\n    <name>{name}</name>\n    <movie>{movie}</movie>\n"
            f"    <start>{10 * i}</start>\n    <end>{10 * i + 8}</end>\n  </media>"
        )
    (root / "annotations" / "ACCEDEranking.txt").write_text("\n".join(ranking) + "\n", encoding="utf-8")
    (root / "annotations" / "ACCEDEsets.txt").write_text("\n".join(sets) + "\n", encoding="utf-8")
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<ACCEDE>\n' + "\n".join(media) + "\n</ACCEDE>\n"
    (root / "ACCEDEdescription.xml").write_text(xml, encoding="utf-8")
    return root


def python2_pickle(data: dict[str, dict[str, float]]) -> bytes:
    """A protocol-2 pickle as Python 2 writes a dict of str -> {str: float}: keys as 8-bit strings
    (SHORT_BINSTRING / BINSTRING, latin1), floats as BINFLOAT."""

    def string(s: str) -> bytes:
        raw = s.encode("latin1")
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw

    def mapping(d: dict) -> bytes:
        out = b"}("
        for key, value in d.items():
            out += string(key)
            out += mapping(value) if isinstance(value, dict) else b"G" + struct.pack(">d", float(value))
        return out + b"u"

    return b"\x80\x02" + mapping(data) + b"."
