"""A folder of AOTInductor packages, one per key of everything that changes the compiled code.

A package is `torch.export` of a module (batch dimension fixed at max_batch) compiled by
`torch._inductor.aoti_compile_and_package` with inductor freezing (weights folded in as constants). The cache
folder is `$SEC2SEC_CACHE/aoti` (default `~/.cache/sec2sec/aoti`) and holds, per key:
- `<name>-<key>.pt2`: the package;
- `<name>-<key>.json`: what it was built from (the `PackageSpec`), its sha256 and size, the build time. It is
  written last, so a package without it was never finished; a package is used only when this record names
  the same spec and the file's sha256 matches. Anything else (damaged, stale, foreign, half-written) is built
  again, never trusted.
- `<name>-<key>.eager.pt`: the eager module's output on the fixed warm-up input, with the spec it belongs to.
  Every start compares the package's output with it (`sec2sec.compiled`); it is computed once, when first
  missing (an eager forward costs about half a second of start-up), and a reference that is unreadable or
  names another spec is computed again. It depends only on the spec (weights sha256, config, torch, device,
  CPU capability, threads), never on the package, so a damaged package still fails the comparison.
- Loading a package touches its record, so `prune` (`sec2sec compile --prune DAYS`) can remove the packages no
  run has loaded for that many days (each is ~50-130 MB), with their references, and leftovers of
  interrupted builds (temporary files, a package or reference without its record) older than a day.
- `<name>-<key>.lock`: held (flock) while one process builds, so concurrent first runs compile once; the
  others wait, then load. Every file is written under a temporary name and renamed into place, so even
  without the lock (a file system without flock) no reader ever sees half a package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sec2sec.encoders import TrunkEncoder
from sec2sec.weights import sha256_of

# Part of every key: bumped when the traced graph of an encoder changes for the same config (2: R(2+1)D's
# convolutions as 2D ones on channels-last views; 3: BatchNorm folded into the convolutions; 4: the batch
# fixed at max_batch, where 3 had it dynamic in 1..max_batch and ran slower), so packages built from an old
# graph are rebuilt.
FORMAT_VERSION = 4
ENV_CACHE = "SEC2SEC_CACHE"


def cache_root() -> Path:
    """`$SEC2SEC_CACHE`, or `~/.cache/sec2sec`."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "sec2sec")


def packages_dir() -> Path:
    return cache_root() / "aoti"


def device_label(device: torch.device) -> str:
    """The device as far as compiled code cares: "cpu", or the GPU's name and compute capability."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda {torch.cuda.get_device_name(index)} sm_{major}{minor}"
    return device.type


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (identity of a set of weights)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class PackageSpec:
    """Everything that changes the compiled code of one module. `item_shape` is one input without the batch
    dimension (float32); `config` the module's own settings (a JSON-able dict)."""

    name: str
    config: dict[str, Any]
    weights_sha256: str
    item_shape: tuple[int, ...]
    max_batch: int
    device: str
    cpu_capability: str
    torch_version: str
    threads: int  # inductor writes torch.get_num_threads() into its CPU loops (`omp parallel num_threads(N)`)

    def key(self) -> str:
        payload = json.dumps({"format": FORMAT_VERSION, **self.as_json()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def as_json(self) -> dict[str, Any]:
        """The spec as its JSON record reads back (lists for tuples)."""
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    def stem(self) -> str:
        return f"{self.name}-{self.key()}"


def spec_for(
    name: str, module: nn.Module, config: dict[str, Any], item_shape: tuple[int, ...], max_batch: int
) -> PackageSpec:
    """The spec of `module` as it is now: its weights, the device its parameters are on, torch's thread count."""
    device = next(module.parameters()).device
    return PackageSpec(
        name=name,
        config=config,
        weights_sha256=tensor_digest(module.state_dict()),
        item_shape=tuple(int(s) for s in item_shape),
        max_batch=int(max_batch),
        device=device_label(device),
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
    )


def package_problem(spec: PackageSpec, folder: Path) -> str | None:
    """None when the package for `spec` is present, finished and whole; else what is wrong, in a few words."""
    package, record = folder / f"{spec.stem()}.pt2", folder / f"{spec.stem()}.json"
    if not record.is_file():
        return "not built yet" if not package.exists() else "unfinished (no record beside it)"
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable record ({type(exc).__name__})"
    if not isinstance(meta, dict) or meta.get("spec") != spec.as_json():
        return "stale or foreign (its record names another config, weights, device or torch)"
    if not package.is_file():
        return "missing (a record without its package)"
    digest = sha256_of(package)
    if digest != meta.get("sha256"):
        return f"damaged (sha256 {digest[:12]}..., recorded {str(meta.get('sha256'))[:12]}...)"
    return None


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (waits for another builder); a no-op where flock does not exist."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames alone keep the cache whole
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def export_and_compile(module: nn.Module, spec: PackageSpec, dest: Path, step: Callable[[str], None]) -> None:
    """torch.export at the fixed batch `spec.max_batch` + AOTInductor with freezing, written to `dest`.

    A fixed batch, not a dynamic one: with the batch dimension dynamic the package ran 8-25% slower than the
    eager encoders here (1 thread, both encoders), with it fixed as fast (README, "Compiled encoders")."""
    device = next(module.parameters()).device
    example = torch.randn(spec.max_batch, *spec.item_shape, device=device)
    step("export")
    with torch.inference_mode(False), torch.no_grad():
        for part in module.modules():  # folded trunks are traced, never folded while tracing
            if isinstance(part, TrunkEncoder):
                part.refresh_folded()
        program = torch.export.export(module.eval(), (example,))
        step("compile (AOTInductor, freezing)")
        # Inductor freezes (folds constants, packs convolution weights for oneDNN, fuses ReLU and residual
        # sums into the convolutions) only when autograd is off: compiled with it on, none of that happened.
        with _quiet_cuda_probe(device):
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(dest), inductor_configs={"freezing": True}
            )


@contextlib.contextmanager
def _quiet_cuda_probe(device: torch.device) -> Iterator[None]:
    """For a CPU package, no "No CUDA runtime is found, using CUDA_HOME=..." log line: inductor imports
    torch.utils.cpp_extension, whose import looks for a CUDA toolkit and logs that warning, in the middle of
    the build's progress on a machine without a GPU. A CUDA build keeps it (there it can matter)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    if device.type == "cpu":
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build(module: nn.Module, spec: PackageSpec, folder: Path, step: Callable[[str], None]) -> Path:
    """Compile `module` into the cache under `spec` (temporary names, then renames; the record last)."""
    folder.mkdir(parents=True, exist_ok=True)
    package = folder / f"{spec.stem()}.pt2"
    tmp = folder / f".{spec.stem()}.{uuid.uuid4().hex}.pt2"
    started = time.perf_counter()
    try:
        export_and_compile(module, spec, tmp, step)
        meta = {
            "spec": spec.as_json(),
            "sha256": sha256_of(tmp),
            "bytes": tmp.stat().st_size,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        (folder / f"{spec.stem()}.json").unlink(missing_ok=True)  # a package is never beside an old record
        os.replace(tmp, package)
        _write_atomic(folder / f"{spec.stem()}.json", json.dumps(meta, indent=1))
    finally:
        tmp.unlink(missing_ok=True)
    return package


def load_reference(spec: PackageSpec, folder: Path) -> torch.Tensor | None:
    """The stored eager output for `spec`, or None when it is missing, unreadable or belongs to another spec."""
    try:
        saved = torch.load(folder / f"{spec.stem()}.eager.pt", map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (a damaged file raises whatever the unpickler meets)
        return None
    if not isinstance(saved, dict) or saved.get("spec") != json.dumps(spec.as_json(), sort_keys=True):
        return None
    output = saved.get("output")
    return output if isinstance(output, torch.Tensor) else None


def save_reference(spec: PackageSpec, folder: Path, output: torch.Tensor) -> None:
    """Store the eager output for `spec` (temporary name, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{spec.stem()}.{uuid.uuid4().hex}.eager.pt"
    try:
        torch.save({"spec": json.dumps(spec.as_json(), sort_keys=True), "output": output.detach().cpu()}, tmp)
        os.replace(tmp, folder / f"{spec.stem()}.eager.pt")
    finally:
        tmp.unlink(missing_ok=True)


def discard(spec: PackageSpec, folder: Path) -> None:
    """Remove a package that failed its checks, and its reference (the next run builds both again)."""
    for suffix in (".json", ".pt2", ".eager.pt"):
        (folder / f"{spec.stem()}{suffix}").unlink(missing_ok=True)


def load(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The package's runner: (B, *item_shape) -> the module's output."""
    return torch._inductor.aoti_load_package(str(path))


def mark_used(spec: PackageSpec, folder: Path) -> None:
    """Touch the record of a package that was just loaded (what `prune` goes by)."""
    with contextlib.suppress(OSError):
        os.utime(folder / f"{spec.stem()}.json")


def _stem_of(path: Path) -> str:
    """`<name>-<key>` of a cache file (`.x.<uuid>.pt2` temporaries map to themselves: they are never kept)."""
    name = path.name
    for suffix in (".eager.pt", ".json", ".pt2", ".lock"):
        if name.endswith(suffix) and not name.startswith("."):
            return name.removesuffix(suffix)
    return name


def prune(folder: Path, unused_days: float, now: float | None = None) -> tuple[list[str], int]:
    """Remove packages (with record, reference and lock) whose record was last touched over `unused_days`
    ago, and leftovers without a record older than a day. -> (removed stems, bytes freed)."""
    if unused_days < 0:
        raise ValueError(f"--prune {unused_days} must be >= 0 days")
    now = time.time() if now is None else now
    if not folder.is_dir():
        return [], 0
    groups: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if path.is_file():
            groups.setdefault(_stem_of(path), []).append(path)
    removed, freed = [], 0
    for stem, paths in sorted(groups.items()):
        record = folder / f"{stem}.json"
        finished = record in paths
        last_used = record.stat().st_mtime if finished else max(p.stat().st_mtime for p in paths)
        if (now - last_used) / 86400 > (unused_days if finished else min(1.0, unused_days)):
            for path in paths:
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
            removed.append(stem)
    return removed, freed
