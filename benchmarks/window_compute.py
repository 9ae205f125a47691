"""Per-window compute of every stage, compiled (the default) and eager, against this machine's fp32 matmul
throughput measured in the same run.

    .venv/bin/python benchmarks/window_compute.py [--reps 5] [--threads 2] [--no-compile] [--default-only]

Prints one table: for the default config (8 frames, R(2+1)D-18), 16 frames, and the per-frame 2D encoder,
each stage's time per one-second window (median of --reps after warm-up), its GFLOP, the achieved GFLOP/s and
the ratio to the matmul throughput. "compiled" is the default path of `sec2sec-live`: the encoders' AOTInductor
packages from $SEC2SEC_CACHE (built on first use: about a minute per encoder here, then loaded in well under a
second; the time each took is printed). "eager" is `--no-compile`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from sec2sec.compiled import LIVE_BATCH, compile_model
from sec2sec.config import AudioConfig, ModelConfig, VideoConfig
from sec2sec.describe import count_flops
from sec2sec.model import Sec2Sec


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


def matmul_gflops(n: int = 2048, reps: int = 10, device: torch.device | str = "cpu") -> float:
    """Best sustained fp32 matmul rate (GFLOP/s) of n x n by n x n: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def product() -> None:
        a @ b
        sync()

    product()
    best = min(median_ms(product, 0) for _ in range(reps))
    return 2 * n**3 / (best / 1000) / 1e9


def variants() -> dict[str, ModelConfig]:
    base = ModelConfig(video=VideoConfig(weights="none"), audio=AudioConfig(weights="none"))
    return {
        "default (8 frames, r2plus1d_18)": base,
        "16 frames, r2plus1d_18": replace(base, video=replace(base.video, frames_per_window=16)),
        "8 frames, resnet18_2d": replace(base, video=replace(base.video, encoder="resnet18_2d")),
    }


@torch.inference_mode()
def stage_rows(model: Sec2Sec, reps: int, gflop: dict[str, float]) -> list[tuple[str, float, float]]:
    """(stage, ms, GFLOP) per stage for one 640x480 window; GFLOP as counted on the eager model."""
    cfg = model.config
    frames = torch.randint(0, 256, (1, cfg.video.frames_per_window, 480, 640, 3), dtype=torch.uint8)
    audio = 0.1 * torch.randn(1, cfg.audio.sample_rate)
    clip = model.video_frontend(frames)
    image = model.audio_frontend(audio)
    vt, at = model.video_encoder(clip), model.audio_encoder(image)
    fused = model.fuse(vt, at)
    if not gflop:
        gflop["video encoder"] = count_flops(model.video_encoder, clip)[0]
        gflop["audio encoder"] = count_flops(model.audio_encoder, image)[0]
        gflop["co-attention"] = count_flops(model.fuse, vt, at)[0]
    calls = {
        "video front end": lambda: model.video_frontend(frames),
        "video encoder": lambda: model.video_encoder(clip),
        "audio front end": lambda: model.audio_frontend(audio),
        "audio encoder": lambda: model.audio_encoder(image),
        "co-attention": lambda: model.fuse(vt, at),
        "temporal step": lambda: model.temporal.step(fused, None),
    }
    return [(stage, median_ms(call, reps), gflop.get(stage, 0.0)) for stage, call in calls.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", action="store_true", help="eager only (no packages built or loaded)")
    parser.add_argument("--default-only", action="store_true", help="only the default config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads; fp32 matmul 2048^3: {peak:.0f} GFLOP/s\n")
    print(f"{'variant':34} {'mode':9} {'stage':16} {'ms':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'of matmul':>9}")
    shares: dict[tuple[str, str], float] = {}
    for name, config in list(variants().items())[: 1 if args.default_only else None]:
        torch.manual_seed(0)
        model = Sec2Sec(config).eval()
        modes = [("eager", model)]
        if not args.no_compile:
            torch.manual_seed(0)
            compiled = Sec2Sec(config).eval()
            started = time.perf_counter()
            report = compile_model(compiled, max_batch=LIVE_BATCH)  # what sec2sec-live runs
            print(f"{name}: compiled encoders {report} in {time.perf_counter() - started:.1f} s")
            modes.insert(0, ("compiled", compiled))
        gflop: dict[str, float] = {}
        for mode, m in sorted(modes, key=lambda x: x[0] != "eager"):  # eager first: it counts the GFLOP
            rows = stage_rows(m, args.reps, gflop)
            for stage, ms, g in rows:
                rate = g / (ms / 1000) if g else 0.0
                share = f"{rate / peak:9.0%}" if g else " " * 9
                print(f"{name:34} {mode:9} {stage:16} {ms:8.1f} {g:8.2f} {rate:8.0f} {share}")
                if stage == "video encoder":
                    shares[name, mode] = rate / peak
            total = sum(ms for _, ms, _ in rows)
            print(f"{name:34} {mode:9} {'= per window':16} {total:8.1f}")
    default = next(iter(variants()))
    path = "eager" if args.no_compile else "compiled"
    print(f"\ndefault path ({path}) video encoder: {shares[default, path]:.0%} of the matmul throughput (goal >= 75%)")


if __name__ == "__main__":
    main()
