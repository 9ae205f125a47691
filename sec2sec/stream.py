"""AffectStream: one-second windows in, affect estimates out, with the recurrent state held in between.

The step path reuses the model's batch layers: with a horizon H it re-runs the temporal model over the
last H fused features (the model was trained on clips of about H seconds, so a state carried for an hour
would be out of distribution); with horizon 0 it carries the recurrent state forever.

Gaps: seconds that never reached the model (windows dropped by the pipeline, or indices skipped) are
stepped through as empty seconds, the fused feature of a window with neither video nor audio (both masked:
exactly what training computes for a second of a clip that had neither, which `train.modality_dropout`
produces too). So H steps of history always cover H seconds. A gap of at least H seconds leaves only empty
seconds in the horizon, and with horizon 0 a gap of at least `clip_seconds` resets the recurrent state:
no training clip holds that much nothing.

Precision (`sec2sec.precision`): `precision="auto"` runs the encoders in bfloat16 where the device computes it
natively. Before the first window (in `warm_up`, or the first `step`), the encoders' tokens on the warm-up
window are compared with float32's; outside the stated bound the stream warns once and runs in float32.
`precision_used` says which it is.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from sec2sec.config import ModelConfig
from sec2sec.devices import resolve_device
from sec2sec.model import Sec2Sec
from sec2sec.precision import Agreement, check_parity, resolve_precision, set_precision
from sec2sec.temporal import State
from sec2sec.windows import Window


@dataclass(frozen=True)
class Estimate:
    """The model's output for window `window` (the second [window, window + 1) of the run): sigmoid value per
    named output, per-second attribution over the horizon (oldest first; empty for models without attention),
    input flags, and timings. The attribute names are the output fields' (docs/outputs.md): `estimate.window`
    is the CSV's `window` column and the JSON record's `"window"`."""

    window: int
    outputs: dict[str, float]
    attribution: tuple[float, ...]
    video_ok: bool
    audio_ok: bool
    frames: int  # video frames whose time fell inside the second (the model saw m of them)
    audio_coverage: float
    compute_ns: int
    gap: int = 0  # windows missing right before this one (dropped or never closed)
    latency_ns: int | None = None  # window close -> estimate, set by the pipeline
    dropped_total: int = 0  # set by the pipeline
    # input this window lost before it was windowed (set by the pipeline; 0 where nothing was lost or counted):
    frames_dropped: int = 0  # video frames dropped by the capture edge or its full queue
    samples_lost: int = 0  # audio samples (model rate) lost: overflows, queue drops, forward re-stamps
    samples_restamped: int = 0  # audio samples (model rate) by which a re-stamp moved the stream's clock

    @property
    def start_s(self) -> float:
        return float(self.window)

    @property
    def end_s(self) -> float:
        return float(self.window + 1)


def check_window(window: Window, config: ModelConfig) -> None:
    """Refuse a window this model cannot take; the message says what came and what is allowed."""
    rate = config.audio.sample_rate
    if window.sample_rate != rate:
        raise ValueError(f"window audio is at {window.sample_rate} Hz; this model takes {rate} Hz")
    audio = window.audio
    if audio.ndim != 1 or audio.shape[0] != rate:
        raise ValueError(f"window audio must be ({rate},) float32 (one second); got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("window audio contains NaN or inf; give finite samples in [-1, 1]")
    if window.frames is not None:
        m, frames = config.video.frames_per_window, window.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"window frames must be uint8 (m, H, W, 3) RGB; got {frames.dtype} {frames.shape}")
        if frames.shape[0] != m:
            raise ValueError(f"window has {frames.shape[0]} frames; this model takes m = {m}")


def warm_up_window(config: ModelConfig, height: int = 240, width: int = 320) -> Window:
    """A fixed pseudo-random window (smooth noise frames, quiet noise audio): the warm-up's input and the
    precision check's. Noise, not zeros, so every channel of the encoders carries signal in the check."""
    m, rate = config.video.frames_per_window, config.audio.sample_rate
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(m, height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(coarse.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width])
    audio = (rng.standard_normal(rate) * 0.1).astype(np.float32)
    return Window(index=0, frames=frames, audio=audio, sample_rate=rate, frames_seen=m, samples_seen=rate)


def check_input(config: ModelConfig, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The warm-up window as a batch of one for the precision check: frames uint8 (1, m, 240, 320, 3) and
    audio (1, sample_rate) on `device`, None for a modality the model does not use."""
    window = warm_up_window(config)
    frames = torch.from_numpy(window.frames).to(device)[None] if config.uses_video else None
    audio = torch.from_numpy(window.audio).to(device)[None] if config.uses_audio else None
    return frames, audio


class AffectStream:
    """`step(window) -> Estimate`; `reset()` forgets the past. `horizon`: seconds of history the estimate
    covers (default: the training clip length stored with the model); 0 carries the state forever.
    `precision`: the encoders' arithmetic, "auto", "float32" (default) or "bfloat16" (see the module doc). The
    stream moves the model to its device and sets its encoders' precision: give each stream its own model."""

    def __init__(
        self,
        model: Sec2Sec,
        horizon: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "float32",
    ) -> None:
        if horizon is not None and horizon < 0:
            raise ValueError(f"horizon = {horizon}; use 0 (carry state forever) or a number of seconds >= 1")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.precision_requested = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        set_precision(self.model, "float32")  # until the requested precision has passed its check
        self.precision_used: str | None = None  # set by the check, before the first window
        self.parity: dict[str, Agreement] = {}
        self.config = model.config
        self.horizon = self.config.clip_seconds if horizon is None else horizon
        self.reset()

    def check_precision(self) -> str:
        """Compare the requested precision's tokens with float32's on the warm-up window (once) and keep the
        requested precision if they agree within PARITY_BOUND, else float32 (one warning). Returns it."""
        if self.precision_used is None:
            frames, audio = check_input(self.config, self.device)
            self.precision_used, self.parity = check_parity(self.model, frames, audio, self.precision_requested)
        return self.precision_used

    def reset(self) -> None:
        """Forget every past window (history, recurrent state, gap tracking)."""
        span = self.horizon if self.horizon > 0 else 1
        self._history: deque[torch.Tensor] = deque(maxlen=span)
        self._state: State | None = None
        self._last_index: int | None = None

    @torch.inference_mode()
    def empty_feature(self) -> torch.Tensor:
        """The fused feature (1, feature_width) of a second with neither video nor audio (a gap)."""
        absent = torch.zeros(1, dtype=torch.bool, device=self.device)
        return self.model.fuse(None, None, video_ok=absent, audio_ok=absent)

    @torch.inference_mode()
    def _fill_gap(self, gap: int) -> None:
        """Step through `gap` missing seconds (see the module docstring)."""
        limit = self.horizon if self.horizon > 0 else self.config.clip_seconds
        if gap >= limit and self.horizon == 0:
            self._state = None
            return
        empty = self.empty_feature()
        for _ in range(min(gap, limit)):
            if self.horizon > 0:
                self._history.append(empty[0])  # the estimate is only computed for the window that came
            else:
                _, _, self._state = self.model.temporal.step(empty, self._state)

    @torch.inference_mode()
    def features(self, window: Window) -> torch.Tensor:
        """One window -> fused feature F (1, feature_width)."""
        check_window(window, self.config)
        frames = None if window.frames is None else torch.from_numpy(window.frames).to(self.device)[None]
        audio = torch.from_numpy(window.audio).to(self.device)[None] if window.audio_ok else None
        video_tokens, audio_tokens = self.model.encode(frames, audio)
        return self.model.fuse(
            video_tokens,
            audio_tokens,
            video_ok=torch.tensor([window.video_ok], device=self.device),
            audio_ok=torch.tensor([window.audio_ok], device=self.device),
        )

    @torch.inference_mode()
    def step_features(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Advance by one fused feature (1, D) -> logits (n_outputs,), attribution (t,) or None."""
        if self.horizon == 0:
            summary, weights, self._state = self.model.temporal.step(feature, self._state)
            logits = self.model.heads(summary)
        else:
            self._history.append(feature[0])
            sequence = torch.stack(list(self._history))[None]
            lengths = torch.tensor([sequence.shape[1]], device=self.device)
            logits, weights = self.model.forward_features(sequence, lengths)
        return logits[0], None if weights is None else weights[0]

    def step(self, window: Window) -> Estimate:
        """One closed window -> its Estimate (outputs cover the last `horizon` seconds up to this one)."""
        self.check_precision()
        started = time.perf_counter_ns()
        gap = 0 if self._last_index is None else max(0, window.index - self._last_index - 1)
        self._last_index = window.index
        if gap:
            self._fill_gap(gap)
        logits, weights = self.step_features(self.features(window))
        return Estimate(
            window=window.index,
            outputs=self.model.heads.named(logits),
            attribution=() if weights is None else tuple(float(w) for w in weights.tolist()),
            video_ok=window.video_ok,
            audio_ok=window.audio_ok,
            frames=window.frames_seen,
            audio_coverage=window.audio_coverage,
            compute_ns=time.perf_counter_ns() - started,
            gap=gap,
        )

    def warm_up_window(self, height: int = 240, width: int = 320) -> Window:
        return warm_up_window(self.config, height, width)

    def warm_up(self, height: int = 240, width: int = 320) -> None:
        """Check the precision (`check_precision`), run every stage once on the warm-up window (first-call
        allocations, lazy init), then forget it."""
        self.step(self.warm_up_window(height, width))
        self.reset()
