"""Cost of face framing (search + follow + crop) per second of 30 fps video, against one window's encoder compute
measured in the same run.

    .venv/bin/python benchmarks/face_framing.py [--seconds 6] [--reps 3] [--threads 1 2] [--sizes 640x480 1280x720]
                                                [--markdown]

A clip of a real face (the GRID speaker of tests/data, a face 1/5 of the frame's height, wobbling across a busy
textured background: the generator the tests use) at 30 fps; the framer is fed what a camera or a replay feeds
it: the frames the window slots use (m = 8 a second, picked by `SlotThinning`), as uint8 RGB at full
resolution. Per size, alternating rep by rep (so load on the machine slows all alike), the median of --reps:
the framer's wall time per second of video, and one window's R(2+1)D-18 video encoder + ResNet-18 audio encoder
in float32 and in the precision `--precision auto` picks here (the folded trunk, as `sec2sec-live` runs them).
Goal: framing <= 15% of the window's encoder compute, in the faster of those precisions. The breakdown lines say
where the framing time goes, in calls and ms per second of video: whole-frame searches, follows (O-Net on the
face's last box), re-finds (the cascade around the last box when O-Net lost the face), crops.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tables import cpu_name, print_table

from sec2sec import framing
from sec2sec.config import NANOS_PER_SECOND, AudioConfig, ModelConfig, VideoConfig
from sec2sec.faces import FaceDetector
from sec2sec.media import SlotThinning
from sec2sec.model import Sec2Sec
from sec2sec.precision import resolve_precision, set_precision

FPS, M = 30, 8
GOAL = 0.15


def slot_frames(size: tuple[int, int], seconds: float) -> list[tuple[np.ndarray, int]]:
    """(frame, t_ns) of the frames a window slot uses, from a 30 fps clip of a moving face at `size`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.face_clips import FacePath, render_faces  # the tests' clips: real faces on a busy texture

    width, height = size
    face = FacePath("grid", round(height / 5), (width * 0.3, height * 0.4), (width * 0.7, height * 0.6), wobble=20)
    frames, _ = render_faces([face], size, FPS, seconds)
    times = [k * NANOS_PER_SECOND // FPS for k in range(len(frames))]
    thinning = SlotThinning(M)
    after = [*times[1:], None]
    return [(f, t) for f, t, n in zip(frames, times, after, strict=True) if thinning.needed(t, n)]


class Timed:
    """Wall time and calls of the detector's searches, follows and re-finds, and of the crops, while a framer runs."""

    def __init__(self, detector: FaceDetector) -> None:
        self.ms: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        detector.detect = self._wrap("search", detector.detect)  # type: ignore[method-assign]
        detector.rescore = self._wrap("follow", detector.rescore)  # type: ignore[method-assign]
        framing.aligned_crop = self._wrap("crop", framing.aligned_crop)  # type: ignore[assignment]

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                what = "refind" if name == "search" and kwargs.get("max_face") else name  # the cascade near the face
                self.ms[what] = self.ms.get(what, 0.0) + (time.perf_counter() - started) * 1000
                self.calls[what] = self.calls.get(what, 0) + 1

        return timed

    def reset(self) -> None:
        self.ms.clear()
        self.calls.clear()


def _encode(model: Sec2Sec, clip: torch.Tensor, image: torch.Tensor) -> None:
    assert model.video_encoder is not None and model.audio_encoder is not None
    model.video_encoder(clip)
    model.audio_encoder(image)


def encoder_calls() -> dict[str, Callable[[], object]]:
    """One window's video encoder + audio encoder, per precision (float32, and auto's choice when another)."""
    config = ModelConfig(video=VideoConfig(weights="none"), audio=AudioConfig(weights="none"))
    precisions = sorted({"float32", resolve_precision("auto", torch.device("cpu"))})
    calls: dict[str, Callable[[], object]] = {}
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, M, 128, 128, 3), dtype=torch.uint8, generator=g)
    audio = 0.1 * torch.randn(1, config.audio.sample_rate, generator=g)
    for precision in precisions:
        torch.manual_seed(0)
        model = Sec2Sec(config).eval()  # built outside inference_mode, as the live stream builds it
        set_precision(model, precision)
        assert model.video_frontend is not None and model.audio_frontend is not None
        with torch.inference_mode():
            clip, image = model.video_frontend(frames), model.audio_frontend(audio)

        calls[precision] = functools.partial(_encode, model, clip, image)
    return calls


def measure(sizes: list[tuple[int, int]], seconds: float, reps: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per size: framing ms per second of video and its breakdown; and the encoders' ms per window."""
    detector = FaceDetector()
    timed = Timed(detector)
    clips = {size: slot_frames(size, seconds) for size in sizes}
    encoders = encoder_calls()
    framing_ms: dict[tuple[int, int], list[float]] = {size: [] for size in sizes}
    encoder_ms: dict[str, list[float]] = {p: [] for p in encoders}
    breakdown: dict[tuple[int, int], dict[str, float]] = {}

    def frame_clip(size: tuple[int, int]) -> float:
        framer = framing.Framer("face", resize=128, crop=112, margin=0.25, detector=detector)
        timed.reset()
        started = time.perf_counter()
        for rgb, t_ns in clips[size]:
            framer.frame(rgb, t_ns)
        return (time.perf_counter() - started) * 1000 / seconds

    with torch.inference_mode():
        for size in sizes:  # warm-up: first calls of each shape
            frame_clip(size)
        for call in encoders.values():
            call()
        for _ in range(max(reps, 1)):
            for size in sizes:
                framing_ms[size].append(frame_clip(size))
                breakdown[size] = {f"{k} ms": v / seconds for k, v in timed.ms.items()}
                breakdown[size].update({f"{k}s": n / seconds for k, n in timed.calls.items()})
            for precision, call in encoders.items():
                started = time.perf_counter()
                call()
                encoder_ms[precision].append((time.perf_counter() - started) * 1000)
    rows = [{"size": s, "framing": statistics.median(framing_ms[s]), **breakdown[s]} for s in sizes]
    return rows, {p: statistics.median(v) for p, v in encoder_ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of video framed per rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (one table each)")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"{cpu_name()}, torch {torch.__version__}; face framing of 30 fps video, {M} framed frames a second")
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows, encoders = measure(sizes, args.seconds, args.reps)  # type: ignore[arg-type]
        enc = ", ".join(f"{p} {ms:.1f} ms" for p, ms in encoders.items())
        plural = "s" if threads > 1 else ""
        print(f"\n{threads} torch thread{plural}: one window's video + audio encoders: {enc}")
        fastest = min(encoders.values())
        headers = ["size", "framing ms per s", *(f"of {p} encoders" for p in encoders), "goal <= 15% (faster)"]
        table = []
        for row in rows:
            width, height = row["size"]
            shares = [f"{row['framing'] / ms:.1%}" for ms in encoders.values()]
            verdict = "yes" if row["framing"] / fastest <= GOAL else "NO"
            table.append([f"{width}x{height}", f"{row['framing']:.1f}", *shares, verdict])
        print_table(headers, table, args.markdown)
        for row in rows:
            width, height = row["size"]
            parts = ", ".join(
                f"{name} {row.get(f'{name}s', 0):.2f}/s {row.get(f'{name} ms', 0):.1f} ms"
                for name in ("search", "follow", "refind", "crop")
            )
            print(f"{width}x{height} per second of video: {parts}")


if __name__ == "__main__":
    main()
