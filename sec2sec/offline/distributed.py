"""Devices and torchrun for the offline commands: `--device`, the process group, ranks, and the DDP wrapper.

One process: nothing here starts anything; `context()` says rank 0 of 1. Under
`torchrun --nproc_per_node N -m sec2sec extract|train|evaluate|compare ...` (RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE in the environment) `session()` joins the process group: NCCL when the device is a GPU,
gloo on the CPU. Each process then takes the GPU of its LOCAL_RANK (`--device cuda` or `auto`), or on the CPU
`cores // LOCAL_WORLD_SIZE` torch threads (at least 1), so N processes never fight over the same cores.
A failing rank ends the whole run: torchrun stops the others. A rank that hangs ends it too: every collective
waits at most `--collective-timeout` minutes (default 30), and where ranks legitimately wait for each other for
long (extraction's uneven shares) they wait on each other's progress (`Heartbeat`), not on a collective, so the
bound is "no progress for that long", never "finished that much earlier". Either way the rank that gives up
raises `RankStalled` (one line, exit 1) and torchrun stops the rest.
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from sec2sec.devices import cuda_count, device_name, torch_threads
from sec2sec.devices import resolve_device as plain_device

if TYPE_CHECKING:
    from sec2sec.model import Sec2Sec

T = TypeVar("T")
COLLECTIVE_TIMEOUT_MIN = 30.0  # one collective (or one rank's progress, see Heartbeat) waits at most this long
POLL_S = 0.5


class RankStalled(RuntimeError):
    """A rank waited longer than its bound for another rank, or for its decoder; the message is one line."""


def add_collective_timeout(parser: Any) -> None:
    """`--collective-timeout MIN` for a command that torchrun may start."""
    parser.add_argument(
        "--collective-timeout",
        type=float,
        default=COLLECTIVE_TIMEOUT_MIN,
        metavar="MIN",
        help="under torchrun: minutes a rank waits for another (at a collective, or for its progress) before the "
        "run fails as hung",
    )


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
    timeout_s: float = COLLECTIVE_TIMEOUT_MIN * 60

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


def context(device: str | torch.device = "cpu", timeout_s: float = COLLECTIVE_TIMEOUT_MIN * 60) -> Dist:
    """The rank, world size and device of this process (rank 0 of 1 outside torchrun)."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if tdist.is_available() and tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), dev, timeout_s)
    return Dist(0, 1, dev, timeout_s)


def rank_and_world() -> tuple[int, int]:
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def _timed_out(exc: BaseException) -> bool:
    """Whether `exc` is a collective that gave up waiting (gloo and NCCL word it differently)."""
    text = str(exc).lower()
    return isinstance(exc, getattr(tdist, "DistError", ())) or "timed out" in text or "timeout" in text


@contextmanager
def session(device: str, timeout_min: float = COLLECTIVE_TIMEOUT_MIN) -> Iterator[Dist]:
    """Join torchrun's process group for one command (when launched by it) and leave it afterwards. A collective
    that waits more than `timeout_min` minutes for another rank raises RankStalled naming the bound."""
    if not timeout_min > 0:
        raise ValueError(f"--collective-timeout {timeout_min}: give minutes > 0 (default {COLLECTIVE_TIMEOUT_MIN:g})")
    dev = resolve_device(device)
    started = False
    if launched() and not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        else:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            torch.set_num_threads(torch_threads(processes=local_world))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
        started = True
    dist = context(dev, timeout_min * 60)
    try:
        yield dist
    except RuntimeError as exc:
        if dist.world == 1 or isinstance(exc, RankStalled) or not _timed_out(exc):
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise RankStalled(
            f"rank {dist.rank} of {dist.world}: another rank did not answer within --collective-timeout "
            f"{timeout_min:g} min (it hung or died); the run is stopped. Raise --collective-timeout if the "
            f"ranks are only slow ({type(exc).__name__}: {first})"
        ) from None
    finally:
        if started:
            tdist.destroy_process_group()


class Heartbeat:
    """Progress files in a folder every rank shares (`.progress.rank<r>`), so ranks that finished their share
    wait for the others by progress: the wait fails (RankStalled) only when some rank's file has not changed
    for `stall_s` seconds (judged on this rank's own clock, so hosts' clocks need not agree)."""

    def __init__(self, folder: Path, rank: int, world: int, stall_s: float) -> None:
        self.folder, self.rank, self.world, self.stall_s = Path(folder), rank, world, stall_s

    def _path(self, rank: int) -> Path:
        return self.folder / f".progress.rank{rank}"

    def beat(self, note: str) -> None:
        """Say this rank is alive and where it is (`note` changes with each step: e.g. clips done)."""
        if self.world > 1:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".progress.rank{self.rank}.tmp"  # one per rank: ranks write at once
            tmp.write_text(note, encoding="utf-8")
            tmp.replace(self._path(self.rank))

    def wait_all(self) -> None:
        """Mark this rank done, then wait until every rank is done, or raise RankStalled for one that stopped."""
        if self.world == 1:
            return
        self.beat("done")
        seen: dict[int, tuple[str, float]] = {}
        while True:
            now, pending = time.monotonic(), []
            for r in range(self.world):
                try:
                    note = self._path(r).read_text(encoding="utf-8")
                except OSError:
                    note = ""
                if note == "done":
                    continue
                pending.append(r)
                if r not in seen or seen[r][0] != note:
                    seen[r] = (note, now)
                elif now - seen[r][1] > self.stall_s:
                    raise RankStalled(
                        f"rank {self.rank} of {self.world}: rank {r} made no progress for {self.stall_s / 60:g} min "
                        f"(last: {note or 'nothing yet'}); it hung or died, so the run is stopped. Raise "
                        "--collective-timeout if one step of it can take that long"
                    )
            if not pending:
                return
            time.sleep(POLL_S)

    def remove(self) -> None:
        self._path(self.rank).unlink(missing_ok=True)


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


Outputs = list[tuple[torch.Tensor, torch.Tensor]]  # (rows, probabilities) per batch


def reduce_epoch(total: float, seen: int, outputs: Outputs) -> tuple[float, int, Outputs]:
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

    def __init__(self, model: Sec2Sec) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.forward_tokens(*args, **kwargs)


def _no_buffer_sync() -> dict[str, Any]:
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

    def __init__(self, model: Sec2Sec, device: torch.device) -> None:
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


def unwrap(model: Sec2Sec | DataParallelModel) -> Sec2Sec:
    """The plain model behind a DataParallelModel (for forward passes outside the training step)."""
    return model._model if isinstance(model, DataParallelModel) else model
