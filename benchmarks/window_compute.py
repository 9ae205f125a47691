"""Per-window compute of every stage, eager and compiled, against this machine's fp32 matmul throughput.

    .venv/bin/python benchmarks/window_compute.py [--reps 5] [--threads 2] [--no-compile]

Prints one table: for the default config (8 frames, R(2+1)D-18), 16 frames, and the per-frame 2D encoder,
each stage's time per one-second window (median of --reps after warm-up), its GFLOP, the achieved GFLOP/s and
the ratio to the matmul throughput. "compiled" is torch.compile with inductor freezing (weights folded as
constants), what `sec2sec-live --compile` uses.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from sec2sec.config import AudioConfig, ModelConfig, VideoConfig
from sec2sec.describe import count_flops
from sec2sec.model import Sec2Sec
from sec2sec.stream import compile_encoders


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median wall time (ms) of `reps` calls after one warm-up call; with reps=0, the warm-up call's time."""
    started = time.perf_counter()
    fn()
    if reps == 0:
        return (time.perf_counter() - started) * 1000
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    """Best sustained fp32 matmul rate (GFLOP/s) of n x n by n x n: the machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(median_ms(lambda: a @ b, 0) for _ in range(reps))
    return 2 * n**3 / (best / 1000) / 1e9


def variants() -> dict[str, ModelConfig]:
    base = ModelConfig(video=VideoConfig(weights="none"), audio=AudioConfig(weights="none"))
    return {
        "default (8 frames, r2plus1d_18)": base,
        "16 frames, r2plus1d_18": replace(base, video=replace(base.video, frames_per_window=16)),
        "8 frames, resnet18_2d": replace(base, video=replace(base.video, encoder="resnet18_2d")),
    }


@torch.inference_mode()
def stage_rows(model: Sec2Sec, reps: int) -> list[tuple[str, float, float]]:
    """(stage, ms, GFLOP) per stage for one 640x480 window."""
    cfg = model.config
    frames = torch.randint(0, 256, (1, cfg.video.frames_per_window, 480, 640, 3), dtype=torch.uint8)
    audio = 0.1 * torch.randn(1, cfg.audio.sample_rate)
    clip = model.video_frontend(frames)
    image = model.audio_frontend(audio)
    vt, at = model.video_encoder(clip), model.audio_encoder(image)
    fused = model.fuse(vt, at)
    rows = [
        ("video front end", median_ms(lambda: model.video_frontend(frames), reps), 0.0),
        (
            "video encoder",
            median_ms(lambda: model.video_encoder(clip), reps),
            count_flops(model.video_encoder, clip)[0],
        ),
        ("audio front end", median_ms(lambda: model.audio_frontend(audio), reps), 0.0),
        (
            "audio encoder",
            median_ms(lambda: model.audio_encoder(image), reps),
            count_flops(model.audio_encoder, image)[0],
        ),
        ("co-attention", median_ms(lambda: model.fuse(vt, at), reps), count_flops(model.fuse, vt, at)[0]),
        ("temporal step", median_ms(lambda: model.temporal.step(fused, None), reps), 0.0),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads; fp32 matmul 2048^3: {peak:.0f} GFLOP/s\n")
    print(f"{'variant':34} {'mode':9} {'stage':16} {'ms':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'of matmul':>9}")
    for name, config in variants().items():
        torch.manual_seed(0)
        model = Sec2Sec(config).eval()
        modes = [("eager", model)]
        if not args.no_compile:
            torch._dynamo.reset()  # each variant compiles from scratch, as one monitor process would
            started = time.perf_counter()
            compiled = compile_encoders(Sec2Sec(config).eval())
            with torch.inference_mode():
                stage_rows(compiled, 0)  # compile happens on the first call
            print(f"{name}: compile (inductor, freezing) took {time.perf_counter() - started:.1f} s")
            modes.append(("compiled", compiled))
        for mode, m in modes:
            rows = stage_rows(m, args.reps)
            for stage, ms, gflop in rows:
                rate = gflop / (ms / 1000) if gflop else 0.0
                share = f"{rate / peak:9.0%}" if gflop else " " * 9
                print(f"{name:34} {mode:9} {stage:16} {ms:8.1f} {gflop:8.2f} {rate:8.0f} {share}")
            total = sum(ms for _, ms, _ in rows)
            print(f"{name:34} {mode:9} {'= per window':16} {total:8.1f}")
    print("\ntarget: video encoder >= 75% of matmul throughput on the path the monitor uses")


if __name__ == "__main__":
    main()
