"""Binding task: does co-attention over tokens beat late fusion of pooled vectors?

Every one-second clip holds superposed events: each of the four quadrants of the frame flashes once, in one
of `--slots` time slots (4: quarter seconds, 2: halves), and each of four tones (400, 900, 1800, 3600 Hz)
sounds once, in one slot; all slots are drawn independently except one pair. The label is whether the
top-left quadrant's flash and the lowest tone share a slot (half the clips, balanced). Every other
region-band pair coincides by chance, so "a flash and a tone coincide" says nothing; only the pairing of
that region with that band does. Neither modality alone carries any information.

The clips run through the real path (mp4 -> `extract` -> `fit` -> `evaluate`) with random encoder weights,
16 frames per window (the R(2+1)D-18 map is 2 x 4 x 4 at 64 px, pooled to 2 x 2 x 2 tokens: half-second x
quadrant) and a 4 x `slots` audio grid (its time cells are the slots). One cache, three models: SA-CA
(`fusion.mode = "co"`), SA-SA (`"self"`) and late fusion (`"concat"`, the shipped late_fusion config), each with
early stopping on the validation split. Prints each model's test accuracy (chance 0.50). Clips and cache
go to a temporary folder, or to `--work` (reused by a later run with the same --clips/--seed/--slots).
Figures measured are in README.md ("Planted-signal tests").

    .venv/bin/python benchmarks/fusion_binding.py [--clips 384] [--slots 4] [--seed 0] [--epochs 40]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from sec2sec.config import Config, parse_config
from sec2sec.offline.evaluate import evaluate
from sec2sec.offline.extract import extract
from sec2sec.offline.train import fit

FPS, RATE, SIZE = 16, 16_000, 64
TONES_HZ = (400, 900, 1800, 3600)
MODES = {"SA-CA": "co", "SA-SA": "self", "late fusion": "concat"}


def binding_clip(rng: random.Random, positive: bool, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """One second (+0.5 s blank tail): frames uint8 (24, 64, 64, 3) at 16 fps, audio float32 (24000,)."""
    flash_slots = [rng.randrange(slots) for _ in range(4)]  # quadrants TL, TR, BL, BR
    tone_slots = [rng.randrange(slots) for _ in TONES_HZ]
    others = [s for s in range(slots) if s != flash_slots[0]]
    tone_slots[0] = flash_slots[0] if positive else rng.choice(others)
    frames = np.full((FPS * 3 // 2, SIZE, SIZE, 3), 40, dtype=np.uint8)
    half, per_slot = SIZE // 2, FPS // slots
    for quadrant, slot in enumerate(flash_slots):
        y, x = (quadrant // 2) * half, (quadrant % 2) * half
        frames[slot * per_slot : (slot + 1) * per_slot - 1, y : y + half, x : x + half] = 220
    audio = np.random.default_rng(rng.randrange(2**32)).standard_normal(RATE * 3 // 2).astype(np.float32) * 0.02
    n = RATE // slots
    t = np.arange(n * 3 // 4) / RATE
    for hz, slot in zip(TONES_HZ, tone_slots, strict=True):
        start = slot * n + n // 8
        audio[start : start + t.size] += 0.15 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return frames, audio


def write_dataset(root: Path, clips: int, seed: int, slots: int) -> Path:
    """A LIRIS-ACCEDE folder of `clips` binding clips: half train, 1/6 validation, 1/3 test, labels balanced
    in each (valence 4.0 = the pair coincides, 1.5 = it does not; the median threshold splits them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.synthetic_clips import write_liris_tree, write_mp4  # the tests' mp4 (H.264 + AAC) and tree writers

    rng = random.Random(seed)
    counts = {2: clips // 6, 0: clips // 3}  # LIRIS set codes: 1 train, 2 validation, 0 test
    counts[1] = clips - counts[2] - counts[0]
    rows, k = [], 0
    for split, n in counts.items():
        for i in range(n):
            positive = i % 2 == 0
            name = f"ACCEDE{k:05d}.mp4"
            write_mp4(root / "data" / name, *binding_clip(rng, positive, slots))
            rows.append((name, f"film{k}", split, 4.0 if positive else 1.5, 3.0))
            k += 1
    return write_liris_tree(root, rows)


def binding_config(mode: str, epochs: int, seed: int, slots: int, lr: float = 1e-3) -> Config:
    """Small model, random encoders, 1 s clips, 16 frames of 64 px; fusion width 64, one layer."""
    return parse_config(
        {
            "model": {
                "clip_seconds": 1,
                "video": {"frames_per_window": 16, "resize": SIZE, "crop": SIZE, "weights": "none",
                          "token_grid": [2, 2, 2]},
                "audio": {"weights": "none", "token_grid": [4, slots]},
                "fusion": {"mode": mode, "width": 64, "heads": 4, "ff_width": 128, "feature_width": 64,
                           "dropout": 0.0},
                "temporal": {"hidden": 64, "dropout": 0.0, "transformer_heads": 4},
                "heads": {"outputs": ["valence"]},
            },
            "train": {"epochs": epochs, "batch_size": 16, "lr": lr, "weight_decay": 0.0,
                      "patience": max(epochs // 4, 1), "seed": seed, "label_threshold": "median",
                      "modality_dropout": 0.0},
        }
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=384, help="clips in all (1/2 train, 1/6 val, 1/3 test)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the clips and the training")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--slots", type=int, default=4, choices=(2, 4), help="time slots per second")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes of the extraction")
    parser.add_argument("--work", default="", help="keep clips and cache in this folder and reuse them (same args)")
    args = parser.parse_args()
    if args.clips < 12:
        parser.error("--clips must be >= 12 (two clips per class in each split)")
    torch.set_num_threads(1)
    if args.work:
        run(args, Path(args.work))
    else:
        with tempfile.TemporaryDirectory(prefix="fusion-binding-") as tmp:
            run(args, Path(tmp))


def run(args: argparse.Namespace, base: Path) -> None:
    """Write and extract the clips under `base` (kept if its cache is complete), then train and score."""
    quiet, started = Console(quiet=True), time.perf_counter()
    if not (base / "cache" / "index.json").is_file():
        root = write_dataset(base / "liris", args.clips, args.seed, args.slots)
        config = binding_config("co", 1, 0, args.slots)
        extract("liris", root, base / "cache", config, dtype="float32", workers=args.workers, console=quiet)
    print(f"binding task: {args.clips} clips of 1 s, {args.slots} slots, seed {args.seed}, {args.epochs} epochs max")
    print(f"clips written and extracted in {time.perf_counter() - started:.0f} s")
    for name, mode in MODES.items():
        started = time.perf_counter()
        config = binding_config(mode, args.epochs, args.seed, args.slots, args.lr)
        result = fit(base / "cache", config, base / f"{mode}-{args.epochs}-{args.lr}", restart=True, console=quiet)
        scores = evaluate(result.best_path, base / "cache", "test").scores["valence"]
        print(
            f"{name:>11} ({mode}): test accuracy {scores['accuracy']:.3f}, best epoch {result.best_epoch} "
            f"of {result.epochs}, {time.perf_counter() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
