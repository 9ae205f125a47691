"""One training epoch over synthetic cached features of LIRIS-ACCEDE size (9,800 clips x 10 s) on this machine.

Prints seconds per epoch, clips/s and peak memory. The encoders are frozen and their tokens cached, so this
times what `sec2sec train` does per epoch: co-attention over the tokens of every second, the temporal model,
the heads, backward and the AdamW step. (The paper reports 2:14 min per epoch end to end on an RTX 3090.)

    .venv/bin/python benchmarks/train_epoch.py [--clips 9800] [--seconds 10] [--config default]
        [--device auto|cpu|cuda|cuda:N] [--autocast bfloat16]
    .venv/bin/torchrun --nproc_per_node N benchmarks/train_epoch.py ...   # DDP, as `sec2sec train` runs it

Under torchrun each process builds the same synthetic cache and trains its share of every global batch through
DistributedDataParallel (gloo on the CPU with cores / N torch threads each, NCCL on GPUs), exactly as
`torchrun -m sec2sec train` does; rank 0 prints. `--autocast bfloat16` runs the epoch under
torch.autocast (forward and backward); `--compare-autocast N` runs N epochs in float32 and N under bfloat16
autocast, alternating in one process, and prints the median of each and their ratio (docs/performance.md).
"""

from __future__ import annotations

import argparse
import resource
import time
from contextlib import nullcontext
from dataclasses import replace

import torch
from window_compute import matmul_gflops

from sec2sec.checkpoint import without_weight_files
from sec2sec.config import Config, load_config
from sec2sec.devices import DEVICE_HELP, resolve_device
from sec2sec.model import ENCODER_MODULES, Sec2Sec
from sec2sec.offline.distributed import DataParallelModel, Dist, features_to, session
from sec2sec.offline.features import Features
from sec2sec.offline.prepared import Split, set_norm_statistics
from sec2sec.offline.train import make_optimizer, train_epoch


def synthetic_features(clips: int, seconds: int, video_tokens: int, audio_tokens: int, seed: int) -> Features:
    """Random float16 tokens (clips, seconds, N, 512) shaped like a cache, with 10% of clips shorter."""
    g = torch.Generator().manual_seed(seed)

    def tokens(n: int) -> torch.Tensor:
        out = torch.empty(clips, seconds, n, 512, dtype=torch.float16)
        for start in range(0, clips, 512):
            part = out[start : start + 512]
            part.copy_(torch.randn(part.shape, generator=g))
        return out

    lengths = torch.full((clips,), seconds, dtype=torch.long)
    lengths[::10] = max(1, seconds - 2)
    ok = torch.arange(seconds)[None, :] < lengths[:, None]
    return Features([str(i) for i in range(clips)], tokens(video_tokens), tokens(audio_tokens), ok, ok, lengths)


def _setup(config: Config, clips: int, seconds: int, device: torch.device) -> tuple[Sec2Sec, Split]:
    """The default-config model (encoders frozen) and a synthetic training split, both on `device`."""
    torch.manual_seed(config.train.seed)
    model = Sec2Sec(without_weight_files(replace(config.model, clip_seconds=seconds)))
    features = synthetic_features(clips, seconds, model.video_tokens, model.audio_tokens, config.train.seed)
    set_norm_statistics(model, features)
    targets = (torch.rand(clips, len(config.model.heads.outputs)) > 0.5).float()
    for name in ENCODER_MODULES:  # frozen, as `sec2sec train` without --finetune
        if getattr(model, name) is not None:
            getattr(model, name).requires_grad_(False)
    return model.to(device), Split([], features_to(features, device), targets.to(device))


def _peak_mib(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "peak GPU memory (max allocated)", torch.cuda.max_memory_allocated(device) / 2**20
    return "peak memory (max RSS)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _report(args: argparse.Namespace, config: Config, dist: Dist, seconds: float, loss: float) -> None:
    where = f"{dist.world} process{'es' if dist.world > 1 else ''} on {dist.device}"
    n = torch.get_num_threads()
    each = " each" if dist.world > 1 else ""
    threads = f", {n} torch thread{'s' if n > 1 else ''}{each}" if dist.device.type == "cpu" else ""
    amp = f", autocast {args.autocast}" if args.autocast != "off" else ""
    print(f"one epoch: {args.clips} clips x {args.seconds} s, batch {config.train.batch_size}, {where}{threads}{amp}")
    print(f"seconds per epoch: {seconds:.1f}")
    print(f"clips/s: {args.clips / seconds:.1f}  (windows/s: {args.clips * args.seconds / seconds:.0f})")
    label, mib = _peak_mib(dist.device)
    print(f"{label}: {mib:.0f} MiB (rank 0)")
    print(f"train loss {loss:.4f} (random labels: about ln 2 = 0.693)")
    print("reference: the paper reports 2:14 min per epoch end to end on an RTX 3090")
    rate = matmul_gflops(reps=5, device=dist.device)
    print(f"fp32 matmul 2048^3 after the epoch: {rate:.0f} GFLOP/s on {dist.device} (the speed varies by day)")


def compare_autocast(args: argparse.Namespace, config: Config, device: torch.device) -> None:
    """Alternating float32 / bfloat16-autocast epochs on one split: medians, ratio, final losses. Each mode trains
    its own copy of one initial model with its own optimizer, and epoch k shuffles alike in both, so the two
    final losses are the same training followed in two precisions."""
    import copy
    import statistics

    initial, split = _setup(config, args.clips, args.seconds, device)
    times: dict[str, list[float]] = {"float32": [], "bfloat16 autocast": []}
    models = {mode: copy.deepcopy(initial) for mode in times}
    trainable = {mode: [p for p in model.parameters() if p.requires_grad] for mode, model in models.items()}
    optimizers = {mode: make_optimizer(params, config.train) for mode, params in trainable.items()}
    losses: dict[str, float] = {}
    for epoch in range(args.compare_autocast):
        for mode in times:
            amp = torch.autocast(device.type, torch.bfloat16) if mode != "float32" else nullcontext()
            torch.manual_seed(epoch)  # the same batches and dropout draws in both modes
            started = time.perf_counter()
            with amp:
                losses[mode] = train_epoch(models[mode], optimizers[mode], split, config.train, epoch=epoch)["loss"]
            times[mode].append(time.perf_counter() - started)
    fp32, bf16 = (statistics.median(t) for t in times.values())
    print(f"epochs of {args.clips} clips x {args.seconds} s on {device}, {torch.get_num_threads()} torch threads,")
    print(f"alternating, median of {args.compare_autocast} each:")
    print(f"float32 {fp32:.2f} s, bfloat16 autocast {bf16:.2f} s: autocast takes {bf16 / fp32:.2f}x float32's time")
    print(f"last loss: float32 {losses['float32']:.4f}, bfloat16 autocast {losses['bfloat16 autocast']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="shipped config name or TOML file")
    parser.add_argument("--clips", type=int, default=9800)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's train.batch_size")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--autocast", default="off", choices=("off", "bfloat16"), help="the epoch under autocast")
    parser.add_argument("--compare-autocast", type=int, default=0, metavar="N", help="N float32 / autocast pairs")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.batch_size:
        config = replace(config, train=replace(config.train, batch_size=args.batch_size))
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(f"train_epoch: {error}") from None
    if args.compare_autocast:
        compare_autocast(args, config, resolve_device(args.device))
        return
    with session(args.device) as dist:
        model, split = _setup(config, args.clips, args.seconds, dist.device)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config.train)
        trainer = DataParallelModel(model, dist.device) if dist.world > 1 else model
        dist.barrier()
        started = time.perf_counter()
        amp = torch.autocast(dist.device.type, torch.bfloat16) if args.autocast != "off" else nullcontext()
        with amp:
            stats = train_epoch(trainer, optimizer, split, config.train, epoch=0)
        if dist.device.type == "cuda":
            torch.cuda.synchronize(dist.device)
        seconds = time.perf_counter() - started
        if dist.main:
            _report(args, config, dist, seconds, stats["loss"])
        dist.barrier()


if __name__ == "__main__":
    main()
