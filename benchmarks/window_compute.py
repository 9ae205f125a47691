"""Per-window compute of every stage in float32 and in bfloat16, in one run, against the same run's matmul rates.

    .venv/bin/python benchmarks/window_compute.py [--reps 5] [--threads 2] [--default-only] [--markdown]

For the default config (8 frames, R(2+1)D-18), 16 frames, and the per-frame 2D encoder: each stage's time per
one-second window (640x480 frames) with the encoders in float32 and in bfloat16 (`--precision`; calls of the
two alternate, so a busy machine slows both alike; median of --reps), the ratio bfloat16 / float32, the
stage's GFLOP, and the achieved rate as a share of this run's float32 and bfloat16 matmul rates. Only the
encoders change with the precision; the other stages are listed for the whole window's cost. The last line
compares the default video encoder's ratio with the goal (<= 0.55 on a CPU with native bfloat16).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from tables import cpu_name, print_table

from sec2sec.config import AudioConfig, ModelConfig, VideoConfig
from sec2sec.model import Sec2Sec
from sec2sec.precision import bf16_native, set_precision
from sec2sec.stages import measure_stages

PRECISIONS = ("float32", "bfloat16")


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


def matmul_gflops(
    n: int = 2048, reps: int = 10, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Best sustained matmul rate (GFLOP/s) of n x n by n x n in `dtype`: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
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


def stage_calls(model: Sec2Sec) -> dict[str, Callable[[], object]]:
    """Each stage of one 640x480 window as a call on fixed inputs."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, cfg.video.frames_per_window, 480, 640, 3), dtype=torch.uint8, generator=g)
    audio = 0.1 * torch.randn(1, cfg.audio.sample_rate, generator=g)
    clip, image = model.video_frontend(frames), model.audio_frontend(audio)
    vt, at = model.video_encoder(clip), model.audio_encoder(image)
    fused = model.fuse(vt, at)
    return {
        "video front end": lambda: model.video_frontend(frames),
        "video encoder": lambda: model.video_encoder(clip),
        "audio front end": lambda: model.audio_frontend(audio),
        "audio encoder": lambda: model.audio_encoder(image),
        "co-attention": lambda: model.fuse(vt, at),
        "temporal step": lambda: model.temporal.step(fused, None),
    }


def stage_gflop(model: Sec2Sec) -> dict[str, float]:
    """GFLOP per window of the stages that have a rate worth stating, from `sec2sec.stages` (what
    `sec2sec describe` prints), under this table's stage names."""
    names = {"video": "video encoder", "audio": "audio encoder", "fusion": "co-attention"}
    return {names[s.name.split()[0]]: s.gflop for s in measure_stages(model) if s.name.split()[0] in names}


def alternating_ms(calls: list[Callable[[], object]], reps: int) -> list[float]:
    """Median wall time (ms) of each call, the calls alternating rep by rep after one warm-up each."""
    times: list[list[float]] = [[] for _ in calls]
    for call in calls:
        call()
    for _ in range(max(reps, 1)):
        for k, call in enumerate(calls):
            started = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - started) * 1000)
    return [statistics.median(t) for t in times]


def variant_rows(config: ModelConfig, reps: int, peaks: dict[str, float]) -> tuple[list[list[str]], dict[str, float]]:
    """Table rows of one config, and {stage: bfloat16 / float32 time}. The models are built outside
    inference_mode, as the live stream builds them (weights made inside have no version counter, so the folded
    trunk would be folded and packed again on every call); only the timed calls run inside it."""
    models = {}
    for precision in PRECISIONS:
        torch.manual_seed(0)
        models[precision] = Sec2Sec(config).eval()
        set_precision(models[precision], precision)
    with torch.inference_mode():
        gflop = stage_gflop(models["float32"])
        calls = {p: stage_calls(m) for p, m in models.items()}
    rows, ratios = [], {}
    for stage in calls["float32"]:
        with torch.inference_mode():
            fp32, bf16 = alternating_ms([calls[p][stage] for p in PRECISIONS], reps)
        ratios[stage] = bf16 / fp32
        g = gflop.get(stage, 0.0)
        times = zip(PRECISIONS, (fp32, bf16), strict=True)
        shares = [f"{g / (ms / 1000) / peaks[p]:.0%}" if g else "-" for p, ms in times]
        rows.append([stage, f"{fp32:.1f}", f"{bf16:.1f}", f"{bf16 / fp32:.2f}x", f"{g:.2f}" if g else "-", *shares])
    return rows, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--default-only", action="store_true", help="only the default config")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {"float32": matmul_gflops(), "bfloat16": matmul_gflops(dtype=torch.bfloat16)}
    peaks = {p: max(rate, matmul_gflops(dtype=getattr(torch, p))) for p, rate in peaks.items()}  # best of two rounds
    native = "yes" if bf16_native(torch.device("cpu")) else "no (oneDNN emulates it)"
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} threads; native bfloat16: {native}")
    print(f"matmul 2048^3: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s\n")
    headers = [
        "variant",
        "stage",
        "float32 ms",
        "bfloat16 ms",
        "bf16/fp32",
        "GFLOP",
        "fp32 of matmul",
        "bf16 of matmul",
    ]
    rows, default_ratios = [], {}
    for k, (name, config) in enumerate(list(variants().items())[: 1 if args.default_only else None]):
        stage_table, ratios = variant_rows(config, args.reps, peaks)
        rows += [[name, *row] for row in stage_table]
        if k == 0:
            default_ratios = ratios
    print_table(headers, rows, args.markdown)
    ratio = default_ratios["video encoder"]
    met = ("yes" if ratio <= 0.55 else "NO") if bf16_native(torch.device("cpu")) else "n/a (bfloat16 emulated here)"
    print(f"\ndefault video encoder: bfloat16 takes {ratio:.3f}x float32's time (goal <= 0.55x, native bf16): {met}")
    print(f"default audio encoder: bfloat16 takes {default_ratios['audio encoder']:.2f}x float32's time")


if __name__ == "__main__":
    main()
