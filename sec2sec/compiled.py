"""The encoders run from cached AOTInductor packages by default; eager is the checked fallback.

`compile_model(model, max_batch=N)` gives each encoder of a model (on the device it is on, with the weights it holds) a
compiled forward: the package is loaded from the cache (`sec2sec.aoti_cache`; a few tenths of a second)
or, on first use of a config + weights + torch + device + CPU capability + thread count, built there once
with a message and a progress line (about a minute per encoder on a 2-core CPU). Before it is used, every
package, freshly built or loaded, is run on a fixed pseudo-random warm-up input and compared with the eager
encoder's output on it (computed once per package key and kept in the cache, so a warm start runs no eager
forward); when the outputs differ by more than `PARITY_TOL` (relative to the output's scale once that exceeds 1), the
package is deleted (the next run builds it again) and the encoder stays eager, with one warning for the
whole model.

The compiled forward is used for float32 inputs of the compiled item shape on the compiled device, in
inference (no autograd, eval mode), with batches of any size: a package has a fixed batch (`max_batch`: 1 for
`sec2sec-live`, `--batch` for `sec2sec extract`), larger batches are split and a short last chunk is padded with
zeros (their outputs dropped); any other call
(training, fine-tuning through the encoders, weights changed in place since compiling) runs the eager module,
which stays the same object with the same state dict.

`--no-compile` (both CLIs) or `SEC2SEC_COMPILE=0` runs everything eagerly. This is a runtime setting, not a
model setting: a checkpoint gives the same numbers either way (to PARITY_TOL).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sec2sec import aoti_cache
from sec2sec.aoti_cache import PackageSpec
from sec2sec.config import to_dict
from sec2sec.encoders import TrunkEncoder
from sec2sec.model import Sec2Sec

ENV_COMPILE = "SEC2SEC_COMPILE"
LIVE_BATCH = 1  # sec2sec-live encodes one window at a time
PARITY_TOL = 1e-4
BUILD_NOTE = "about 1-2 minutes per encoder on a 2-core CPU, once"


class CompiledFallbackWarning(UserWarning):
    """A compiled encoder could not be built, loaded or trusted; the model runs that encoder eagerly."""


def compile_requested(no_compile: bool = False) -> bool:
    """False with `--no-compile` or `SEC2SEC_COMPILE=0`; True by default."""
    if no_compile:
        return False
    value = os.environ.get(ENV_COMPILE, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_COMPILE}={value!r} is not allowed; use 1 (compiled encoders, the default) or 0 (eager)")


def _versions(module: nn.Module) -> int:
    """Sum of the in-place version counters of every parameter and buffer (load_state_dict bumps them).
    Tensors made under inference_mode have no counter: build models outside it (extract does)."""
    return sum(t._version for t in (*module.parameters(), *module.buffers()) if not t.is_inference())


class CompiledForward:
    """Replaces an encoder's `forward`: (B, *item_shape) float32 -> the encoder's tokens, from the package."""

    def __init__(self, module: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], spec: PackageSpec) -> None:
        self.module = module
        self.runner = runner
        self.spec = spec
        self.device = next(module.parameters()).device
        self.versions = _versions(module)

    def usable(self, x: torch.Tensor) -> bool:
        return (
            not torch.is_grad_enabled()
            and not self.module.training
            and x.dtype == torch.float32
            and x.device == self.device
            and tuple(x.shape[1:]) == self.spec.item_shape
            and _versions(self.module) == self.versions
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.usable(x):
            return type(self.module).forward(self.module, x)
        n = self.spec.max_batch  # the package's fixed batch: larger calls are split, a short chunk padded
        outputs = []
        for part in x.split(n):
            rows = part.shape[0]
            if rows < n:
                part = torch.cat([part, part.new_zeros(n - rows, *part.shape[1:])])
            outputs.append(self.runner(part.contiguous())[:rows])
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def is_compiled(module: nn.Module | None) -> bool:
    """Whether `module` runs from a compiled package (see `CompiledForward.usable` for when it does)."""
    return module is not None and isinstance(module.__dict__.get("forward"), CompiledForward)


def make_eager(module: nn.Module) -> None:
    """Drop a compiled forward: the module's own forward runs again."""
    if is_compiled(module):
        del module.forward


@dataclass(frozen=True)
class EncoderPlan:
    """One encoder to compile: its name in the cache, the module, its settings, one input's shape."""

    name: str
    module: nn.Module
    config: dict
    item_shape: tuple[int, ...]


def encoder_plans(model: Sec2Sec) -> list[EncoderPlan]:
    """The encoders the model has, with their input shapes (what the front ends give them)."""
    plans = []
    skip = ("weights", "weights_path")  # the weights' sha256 stands for them
    if model.video_encoder is not None:
        v = model.config.video
        config = {k: x for k, x in to_dict(v).items() if k not in skip}
        plans.append(EncoderPlan("video", model.video_encoder, config, (3, v.frames_per_window, v.crop, v.crop)))
    if model.audio_encoder is not None:
        a = model.config.audio
        device = next(model.audio_encoder.parameters()).device
        with torch.inference_mode():
            shape = tuple(model.audio_frontend(torch.zeros(1, a.sample_rate, device=device)).shape[1:])
        config = {k: x for k, x in to_dict(a).items() if k not in skip}
        plans.append(EncoderPlan("audio", model.audio_encoder, config, shape))
    return plans


def eager_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's own (eager) forward, in eval mode, without autograd."""
    with torch.inference_mode():
        return type(module).forward(module.eval(), x)


def parity_error(
    module: nn.Module, runner: Callable[[torch.Tensor], torch.Tensor], spec: PackageSpec, folder: Path
) -> float:
    """Max |compiled - eager| on a fixed pseudo-random batch, divided by max(1, max |eager|).

    The eager output comes from the cache's reference for this spec when it has one (see `aoti_cache`),
    else from an eager forward, which is then stored: a warm start runs only the package."""
    device = next(module.parameters()).device
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(spec.max_batch, *spec.item_shape, generator=generator).to(device)  # the package's batch
    eager = aoti_cache.load_reference(spec, folder)
    if eager is None:
        eager = eager_output(module, x).cpu()
        aoti_cache.save_reference(spec, folder, eager)
    with torch.inference_mode():
        compiled = runner(x).cpu()
    if compiled.shape != eager.shape:
        return float("inf")
    scale = max(1.0, float(eager.abs().max()))
    return float((compiled - eager).abs().max()) / scale


def _announce(plan: EncoderPlan, spec: PackageSpec, problem: str) -> None:
    why = "first use of this config, weights, torch and device" if problem == "not built yet" else problem
    print(
        f"sec2sec: compiling the {plan.name} encoder for {spec.device} into an AOTInductor package ({why}; "
        f"{BUILD_NOTE}; cached in {aoti_cache.packages_dir()}; --no-compile or {ENV_COMPILE}=0 runs eagerly)",
        file=sys.stderr,
        flush=True,
    )


def _build_with_progress(plan: EncoderPlan, spec: PackageSpec, show: bool) -> None:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show, transient=True) as progress:
        task = progress.add_task(f"{plan.name} encoder", total=None)

        def step(what: str) -> None:
            progress.update(task, description=f"{plan.name} encoder: {what}")

        aoti_cache.build(plan.module, spec, aoti_cache.packages_dir(), step)
    print(
        f"sec2sec: {plan.name} encoder compiled in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True
    )


def compile_encoder(plan: EncoderPlan, max_batch: int, show: bool = True) -> str:
    """Load (or build, then load) the package for `plan`, check it against eager, and install it.
    Returns "loaded" or "built"; raises RuntimeError (with the reason) when it cannot be used."""
    spec = aoti_cache.spec_for(plan.name, plan.module, plan.config, plan.item_shape, max_batch)
    folder = aoti_cache.packages_dir()
    status = "loaded"
    if aoti_cache.package_problem(spec, folder) is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with aoti_cache.build_lock(folder / f"{spec.stem()}.lock"):
            problem = aoti_cache.package_problem(spec, folder)  # another process may have built it meanwhile
            if problem is not None:
                _announce(plan, spec, problem)
                _build_with_progress(plan, spec, show)
                status = "built"
    runner = aoti_cache.load(folder / f"{spec.stem()}.pt2")
    error = parity_error(plan.module, runner, spec, folder)
    if not error <= PARITY_TOL:
        aoti_cache.discard(spec, folder)
        raise RuntimeError(
            f"its output differs from eager by {error:.2g} (> {PARITY_TOL:g}); the package was deleted and "
            "will be built again on the next run"
        )
    aoti_cache.mark_used(spec, folder)
    plan.module.forward = CompiledForward(plan.module, runner, spec)
    if isinstance(plan.module, TrunkEncoder):  # the package holds its own folded weights
        plan.module.clear_folded()
    return status


def compile_model(model: Sec2Sec, *, max_batch: int, show: bool = True) -> dict[str, str]:
    """Give every encoder of `model` (already on its device, final weights) a compiled forward.

    Returns {"video": "loaded" | "built" | "eager: reason", "audio": ...}. Encoders that cannot be compiled run
    eagerly, reported in ONE CompiledFallbackWarning for the whole model.
    """
    model.eval()
    report: dict[str, str] = {}
    for plan in encoder_plans(model):
        make_eager(plan.module)
        try:
            report[plan.name] = compile_encoder(plan, max_batch, show)
        except Exception as exc:  # noqa: BLE001  (export/compiler/loader failures have no common type)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report[plan.name] = f"eager: {reason}"
    failed = {k: v for k, v in report.items() if v.startswith("eager")}
    if failed:
        detail = "; ".join(f"{k} encoder: {v.removeprefix('eager: ')}" for k, v in failed.items())
        warnings.warn(
            f"running the {' and '.join(failed)} encoder{'s' if len(failed) > 1 else ''} eagerly (slower), "
            f"the compiled package could not be used: {detail}",
            CompiledFallbackWarning,
            stacklevel=2,
        )
    return report
