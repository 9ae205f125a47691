"""Devices and torchrun for the offline commands: `--device`, the process group, ranks, and the DDP wrapper.

One process: nothing here starts anything; `context()` says rank 0 of 1. Under
`torchrun --nproc_per_node N -m sec2sec extract|train|evaluate|compare ...` (RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE in the environment) `session()` joins the process group: NCCL when the device is a GPU,
gloo on the CPU. Each process then takes the GPU of its LOCAL_RANK (`--device cuda` or `auto`), or on the CPU
`cores // LOCAL_WORLD_SIZE` torch threads (at least 1), so N processes never fight over the same cores.
A failing rank ends the whole run: torchrun stops the others (no rank waits forever at a collective).
"""

from __future__ import annotations

import datetime
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from sec2sec.devices import cuda_count, device_name
from sec2sec.devices import resolve_device as plain_device

T = TypeVar("T")
# A rank that finished its share waits at the next collective for the slowest one (extraction of uneven
# clips can take hours); a rank that died ends the run through torchrun long before this.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=24)


def launched() -> bool:
    """True when this process was started by torchrun with more than one process in the run."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def resolve_device(name: str) -> torch.device:
    """`--device` -> a torch.device, or a ValueError naming the problem and the fix.

    Under torchrun `cuda` and `auto` mean this process's GPU (cuda:LOCAL_RANK); cuda:N is refused there,
    since every process would take the same GPU. Otherwise the one rule of `sec2sec.devices`.
    """
    device_name(name)
    count = cuda_count()
    if not launched() or name == "cpu" or count == 0:
        return plain_device(name)
    if name.startswith("cuda:"):
        raise ValueError(f"--device {name} under torchrun would put every process on one GPU; use --device cuda")
    local = _local_rank()
    if local >= count:
        raise ValueError(f"torchrun started more processes per node than the {count} GPU(s) here; lower it")
    return torch.device("cuda", local)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank of world, and the device it computes on."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order (picklable objects; small ones: counts, rows, predictions)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def in_turn(self, fn: Callable[[], T]) -> T:
        """`fn()` on rank 0 first, then on the others: whatever rank 0 writes (a cache, a split) is there
        before another rank reads it."""
        if self.main:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()


def context(device: str | torch.device = "cpu") -> Dist:
    """The rank, world size and device of this process (rank 0 of 1 outside torchrun)."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if tdist.is_available() and tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), dev)
    return Dist(0, 1, dev)


def rank_and_world() -> tuple[int, int]:
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


@contextmanager
def session(device: str) -> Iterator[Dist]:
    """Join torchrun's process group for one command (when launched by it) and leave it afterwards."""
    dev = resolve_device(device)
    started = False
    if launched() and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        else:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        started = True
    try:
        yield context(dev)
    finally:
        if started:
            tdist.destroy_process_group()


def share_batch(rows: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's part of one global batch, and the weight that makes DDP's gradient average the global mean.

    Rank r takes rows[r::world] (DistributedSampler's interleaving, so the union over ranks is the global
    batch). DDP averages gradients over ranks, so the rank loss (a mean over its n_r rows) is scaled by
    world * n_r / n: the average then equals the gradient of the mean over all n rows, also for a last batch
    that does not divide evenly. A rank left without rows computes one row with weight 0, so it still takes
    part in the gradient all-reduce.
    """
    rank, world = rank_and_world()
    if world == 1:
        return rows, 1.0
    mine = rows[rank::world]
    if len(mine) == 0:
        return rows[:1], 0.0
    return mine, world * len(mine) / len(rows)


def gather_rows(n: int, fn: Callable[[torch.Tensor], np.ndarray], width: int) -> np.ndarray:
    """fn(rows) -> (len(rows), width) computed over rows rank::world of 0..n-1 on each rank, gathered into
    (n, width) in row order on every rank."""
    rank, world = rank_and_world()
    rows = torch.arange(rank, n, world)
    mine = fn(rows) if len(rows) else np.zeros((0, width), dtype=np.float32)
    if world == 1:
        return mine
    parts: list[Any] = [None] * world
    tdist.all_gather_object(parts, (rows.numpy(), mine))
    out = np.zeros((n, width), dtype=mine.dtype)
    for r, values in parts:
        out[r] = values
    return out


def reduce_epoch(total: float, seen: int, outputs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple:
    """(loss sum, rows seen, [(rows, probabilities)]) of every rank -> the same sums and list on every rank."""
    _, world = rank_and_world()
    if world == 1:
        return total, seen, outputs
    parts: list[Any] = [None] * world
    tdist.all_gather_object(parts, (total, seen, [(r.cpu(), p.cpu()) for r, p in outputs]))
    return sum(p[0] for p in parts), sum(p[1] for p in parts), [o for p in parts for o in p[2]]


def features_to(features: Any, device: torch.device) -> Any:
    """A Features (cached tokens) with every tensor on `device` (the whole cache goes to the GPU once:
    LIRIS-ACCEDE at float16 is ~2.4 GB, First Impressions ~3.7 GB)."""
    if device.type == "cpu":
        return features
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(features).items()}
    return type(features)(**moved)


class _TokenForward(nn.Module):
    """`forward` = the model's `forward_tokens`, so DDP (which hooks `forward`) can wrap the cached-token path."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.forward_tokens(*args, **kwargs)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for not re-broadcasting buffers before every forward (feature statistics and frozen
    BatchNorm never change in training). torch 2.14 deprecates `broadcast_buffers` (a FutureWarning from every
    rank) for `forward_sync_buffers`, which still syncs once at start: harmless, every rank computed the same
    buffers from the same cache. Older torch only knows `broadcast_buffers`."""
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class DataParallelModel:
    """A Sec2Sec whose `forward_tokens` runs through DistributedDataParallel; every other attribute is the
    model's own, so the training step code is the same for one process and for N."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self._model = model
        self._ddp = nn.parallel.DistributedDataParallel(
            _TokenForward(model),
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # variants leave parts of the fusion block unused
            **_no_buffer_sync(),
        )

    def forward_tokens(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def unwrap(model: Any) -> Any:
    """The plain model behind a DataParallelModel (for forward passes outside the training step)."""
    return model._model if isinstance(model, DataParallelModel) else model
