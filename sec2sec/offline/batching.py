"""Windows of many clips -> full encoder batches -> tokens per clip, in clip order (feature extraction).

`encode_clip` runs the encoders clip by clip, so a 10 s clip with 2 missing seconds gives batches of
8 + 0 windows and every clip ends with a partial batch. `WindowBatcher` queues the ok windows of
consecutive clips per modality and calls the model's own `encode` once per `batch` windows, whatever
clip they came from; a clip is handed back once all its windows are encoded, in the order clips came in.
The tokens equal `encode_clip`'s (same encoders, same inputs; only the batch composition differs).
`features_from_clips` runs it over a list of clips into the cache's layout (`--finetune`, `--from-clips`).

On CUDA the batch is assembled in a pinned buffer (two per modality, used in turn), copied with
`non_blocking=True`, and the tokens come back through a non-blocking copy waited on only after the next
batch is queued, so the GPU has the next batch while the CPU scatters the previous one. `autocast`
("float16" / "bfloat16") runs the encoders under torch.autocast on CUDA only; bfloat16 on the CPU is the
encoders' own precision (`sec2sec.precision`: the folded trunk in bfloat16, checked against float32), which
autocast over the unfolded modules would undo.
"""

from __future__ import annotations

from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.decoding import DecodedClip, UnreadableClip, clip_loader
from sec2sec.offline.features import ENCODE_BATCH, Encode, Features, Tokens, encode_modality, stack_features

AUTOCAST = {"off": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_autocast(autocast: str, device: torch.device) -> None:
    """Refuse an unknown autocast dtype, or autocast on the CPU (--precision bfloat16 is the CPU's way)."""
    if autocast not in AUTOCAST:
        raise ValueError(f"--autocast {autocast!r} is not allowed; use one of {', '.join(AUTOCAST)}")
    if autocast != "off" and device.type != "cuda":
        raise ValueError(
            f"--autocast {autocast} needs a CUDA device (got {device}); on the CPU use --precision (auto, bfloat16)"
        )


@dataclass
class _Clip:
    key: Any
    clip: DecodedClip
    tokens: list[torch.Tensor | None]  # per modality: (T, N, 512) float32 on the CPU, or None
    remaining: int


@dataclass
class _Flight:
    """A batch whose tokens are on their way back: (clip, row) per window, the copy and its event."""

    slots: list[tuple[_Clip, int]]
    tokens: torch.Tensor
    done: Any  # torch.cuda.Event or None


@dataclass
class _Queue:
    modality: int  # 0 video, 1 audio
    windows: deque[tuple[_Clip, int]] = field(default_factory=deque)  # (clip, row) not yet encoded
    buffers: list[torch.Tensor | None] = field(default_factory=lambda: [None, None])
    turn: int = 0
    flight: _Flight | None = None


class WindowBatcher:
    """push(key, clip) -> clips finished now, as (key, clip, (video tokens, audio tokens)); finish() -> the rest.

    Tokens are float32 (T, Nv, 512) / (T, Na, 512) on the CPU, zero where the window is not ok (as
    `encode_clip`). `encode` defaults to `model.encode` (frames, audio) -> tokens.
    """

    def __init__(self, model: Sec2Sec, batch: int, autocast: str = "off", encode: Encode | None = None) -> None:
        if batch < 1:
            raise ValueError(f"--batch {batch}: give at least 1 window per encoder call")
        self.model, self.batch = model, batch
        self.encode = encode or model.encode
        self.device = next(model.parameters()).device
        check_autocast(autocast, self.device)
        self.autocast = AUTOCAST[autocast]
        self.encoders = [model.video_encoder is not None, model.audio_encoder is not None]
        self.widths = [model.video_tokens, model.audio_tokens]
        self.queues = [_Queue(0), _Queue(1)]
        self.clips: deque[_Clip] = deque()

    def push(self, key: Any, clip: DecodedClip) -> list[tuple[Any, DecodedClip, Tokens]]:
        oks = (clip.video_ok, clip.audio_ok)
        tokens = [torch.zeros(len(ok), self.widths[m], 512) if self.encoders[m] else None for m, ok in enumerate(oks)]
        entry = _Clip(key, clip, tokens, 0)
        self.clips.append(entry)
        for m, queue in enumerate(self.queues):
            if not self.encoders[m]:
                continue
            for row in oks[m].nonzero().flatten().tolist():
                if queue.windows and self._item(queue.windows[-1], m).shape != self._item((entry, row), m).shape:
                    self._drain(queue, whole=False)  # another frame size: no stacking across it
                queue.windows.append((entry, row))
                entry.remaining += 1
            self._drain(queue, whole=True)
        return self._finished()

    def finish(self) -> list[tuple[Any, DecodedClip, Tokens]]:
        for queue in self.queues:
            self._drain(queue, whole=False)
            self._land(queue)
        return self._finished()

    @staticmethod
    def _item(slot: tuple[_Clip, int], modality: int) -> torch.Tensor:
        entry, row = slot
        return (entry.clip.frames if modality == 0 else entry.clip.audio)[row]

    def _drain(self, queue: _Queue, whole: bool) -> None:
        """Encode queued windows: full batches only (whole=True), or everything queued."""
        while len(queue.windows) >= self.batch or (queue.windows and not whole):
            slots = [queue.windows.popleft() for _ in range(min(self.batch, len(queue.windows)))]
            flight = self._launch(queue, slots)
            self._land(queue)
            queue.flight = flight

    def _launch(self, queue: _Queue, slots: list[tuple[_Clip, int]]) -> _Flight:
        items = [self._item(s, queue.modality) for s in slots]
        cuda = self.device.type == "cuda"
        if cuda:
            buffer = queue.buffers[queue.turn]
            shape = (self.batch, *items[0].shape)
            if buffer is None or buffer.shape != shape or buffer.dtype != items[0].dtype:
                buffer = queue.buffers[queue.turn] = torch.empty(shape, dtype=items[0].dtype, pin_memory=True)
            queue.turn = 1 - queue.turn
            x = torch.stack(items, out=buffer[: len(items)]).to(self.device, non_blocking=True)
        else:
            x = torch.stack(items)
        amp = torch.autocast("cuda", dtype=self.autocast) if self.autocast is not None else nullcontext()
        with amp:
            tokens = encode_modality(self.encode, queue.modality, x).float()
        if not cuda:
            return _Flight(slots, tokens, None)
        done = torch.cuda.Event()
        back = tokens.to("cpu", non_blocking=True)
        done.record()
        return _Flight(slots, back, done)

    def _land(self, queue: _Queue) -> None:
        """Wait for the batch in flight (if any) and scatter its tokens into their clips."""
        flight, queue.flight = queue.flight, None
        if flight is None:
            return
        if flight.done is not None:
            flight.done.synchronize()
        for (entry, row), tokens in zip(flight.slots, flight.tokens, strict=True):
            into = entry.tokens[queue.modality]
            assert into is not None  # windows are queued only for the modalities the model encodes
            into[row] = tokens
            entry.remaining -= 1

    def _finished(self) -> list[tuple[Any, DecodedClip, Tokens]]:
        out: list[tuple[Any, DecodedClip, Tokens]] = []
        while self.clips and self.clips[0].remaining == 0:  # remaining counts queued and in-flight windows
            entry = self.clips.popleft()
            out.append((entry.key, entry.clip, (entry.tokens[0], entry.tokens[1])))
        return out


@torch.no_grad()
def features_from_clips(
    model: Sec2Sec, records: list[ClipRecord], workers: int = 1, batch: int = ENCODE_BATCH
) -> Features:
    """Tokens of clips computed now with the model's own encoders (float32), in the cache's layout.

    Used by `--finetune` (the encoders change, so the cache no longer describes them) and by
    `evaluate --from-clips`; windows are batched across clips. An unreadable clip is an error here: it was
    readable at extraction. Tokens come back on the CPU.
    """
    model.eval()
    batcher, done = WindowBatcher(model, batch), []
    for record, clip in zip(records, clip_loader(records, model.config, workers), strict=True):
        if isinstance(clip, UnreadableClip):
            raise ValueError(f"clip {record.path} cannot be read: {clip.error}")
        done += batcher.push(record, clip)
    parts = [(*tokens, c.video_ok, c.audio_ok, c.length) for _, c, tokens in done + batcher.finish()]
    return stack_features([r.clip_id for r in records], parts, model.config.clip_seconds)
