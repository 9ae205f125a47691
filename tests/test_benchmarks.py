"""Smoke runs of the benchmarks with tiny arguments, so that none of them can rot unseen: each must run to the
end and print its figures (the figures themselves are measured by running the benchmarks for real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sec2sec.config import SHIPPED_CONFIGS
from sec2sec.devices import DEVICE_HELP

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_soak_prints_every_figure_beside_its_goal(small: Path, tmp_path: Path) -> None:
    args = ["--minutes", "0.05", "--sizes", "160x90", "320x180", "--fps", "10", "--sample-s", "0.5"]
    result = subprocess.run(
        [sys.executable, "benchmarks/soak.py", *args, "--config", str(small), "--cache", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "soak: virtual clock, 10 fps, content 320x240 scaled to each size"
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert set(rows) == {"160x90", "320x180"} and all(row[5] in ("3", "4") and row[6] == "0" for row in rows.values())
    assert float(rows["160x90"][2]) > 100  # peak RSS in MB of a process that loaded torch
    assert "peak 320x180 - peak 160x90 =" in result.stdout
    assert "CPU per second of video, 320x180 / 160x90" in result.stdout
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["soak_160x90_3s_10fps.mp4", "soak_320x180_3s_10fps.mp4"]


def _run_benchmark(script: str, *args: str, timeout: int = 600) -> list[str]:
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _epoch_lines(*args: str, processes: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "benchmarks/train_epoch.py"]
    tiny = ["--clips", "12", "--seconds", "2", "--batch-size", "4", "--device", "cpu"]
    result = subprocess.run(
        [*command, *tiny, *args], capture_output=True, text=True, timeout=600, cwd=ROOT, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FutureWarning" not in result.stderr  # e.g. DDP's deprecated broadcast_buffers, once per rank
    return result.stdout.splitlines()


@pytest.mark.slow
def test_train_epoch_prints_its_figures() -> None:
    lines = _epoch_lines()
    assert lines[0].startswith("one epoch: 12 clips x 2 s, batch 4, 1 process on cpu, ")
    figures = {line.split(":")[0]: line.split(":")[1].split()[0] for line in lines[1:4]}
    assert set(figures) == {"seconds per epoch", "clips/s", "peak memory (max RSS)"}
    assert float(figures["seconds per epoch"]) > 0 and float(figures["clips/s"]) > 0
    loss = float(lines[4].split()[2])
    assert 0.3 < loss < 1.5  # BCE on random labels, one epoch from a fresh model
    assert lines[6].startswith("fp32 matmul 2048^3 after the epoch: ") and float(lines[6].split()[6]) > 0


@pytest.mark.slow
def test_train_epoch_under_torchrun_trains_the_same_epoch(tmp_path: Path) -> None:
    """2 gloo processes, each its share of every global batch through DDP (as `torchrun -m sec2sec train`):
    without dropout, the epoch's mean training loss is the one of 1 process."""
    config = tmp_path / "no_dropout.toml"
    text = (SHIPPED_CONFIGS / "default.toml").read_text()
    for key, value in (("dropout", "0.1"), ("modality_dropout", "0.3")):
        assert f"\n{key} = {value}" in text, f"the shipped default.toml no longer sets {key} = {value}"
        text = text.replace(f"\n{key} = {value}", f"\n{key} = 0.0")
    config.write_text(text)
    one = _epoch_lines("--config", str(config))
    two = _epoch_lines("--config", str(config), processes=2)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # torchrun's ranks share the cores (distributed.session)
    plural = "s" if threads > 1 else ""
    assert two[0] == f"one epoch: 12 clips x 2 s, batch 4, 2 processes on cpu, {threads} torch thread{plural} each"
    assert two[4].startswith("train loss ") and abs(float(two[4].split()[2]) - float(one[4].split()[2])) <= 2e-4


def test_train_epoch_refuses_an_unknown_device_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/train_epoch.py", "--clips", "4", "--device", "tpu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"train_epoch: --device 'tpu' is not allowed; use {DEVICE_HELP}"


@pytest.mark.requires_cuda
def test_train_epoch_on_cuda_reports_gpu_memory() -> None:
    lines = _run_benchmark("train_epoch.py", "--clips", "12", "--seconds", "2", "--batch-size", "4", "--device", "cuda")
    assert lines[0] == "one epoch: 12 clips x 2 s, batch 4, 1 process on cuda:0"
    assert lines[3].startswith("peak GPU memory (max allocated): ") and float(lines[3].split()[5]) > 0
    assert lines[6].startswith("fp32 matmul 2048^3 after the epoch: ") and lines[6].split()[9] == "cuda:0"


@pytest.mark.slow
def test_window_compute_prints_each_stage_against_the_matmul_peak() -> None:
    lines = _run_benchmark("window_compute.py", "--no-compile", "--default-only", "--reps", "1", "--threads", "1")
    assert lines[0].startswith("torch ") and "fp32 matmul 2048^3:" in lines[0]
    rows = [line for line in lines if line.startswith("default (8 frames, r2plus1d_18)")]
    stages = [" ".join(row.split()[6:-4]) if "=" not in row else "total" for row in rows]
    assert len(rows) == 7 and all(" eager " in row for row in rows), rows
    video = next(row for row in rows if "video encoder" in row).split()
    assert float(video[-4]) > 0 and 30 < float(video[-3]) < 60 and video[-1].endswith("%"), video  # ~40.5 GFLOP
    assert stages[-1] == "total" and lines[-1].startswith("default path (eager) video encoder: ")
    assert lines[-1].endswith("% of the matmul throughput (goal >= 75%)")


@pytest.mark.slow
def test_pipeline_latency_prints_cpu_per_second_and_latency(small: Path) -> None:
    args = ["--config", str(small), "--no-compile", "--seconds", "3", "--sizes", "160x90", "--clocks", "offline"]
    lines = _run_benchmark("pipeline_latency.py", *args, "--threads", "1")
    cpu = next(line for line in lines if line.strip().startswith("160x90")).split()
    assert cpu[1] == "eager" and float(cpu[2]) > 0 and cpu[3] == "CPU-s/s"
    row = next(line for line in lines if line.split()[:2] == ["1", "offline"]).split()
    assert int(row[2]) >= 3 and int(row[3]) == 0 and float(row[4]) > 0 and float(row[6]) > 0
    assert lines[-1].startswith("peak RSS of the largest sec2sec-live run")


@pytest.mark.slow
def test_extract_throughput_prints_rates_and_projected_hours(small: Path) -> None:
    args = ["--clips", "2", "--seconds", "2", "--size", "160x120", "--config", str(small), "--processes", "1"]
    out = "\n".join(_run_benchmark("extract_throughput.py", *args))
    assert "windows/s" in out and "LIRIS-ACCEDE" in out and "First Impressions" in out, out


@pytest.mark.slow
def test_fusion_binding_prints_the_three_accuracies() -> None:
    lines = _run_benchmark("fusion_binding.py", "--clips", "12", "--epochs", "1", "--workers", "0")
    assert lines[0] == "binding task: 12 clips of 1 s, 4 slots, seed 0, 1 epochs max"
    rows = {line.split("(")[0].strip(): line.strip() for line in lines[2:]}
    assert set(rows) == {"SA-CA", "SA-SA", "late fusion"}, lines
    for name, mode in (("SA-CA", "co"), ("SA-SA", "self"), ("late fusion", "concat")):
        accuracy = float(rows[name].split("test accuracy ")[1].split(",")[0])
        assert rows[name].startswith(f"{name} ({mode})") and 0.0 <= accuracy <= 1.0
