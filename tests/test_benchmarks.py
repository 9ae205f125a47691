"""Smoke runs of the benchmarks with tiny arguments, so that none of them can rot unseen: each must run to the
end and print its figures (the figures themselves are measured by running the benchmarks for real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sec2sec.config import SHIPPED_CONFIGS
from sec2sec.devices import DEVICE_HELP
from sec2sec.precision import bf16_native

ROOT = Path(__file__).resolve().parents[1]


def _ratio_agrees(numerator: float, denominator: float, printed: str, half_step: float) -> bool:
    """Whether a printed ratio ("0.63x") can come from the unrounded values behind two printed figures, each within
    `half_step` of what was printed (the benchmark divides before rounding, so the printed figures' own quotient may
    round the other way)."""
    low = (numerator - half_step) / (denominator + half_step)
    high = (numerator + half_step) / (denominator - half_step)
    return printed.endswith("x") and low - 0.005 <= float(printed.removesuffix("x")) <= high + 0.005


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
def test_train_epoch_compares_bfloat16_autocast_with_float32() -> None:
    """Training runs under bfloat16 autocast (fusion, temporal model, heads, the epoch's metrics)."""
    args = ["--clips", "8", "--seconds", "2", "--batch-size", "4", "--device", "cpu", "--compare-autocast", "1"]
    lines = _run_benchmark("train_epoch.py", *args)
    assert lines[0].startswith("epochs of 8 clips x 2 s on cpu, ") and lines[1] == "alternating, median of 1 each:"
    words = lines[2].split()
    fp32, bf16 = float(words[1]), float(words[5])
    ratio = lines[2].split("autocast takes ")[1].split(" float32")[0]  # "0.84x", from the unrounded times
    assert fp32 > 0 and bf16 > 0 and _ratio_agrees(bf16, fp32, ratio, 0.005) and lines[2].endswith("x float32's time")
    losses = lines[3].split()
    assert 0.3 < float(losses[3].rstrip(",")) < 1.5 and 0.3 < float(losses[6]) < 1.5, lines[3]


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
def test_window_compute_prints_both_precisions_against_the_matmul_peaks() -> None:
    lines = _run_benchmark("window_compute.py", "--default-only", "--reps", "1", "--threads", "1")
    assert ", torch " in lines[0] and "1 threads; native bfloat16: " in lines[0]
    assert lines[1].startswith("matmul 2048^3: float32 ") and "GFLOP/s, bfloat16 " in lines[1]
    header = "variant stage float32 ms bfloat16 ms bf16/fp32 GFLOP fp32 of matmul bf16 of matmul"
    assert lines[3].split() == header.split()
    rows = [line for line in lines if line.startswith("default (8 frames, r2plus1d_18)")]
    assert len(rows) == 6, rows
    video = next(row for row in rows if "video encoder" in row).split()
    fp32, bf16, ratio, gflop = float(video[-6]), float(video[-5]), video[-4], float(video[-3])
    assert fp32 > 0 and bf16 > 0 and _ratio_agrees(bf16, fp32, ratio, 0.05) and 30 < gflop < 60  # ~40.5 GFLOP
    assert video[-2].endswith("%") and video[-1].endswith("%")
    final = lines[-2].split()
    verdicts = (": yes", ": NO") if bf16_native(torch.device("cpu")) else (": n/a (bfloat16 emulated here)",)
    assert lines[-2].startswith("default video encoder: bfloat16 takes ") and lines[-2].endswith(verdicts)
    assert _ratio_agrees(bf16, fp32, final[5], 0.05)
    assert lines[-1].startswith("default audio encoder: bfloat16 takes ")


@pytest.mark.slow
def test_window_compute_prints_markdown() -> None:
    lines = _run_benchmark("window_compute.py", "--default-only", "--reps", "0", "--threads", "1", "--markdown")
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| variant | stage | float32 ms | bfloat16 ms | bf16/fp32 | GFLOP |")
    assert table[1] == "|---|---|---|---|---|---|---|---|" and len(table) == 8
    assert all(row.count("|") == 9 for row in table)


@pytest.mark.slow
def test_pipeline_latency_prints_cpu_per_second_and_latency(small: Path) -> None:
    args = ["--config", str(small), "--seconds", "3", "--sizes", "160x90", "--clocks", "offline", "--skip-startup"]
    lines = _run_benchmark("pipeline_latency.py", *args, "--output-windows", "0", "--threads", "1")
    header = next(line for line in lines if line.startswith("size")).split()
    assert header[1:4] == ["default", "(auto:", header[3]] and header[3] in ("float32)", "bfloat16)")
    cpu = next(line for line in lines if line.startswith("160x90")).split()
    default, fp32, ratio = float(cpu[1]), float(cpu[2]), cpu[3]
    assert default > 0 and fp32 > 0 and _ratio_agrees(default, fp32, ratio, 0.0005)
    assert int(cpu[4]) >= 3 and cpu[5] == "-"
    row = next(line for line in lines if line.split()[:2] == ["1", "offline"]).split()
    assert int(row[2]) >= 3 and int(row[3]) == 0 and float(row[4]) > 0 and float(row[6]) > 0
    assert lines[-1].startswith("peak RSS of the largest sec2sec-live run")


@pytest.mark.slow
def test_pipeline_latency_prints_start_up_as_markdown(small: Path) -> None:
    args = ["--config", str(small), "--seconds", "2", "--skip-cpu", "--clocks", "offline", "--markdown"]
    args += ["--output-windows", "0"]
    lines = _run_benchmark("pipeline_latency.py", *args, "--startup-runs", "1", "--threads", "1")
    start = lines.index("start-up to the first estimate (s)")
    assert lines[start + 1] == "" and lines[start + 6] == ""  # blank lines around the table
    assert lines[start + 2] == "| path | first run | later runs (median of 1) | goal first <= later + 1 s |"
    for row in lines[start + 4 : start + 6]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] in ("float32",) or cells[0].startswith("default (auto: ")
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3] in ("yes", "NO")


@pytest.mark.slow
def test_output_latency_prints_each_output_beside_the_csv() -> None:
    lines = _run_benchmark("output_latency.py", "--windows", "20", "--pace-ms", "5")
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ") and "us" not in line}
    assert list(rows)[:3] == ["csv", "zmq", "lsl"], lines
    for name in ("csv", "zmq", "lsl"):
        if rows[name][0] == "skipped:":  # LSL without a network namespace
            assert name == "lsl" and "unshare" in " ".join(rows[name])
            continue
        write_p50, write_p99, delivered_p50, delivered_p99 = map(float, rows[name][:4])
        assert 0 < write_p50 <= write_p99 and 0 < delivered_p50 <= delivered_p99 and rows[name][4] == "20/20"


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


@pytest.mark.slow
def test_face_framing_prints_its_cost_against_the_encoders() -> None:
    args = ["--seconds", "2", "--reps", "1", "--sizes", "320x240", "--threads", "1", "--markdown"]
    lines = _run_benchmark("face_framing.py", *args)
    assert lines[0].endswith("face framing of 30 fps video, 8 framed frames a second")
    encoders = next(line for line in lines if line.startswith("1 torch thread: one window's video + audio encoders: "))
    times = {p.split()[0]: float(p.split()[1]) for p in encoders.split("encoders: ", 1)[1].split(", ")}
    assert "float32" in times and all(ms > 0 for ms in times.values())
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| size | framing ms per s | ") and table[0].endswith(" goal <= 15% (faster) |")
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[0] == "320x240" and float(cells[1]) > 0 and cells[-1] in ("yes", "NO")
    headers = [c.strip() for c in table[0].strip("|").split("|")]
    share = float(cells[headers.index("of float32 encoders")].rstrip("%"))
    assert share == pytest.approx(100 * float(cells[1]) / times["float32"], abs=0.06)  # rounded figures
    breakdown = next(line for line in lines if line.startswith("320x240 per second of video: "))
    assert "search 0.50/s" in breakdown or "search 1.00/s" in breakdown  # t = 0 (and 2 s: the clip's end)
    assert "follow " in breakdown and "crop " in breakdown
