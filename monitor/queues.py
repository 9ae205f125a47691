"""Bounded queues for the edges: live data keeps the newest items and counts what it drops; lossless
producers (offline replay) block until there is room or the pipeline stops."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """The queue was closed (the pipeline is stopping); nothing more will come."""


class BoundedQueue(Generic[T]):
    """A bounded FIFO with two ways in: `put_latest` (drop the oldest when full, count it) and
    `put_wait` (block while full). `close()` wakes every waiter; `get` then drains what is left
    and raises `Closed`."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize = {maxsize}; a queue needs room for at least 1 item")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_latest(self, item: T) -> int:
        """Enqueue without blocking; when full, drop the oldest item. Returns how many were dropped now."""
        with self._cond:
            if self._closed:
                return 0
            dropped = 0
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self.dropped += dropped
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def put_wait(self, item: T, timeout: float | None = None) -> bool:
        """Enqueue, waiting for room; False if the queue closed (or `timeout` s passed) first."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout):
                return False
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after `timeout` s with nothing; raises Closed once closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._items, timeout):
                return None
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            raise Closed

    def wait_count(self, n: int, timeout: float | None = None) -> int:
        """Wait until at least `n` items are queued, the queue closes, or `timeout` s pass; the count."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or len(self._items) >= n, timeout)
            return len(self._items)

    def close(self) -> None:
        """No more puts; wake everyone. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
