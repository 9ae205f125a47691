"""Device names, as every command's `--device` takes them, -> torch.device (one rule for live and offline).

torch is imported when a name is resolved, so the command-line parsers can use DEVICE_HELP without it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N"


def device_name(name: str) -> str:
    """`name` if it names a device at all (whether that GPU exists is resolve_device's question), else ValueError."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"--device {name!r} is not allowed; use {DEVICE_HELP}")
    return name


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str) -> torch.device:
    """auto -> the current CUDA GPU (cuda:0 unless changed) when there is one, else the CPU; cuda -> that
    GPU; cuda:N -> GPU N. A name that is not a device, or a GPU this machine does not have, is a ValueError
    naming the fix."""
    import torch

    device_name(name)
    count = cuda_count()
    if name == "cpu" or (name == "auto" and count == 0):
        return torch.device("cpu")
    if count == 0:
        raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
    if name in ("auto", "cuda"):
        return torch.device("cuda", torch.cuda.current_device())
    index = int(name.split(":")[1])
    if index >= count:
        raise ValueError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def torch_threads(requested: int = 0, processes: int = 1) -> int:
    """The torch CPU thread count, one rule for every command: `requested` when given (> 0), else the cores this
    process may run on shared among the `processes` of one machine (torchrun's local world), at least 1. One
    thread per core: capture and decoding threads mostly wait, and more threads than cores only contend."""
    import os

    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, processes))
