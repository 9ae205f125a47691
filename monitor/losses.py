"""Input losses as data: what the edges lose (frames a full queue displaced, audio samples lost to an
overflow or moved by a re-stamp), filed under the one-second window the lost input belonged to, so that each
row can say what its window lost.

Edges report from their own threads (`add`, under a lock held only to add); the inference worker takes, for
each window it writes, everything filed at or before that window (`take`): losses of windows that were
dropped, or reported after their window was written, land in the next row written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

MAX_PENDING = 1024  # seconds kept apart; beyond that, losses filed further ahead are lumped into the latest


@dataclass(frozen=True)
class Losses:
    """What one window (or a run) lost: video frames, and audio samples at the model's rate."""

    frames_dropped: int = 0
    samples_lost: int = 0
    samples_restamped: int = 0

    def __add__(self, other: Losses) -> Losses:
        return Losses(
            self.frames_dropped + other.frames_dropped,
            self.samples_lost + other.samples_lost,
            self.samples_restamped + other.samples_restamped,
        )


class LossLedger:
    """Losses by window index, bounded by `max_pending` distinct windows; thread-safe."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending = {max_pending}; keep at least 1 window of losses")
        self.max_pending = max_pending
        self.total = Losses()  # everything reported, attributed to a row or not
        self._pending: dict[int, Losses] = {}
        self._lock = threading.Lock()

    def add(self, window: int, frames: int = 0, samples: int = 0, restamped: int = 0) -> None:
        """File a loss under `window` (the second since the origin its input belonged to; negative: 0)."""
        loss = Losses(frames, samples, restamped)
        if loss == Losses():
            return
        window = max(0, window)
        with self._lock:
            if window not in self._pending and len(self._pending) >= self.max_pending:
                window = max(self._pending)
            self._pending[window] = self._pending.get(window, Losses()) + loss
            self.total = self.total + loss

    def take(self, window: int) -> Losses:
        """Remove and return the sum of everything filed at or before `window`."""
        with self._lock:
            due = [index for index in self._pending if index <= window]
            taken = Losses()
            for index in due:
                taken = taken + self._pending.pop(index)
            return taken
