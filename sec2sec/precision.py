"""Encoder precision, a runtime choice like the device: `auto`, `float32` or `bfloat16`.

`auto` picks bfloat16 where the device computes it natively (oneDNN's check on the CPU, e.g. AVX-512 BF16 or
AMX; `torch.cuda.is_bf16_supported()` on CUDA) and float32 elsewhere (AVX2-only laptops, where oneDNN
emulates bfloat16 several times slower than float32). Asking for bfloat16 on such a device is refused.

Only the encoders' trunks change (`sec2sec.folded_trunk`: weights folded and packed once in bfloat16, the
activations in bfloat16); their tokens leave the encoders in float32, so co-attention, the temporal model
and the heads run as trained. Training and fine-tuning always run in float32.

Never trusted blindly: before a bfloat16 model is used, `check_parity` runs both encoders on a fixed input in
float32 and in bfloat16 and compares the tokens; outside `PARITY_BOUND`, one `PrecisionFallbackWarning` and the
model runs in float32.

torch is imported when it is needed, so the command-line parsers can use PRECISIONS and PRECISION_HELP without it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from sec2sec.model import Sec2Sec

PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION_HELP = (
    "encoder arithmetic: auto (bfloat16 where the device computes it natively, else float32), float32 or bfloat16"
)


@dataclass(frozen=True)
class ParityBound:
    """The largest relative error ||bf16 - fp32|| / ||fp32|| over each encoder's tokens, and the smallest cosine
    similarity of any one token with its float32 counterpart, that bfloat16 encoders may show.

    Measured (tests/test_precision.py, the warm-up window, a generated clip and the shipped clips): with random
    weights, relative error 0.4-0.5% and worst token cosine >= 0.9999; with pretrained-like BatchNorm
    statistics (each layer standardised on real input), 3-14% and >= 0.989 for the video encoder: that
    network is sensitive, not bfloat16 wrong (rounding only its input to bfloat16 moves float32's own tokens by
    1-5%; bfloat16 rounds after each of its 17 convolutions). The bound leaves room for that and still rejects
    wrong arithmetic (a broken kernel's tokens are unrelated to float32's: relative error ~1, cosine ~0)."""

    relative_error: float = 0.25
    min_cosine: float = 0.95


PARITY_BOUND = ParityBound()


class PrecisionFallbackWarning(UserWarning):
    """bfloat16 encoders disagreed with float32 beyond PARITY_BOUND; the model runs in float32."""


def precision_name(name: str) -> str:
    """`name` if it is a precision (whether the device has it is resolve_precision's question), else ValueError."""
    if name not in PRECISIONS:
        raise ValueError(f"--precision {name!r} is not allowed; use one of {', '.join(PRECISIONS)}")
    return name


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (its convolutions at least as fast as float32's)."""
    import torch

    from sec2sec.folded_trunk import mkldnn_bf16_native

    if device.type == "cpu":
        return mkldnn_bf16_native()
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """auto -> "bfloat16" where `device` has native bfloat16, else "float32"; float32 -> "float32";
    bfloat16 -> "bfloat16", or a ValueError naming the fix where the device would only emulate it."""
    precision_name(name)
    if name == "float32":
        return name
    native = bf16_native(device)
    if name == "auto":
        return "bfloat16" if native else "float32"
    if not native:
        what = "this CPU (oneDNN reports no native bfloat16)" if device.type == "cpu" else f"{device}"
        raise ValueError(f"--precision bfloat16: {what} would only emulate it, slower; use auto or float32")
    return name


def set_precision(model: Sec2Sec, precision: str) -> None:
    """Run the model's encoders in inference with `precision` ("float32" or "bfloat16") arithmetic."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]
    from sec2sec.model import ENCODER_MODULES

    for name in ENCODER_MODULES:
        encoder = getattr(model, name)
        if encoder is not None:
            encoder.compute_dtype = dtype


@dataclass(frozen=True)
class Agreement:
    """How one encoder's tokens in a lower precision compare with float32's. A figure is NaN when tokens were not
    finite (`non_finite` counts such values among the lower precision's): such tokens never agree."""

    relative_error: float  # ||x - ref|| / ||ref|| over all tokens
    min_cosine: float  # the smallest cosine similarity of a token with its float32 counterpart
    non_finite: int = 0  # NaN or infinite values among the lower precision's tokens
    non_finite_reference: int = 0  # ... among float32's

    def within(self, bound: ParityBound | None = None) -> bool:
        bound = bound or PARITY_BOUND
        finite = not self.non_finite and not self.non_finite_reference
        return finite and self.relative_error <= bound.relative_error and self.min_cosine >= bound.min_cosine

    def reason(self) -> str:
        """Why the figures are not numbers ("" when they are)."""
        counts = [(self.non_finite, "the checked precision's"), (self.non_finite_reference, "float32's")]
        parts = [f"{n} of {whose} token values are NaN or infinite" for n, whose in counts if n]
        if not parts and not (math.isfinite(self.relative_error) and math.isfinite(self.min_cosine)):
            parts = ["the comparison gave no finite number"]
        return "; ".join(parts)

    def figures(self) -> dict[str, float | int | str | None]:
        """The figures as JSON takes them (the sidecar's `precision_check`): a figure that is not a finite
        number is None, and `reason` says why."""
        out: dict[str, float | int | str | None] = {
            "relative_error": self.relative_error if math.isfinite(self.relative_error) else None,
            "min_cosine": self.min_cosine if math.isfinite(self.min_cosine) else None,
        }
        if self.reason():
            out["non_finite"] = self.non_finite
            out["reason"] = self.reason()
        return out

    def __str__(self) -> str:
        text = f"relative error {self.relative_error:.3g}, worst token cosine {self.min_cosine:.5f}"
        return f"{text} ({self.reason()})" if self.reason() else text


def agreement(tokens: torch.Tensor, reference: torch.Tensor) -> Agreement:
    """tokens, reference (B, N, 512) -> their Agreement (both compared in float64)."""
    import torch

    x, ref = tokens.double().flatten(0, -2), reference.double().flatten(0, -2)
    relative = float((x - ref).norm() / ref.norm().clamp_min(1e-12))
    cosine = torch.nn.functional.cosine_similarity(x, ref, dim=-1, eps=1e-12)
    bad, bad_reference = int((~torch.isfinite(x)).sum()), int((~torch.isfinite(ref)).sum())
    worst = float(cosine.min()) if not bool(cosine.isnan().any()) else math.nan
    return Agreement(relative, worst, bad, bad_reference)


def encoder_agreement(
    model: Sec2Sec, frames: torch.Tensor | None, audio: torch.Tensor | None, precision: str
) -> dict[str, Agreement]:
    """Tokens of (frames uint8 (B, m, H, W, 3), audio (B, sample_rate)) in `precision` vs float32, per encoder
    ("video", "audio"). The model is left in `precision`."""
    import torch

    with torch.inference_mode():
        set_precision(model, "float32")
        reference = model.encode(frames, audio)
        set_precision(model, precision)
        tokens = model.encode(frames, audio)
    out = {}
    for name, got, ref in zip(("video", "audio"), tokens, reference, strict=True):
        if got is not None and ref is not None:
            out[name] = agreement(got, ref)
    return out


def check_parity(
    model: Sec2Sec, frames: torch.Tensor | None, audio: torch.Tensor | None, precision: str
) -> tuple[str, dict[str, Agreement]]:
    """Put the model in `precision` after checking its tokens on the given input against float32 (skipped for
    float32). Returns the precision now used and the agreement per encoder; outside PARITY_BOUND the model
    runs in float32, with one PrecisionFallbackWarning naming the encoder and its figures."""
    if precision == "float32":
        set_precision(model, "float32")
        return "float32", {}
    found = encoder_agreement(model, frames, audio, precision)
    failed = {k: v for k, v in found.items() if not v.within()}
    if failed:
        set_precision(model, "float32")
        detail = "; ".join(f"{k} encoder {v}" for k, v in failed.items())
        b = PARITY_BOUND
        warnings.warn(
            f"{precision} encoders disagree with float32 ({detail}; allowed: relative error <= "
            f"{b.relative_error:g}, cosine >= {b.min_cosine:g}); running in float32",
            PrecisionFallbackWarning,
            stacklevel=2,
        )
        return "float32", found
    return precision, found
