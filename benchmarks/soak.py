"""Soak test: is memory bounded by configuration, not by the input's length or resolution?

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--clock virtual|realtime] [--sizes 640x360 1920x1080]

Generates one clip per size with the same content (the demo face, scaled; a voiced tone; `--fps` frames a
second), replays each through `sec2sec-live` as a subprocess (default config, no UI, CSV), samples the child's
resident memory every `--sample-s` seconds, and prints, per size: peak RSS, RSS after warm-up (when the first
row is written), growth per hour of media (least-squares slope of RSS over the windows done, after warm-up;
needs 10 minutes of media), windows, drops and
CPU-seconds per second of video (the child's user + system time over the media duration), each beside its goal:
growth < 50 MB/h; peak <= RSS after warm-up + 200 MB; the largest size's peak within 100 MB of the smallest's;
its CPU per second of video <= 1.1x the smallest's; with --clock realtime, zero drops. `--minutes 10 --clock
realtime` checks the live path. Clips are cached in --cache (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.demo_clip import HEIGHT, RATE, WIDTH, face, voice

LOOP_SECONDS = 8  # the content repeats every 8 s (rendered once, encoded for the whole duration)
PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_soak_clip(path: Path, width: int, height: int, seconds: int, fps: int) -> Path:
    """An H.264 + AAC mp4 of `seconds` s at width x height: the demo face scaled up, a voiced tone."""
    audio = voice(LOOP_SECONDS)
    loop = []
    for i in range(LOOP_SECONDS * fps):
        chunk = audio[i * RATE // fps : (i + 1) * RATE // fps]
        small = face(i / fps, min(1.0, float(np.sqrt(np.mean(chunk**2))) * 5), LOOP_SECONDS)
        loop.append(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono")
        for second in range(seconds):
            for k in range(fps):
                frame = av.VideoFrame.from_ndarray(loop[(second * fps + k) % len(loop)], format="rgb24")
                frame.pts, frame.time_base = second * fps + k, Fraction(1, fps)
                out.mux(video.encode(frame))
            part = audio[(second % LOOP_SECONDS) * RATE : (second % LOOP_SECONDS + 1) * RATE]
            piece = av.AudioFrame.from_ndarray(part[None], format="flt", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = RATE, second * RATE, Fraction(1, RATE)
            out.mux(sound.encode(piece))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return path


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Soak:
    size: str
    seconds: int
    samples: list[tuple[int, float]]  # (windows done, RSS MB), after the first row
    warm_rss: float
    cpu: float  # CPU seconds from the first row to the last
    windows: int
    dropped: int

    @property
    def cpu_per_second(self) -> float:
        """CPU seconds per second of video after the warm-up (each window after the first is one second)."""
        return self.cpu / max(1, self.windows - 1)

    @property
    def peak(self) -> float:
        return max(rss for _, rss in self.samples)

    @property
    def growth_per_hour(self) -> float | None:
        """Least-squares slope of RSS over windows done (one window = one second of media), in MB per hour
        of media; None for runs under 10 minutes of media (too short to extrapolate to an hour)."""
        if len(self.samples) < 5 or self.samples[-1][0] - self.samples[0][0] < 600:
            return None
        windows, rss = np.array(self.samples).T
        return float(np.polyfit(windows, rss, 1)[0] * 3600)


def soak(clip: Path, size: str, seconds: int, clock: str, sample_s: float, extra: list[str]) -> Soak:
    """Replay `clip` through sec2sec-live in a child process and watch its memory and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "soak.csv"
        cmd = [sys.executable, "-m", "monitor.cli", "--replay", str(clip), "--clock", clock, "--no-ui"]
        child = subprocess.Popen([*cmd, "--csv", str(csv), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples, warm, rows, cpu, last_sample, rss = [], None, 0, (0.0, 0.0), 0.0, 0.0
        while child.poll() is None:
            try:
                rss, now_cpu = rss_mb(child.pid), cpu_s(child.pid)
                rows = csv.read_text().count("\n") - 1 if csv.exists() else 0
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            now = time.monotonic()
            if warm is None and rows >= 1:
                warm, cpu = (now, rss), (now_cpu, now_cpu)  # the first row is written: warm-up is over
            if warm is not None and rows >= 1:
                cpu = (cpu[0], now_cpu)  # the last reading while rows were still being written
                if not samples or now >= last_sample + sample_s:
                    samples.append((rows, rss))
                    last_sample = now
            time.sleep(0.2)
        stderr = child.communicate()[1].decode(errors="replace")
        if child.returncode != 0:
            raise SystemExit(f"sec2sec-live exited with {child.returncode}: {stderr.strip().splitlines()[-1:]}")
        summary = json.loads(Path(str(csv) + ".json").read_text())["summary"]
    windows, dropped = summary["windows"], summary["dropped_total"]
    if warm is None:  # a run so short that it ended between two looks: one sample, no CPU figure
        warm, samples = (0.0, rss), [(windows, rss)]
    return Soak(size, seconds, samples, warm[1], cpu[1] - cpu[0], windows, dropped)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(results: list[Soak], clock: str) -> None:
    header = ("size", "minutes", "peak MB", "warm MB", "MB/h", "windows", "drops", "CPU s/s")
    print(" ".join(f"{h:>10}" for h in header))
    for r in results:
        growth = "n/a" if r.growth_per_hour is None else f"{r.growth_per_hour:.1f}"
        cells = (r.size, f"{r.seconds / 60:.1f}", f"{r.peak:.0f}", f"{r.warm_rss:.0f}", growth)
        print(" ".join(f"{c:>10}" for c in (*cells, r.windows, r.dropped, f"{r.cpu_per_second:.3f}")))
    print("goals:")
    for r in results:
        if r.growth_per_hour is None:
            print(f"  {r.size}: growth per hour: not measured (needs a run of 10 minutes or more)")
        else:
            print(f"  {r.size}: growth {r.growth_per_hour:.1f} MB/h < 50: {verdict(r.growth_per_hour < 50)}")
        headroom = r.peak - r.warm_rss
        print(f"  {r.size}: peak - RSS after warm-up = {headroom:.0f} MB <= 200: {verdict(headroom <= 200)}")
        if clock == "realtime":
            print(f"  {r.size}: drops {r.dropped} == 0: {verdict(r.dropped == 0)}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        gap = large.peak - small.peak
        print(f"  peak {large.size} - peak {small.size} = {gap:.0f} MB <= 100: {verdict(gap <= 100)}")
        what = f"CPU per second of video, {large.size} / {small.size}"
        if small.cpu_per_second > 0:
            ratio = large.cpu_per_second / small.cpu_per_second
            print(f"  {what} = {ratio:.2f} <= 1.1: {verdict(ratio <= 1.1)}")
        else:
            print(f"  {what}: not measured (the run ended before a second look)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--clock", choices=("virtual", "realtime", "offline"), default="virtual")
    parser.add_argument("--sizes", nargs="+", default=["640x360", "1920x1080"])
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between RSS samples")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the generated clips in")
    parser.add_argument("--config", default=None, help="model config for sec2sec-live (default: built-in)")
    args = parser.parse_args(argv)
    seconds = max(1, round(args.minutes * 60))
    extra = ["--config", args.config] if args.config else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            clip = folder / f"soak_{size}_{seconds}s_{args.fps}fps.mp4"
            if not clip.exists():
                write_soak_clip(clip, width, height, seconds, args.fps)
            results.append(soak(clip, size, seconds, args.clock, args.sample_s, extra))
    print(f"soak: {args.clock} clock, {args.fps} fps, content {WIDTH}x{HEIGHT} scaled to each size")
    report(results, args.clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
