"""Feature extraction throughput: windows per second for 1 process and torchrun N processes (CPU, and CUDA
when present), the decode share, and the projected hours for LIRIS-ACCEDE and First Impressions.

    .venv/bin/python benchmarks/extract_throughput.py [--clips 8] [--seconds 10] [--size 640x360]
        [--config default] [--processes 1,2] [--batch 8] [--workers 1]

Writes `--clips` synthetic H.264 + AAC clips of `--seconds` s at `--size` (a LIRIS-ACCEDE folder), then:
1. the encoders' compute per window: `model.encode` on batches of already decoded, model-sized windows
   (median of 3 after a warm-up), so 1 / compute is the rate the encoders allow;
2. the decode cost per window: `decode_clip` (reader + windower + scaling) in this process;
3. `sec2sec extract` as a user runs it, 1 process and torchrun N processes (`--device cpu`, gloo), each in a
   fresh cache; the rate is windows / the seconds the command reports (encoding, from the encoders being
   ready to the merged index; imports, model construction and the precision check excluded);
   both in `--precision` (default auto, as the command: bfloat16 where the CPU has it natively);
4. with a GPU: the same on `--device cuda`, and under `--autocast float16`, with the largest token
   difference against the float32 CPU cache (the autocast parity).
Goal on the CPU: 1-process rate >= 0.9 x 1 / compute (decoding hidden behind the encoders).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"LIRIS-ACCEDE": (9_800, 10), "First Impressions": (10_000, 15)}  # clips, seconds per clip


def write_clip(path: Path, seconds: int, width: int, height: int, seed: int) -> None:
    """A moving-gradient H.264 video at 25 fps with a noisy 440 Hz AAC tone (mono, 44.1 kHz)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        sound = container.add_stream("aac", rate=44_100, layout="mono")
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        for i in range(seconds * 25):
            rgb = np.broadcast_to((x + 7 * i + rng.integers(0, 30)) % 256, (height, width, 3)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        t = np.arange(seconds * 44_100) / 44_100
        audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        for start in range(0, audio.size, 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44_100, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


def write_dataset(root: Path, clips: int, seconds: int, width: int, height: int) -> Path:
    """A LIRIS-ACCEDE folder (annotations in the real format) of synthetic clips."""
    (root / "data").mkdir(parents=True)
    (root / "annotations").mkdir()
    ranking = ["id\tname\tvalenceRank\tarousalRank\tvalenceValue\tarousalValue\tvalenceVariance\tarousalVariance"]
    sets, media = ["id\tname\tset"], []
    for i in range(clips):
        name = f"ACCEDE{i:05d}.mp4"
        write_clip(root / "data" / name, seconds, width, height, i)
        ranking.append(f"{i}\t{name}\t{i}\t{i}\t{1 + i % 4}\t{1 + i % 3}\t0.1\t0.1")
        sets.append(f"{i}\t{name}\t{i % 3}")
        media.append(
            f"<media><id>{i}</id><name>{name}</name><movie>film{i}</movie><start>0</start><end>8</end></media>"
        )
    (root / "annotations" / "ACCEDEranking.txt").write_text("\n".join(ranking) + "\n")
    (root / "annotations" / "ACCEDEsets.txt").write_text("\n".join(sets) + "\n")
    (root / "ACCEDEdescription.xml").write_text('<?xml version="1.0"?>\n<ACCEDE>' + "".join(media) + "</ACCEDE>\n")
    return root


def compute_and_decode(
    root: Path, config_path: Path, batch: int, device: str, precision: str = "float32"
) -> tuple[float, float, int]:
    """(encoder ms per window, decode ms per window, windows) measured in this process. The model is built
    outside inference_mode, as extraction builds it: weights made inside have no version counter, so the
    folded trunk would be folded and packed again on every call."""
    from sec2sec.config import load_config
    from sec2sec.model import Sec2Sec
    from sec2sec.offline.datasets import read_dataset
    from sec2sec.offline.decoding import ClipReader
    from sec2sec.offline.extract import encoder_config
    from sec2sec.precision import resolve_precision, set_precision

    config = load_config(config_path).model
    records = read_dataset("liris", root)
    reader = ClipReader(records, config)
    started = time.perf_counter()
    clips = [reader[i] for i in range(len(records))]
    decode_s = time.perf_counter() - started
    windows = sum(c.length for c in clips)
    model = Sec2Sec(encoder_config(config)).eval().to(device)
    set_precision(model, resolve_precision(precision, torch.device(device)))
    frames = torch.cat([c.frames[: c.length] for c in clips])[:batch].to(device)
    audio = torch.cat([c.audio[: c.length] for c in clips])[:batch].to(device)
    times = []
    for _ in range(4):  # the first is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            model.encode(frames, audio)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) / len(frames))
    return statistics.median(times[1:]) * 1000, decode_s / windows * 1000, windows


def run_extract(root: Path, out: Path, config: Path, processes: int, args: argparse.Namespace, *extra: str) -> float:
    """`sec2sec extract` (under torchrun when processes > 1) -> windows per second as it reports them."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "sec2sec", "extract", "--dataset", "liris", "--root", str(root)]
    command += ["--out", str(out), "--config", str(config), "--dtype", "float32", "--batch", str(args.batch)]
    command += ["--workers", str(args.workers), "--precision", args.precision, *extra]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"extract failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    found = re.search(r"\((\d+) windows[^)]*\) in ([\d.]+) s", result.stdout.replace("\n", " "))
    if found is None:
        raise SystemExit(f"no summary line in the output of extract:\n{result.stdout[-2000:]}")
    return int(found.group(1)) / max(float(found.group(2)), 1e-9)


def largest_difference(a: Path, b: Path) -> float:
    """Largest |token difference| between two caches of the same clips, relative to the largest token."""
    from sec2sec.offline.features import load_features, read_index

    ia, ib = read_index(a), read_index(b)
    ids = list(ia.clips)
    fa, fb = load_features(a, ia, ids), load_features(b, ib, ids)
    worst = 0.0
    for x, y in ((fa.video, fb.video), (fa.audio, fb.audio)):
        worst = max(worst, float((x.float() - y.float()).abs().max() / x.float().abs().max()))
    return worst


def projection(rate: float) -> str:
    parts = [f"{name} {clips * seconds / rate / 3600:.1f} h" for name, (clips, seconds) in DATASETS.items()]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the synthetic clips")
    parser.add_argument("--config", default="default", help="shipped config name or TOML file")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts for the CPU runs")
    parser.add_argument("--batch", type=int, default=8, help="windows per encoder call")
    parser.add_argument("--workers", type=int, default=1, help="decoding workers per process")
    parser.add_argument(
        "--precision", default="auto", help="the encoders' precision on the CPU (auto, float32, bfloat16)"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    from sec2sec.weights import PretrainedWeightsMissing

    warnings.simplefilter("ignore", PretrainedWeightsMissing)  # random weights cost the same; extract says so
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "liris", args.clips, args.seconds, width, height)
        config = Path(args.config)
        compute_ms, decode_ms, windows = compute_and_decode(root, config, args.batch, "cpu", args.precision)
        ideal = 1000 / compute_ms
        print(
            f"extract throughput: {args.clips} clips x {args.seconds} s at {args.size}, {windows} windows, "
            f"config {config.name}, batch {args.batch}, {args.workers} decode worker(s) per process, "
            f"{torch.get_num_threads()} torch threads, --precision {args.precision}"
        )
        print(f"cpu encoders: {compute_ms:.1f} ms per window (1 / compute = {ideal:.2f} windows/s)")
        print(
            f"cpu decoding: {decode_ms:.1f} ms per window in one worker = {decode_ms / compute_ms:.0%} of the "
            f"encoders' compute ({'can be hidden' if decode_ms < compute_ms else 'cannot be hidden'} by one worker)"
        )
        for n in (int(p) for p in args.processes.split(",")):
            rate = run_extract(root, Path(tmp) / f"cpu{n}", config, n, args, "--device", "cpu")
            goal = f", {rate / ideal:.2f} x 1/compute (goal >= 0.90: {'met' if rate >= 0.9 * ideal else 'NOT met'})"
            print(f"cpu, {n} process(es): {rate:.2f} windows/s{goal if n == 1 else ''}; projected {projection(rate)}")
        if not cuda:
            print("cuda: no GPU here, not measured")
            return
        gpu_ms, _, _ = compute_and_decode(root, config, args.batch, "cuda")
        print(f"cuda encoders: {gpu_ms:.2f} ms per window (1 / compute = {1000 / gpu_ms:.1f} windows/s)")
        f32 = ("--precision", "float32")  # after run_extract's own --precision: the last one counts
        for name, extra in (("float32", f32), ("autocast float16", (*f32, "--autocast", "float16"))):
            out = Path(tmp) / f"cuda-{name.split()[-1]}"
            rate = run_extract(root, out, config, 1, args, "--device", "cuda", *extra)
            parity = largest_difference(Path(tmp) / "cpu1", out) if (Path(tmp) / "cpu1").is_dir() else float("nan")
            print(
                f"cuda {name}: {rate:.1f} windows/s, largest token difference vs the cpu cache "
                f"(--precision {args.precision}) {parity:.2e} "
                f"(relative to the largest token); projected {projection(rate)}"
            )


if __name__ == "__main__":
    main()
