"""Bounded waits for the edges: queues where live data keeps the newest items and counts what it drops while
lossless producers (offline replay) block until there is room or the pipeline stops, and calls into the
outside world (stopping a device, closing a sink) made with a deadline."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """An exception as one line: "Type: first line of the message" (or, `with_type=False`, the message's first
    line alone); the type's name where there is no message."""
    text = f"{type(exc).__name__}: {exc}" if with_type else str(exc)
    return (text.splitlines() or [""])[0] or type(exc).__name__


def call_with_deadline(call: Callable[[], object], timeout_s: float, name: str) -> tuple[bool, str]:
    """Run `call` in a daemon helper thread named `name` and wait at most `timeout_s` for it. Returns
    (returned, error): returned is False when the deadline passed (the thread is abandoned: it runs on until
    the call returns, if ever); error is the first line of what the call raised, or "".
    For calls that can block inside the OS or a driver (stopping a PortAudio stream after a device was
    unplugged, writing to a pipe nobody reads), where no stop event can wake them."""
    errors: list[str] = []

    def target() -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported to the caller as one line
            errors.append(first_line(exc))

    helper = threading.Thread(target=target, name=name, daemon=True)
    helper.start()
    helper.join(timeout_s)
    if helper.is_alive():
        return False, ""
    return True, errors[0] if errors else ""


class Closed(Exception):
    """The queue was closed (the pipeline is stopping); nothing more will come."""


class BoundedQueue(Generic[T]):
    """A bounded FIFO with two ways in: `put_latest` (drop the oldest when full, count it, and hand it to
    `on_drop` when set, outside the lock) and `put_wait` (block while full). `close()` wakes every waiter;
    `get` then drains what is left and raises `Closed`."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize = {maxsize}; a queue needs room for at least 1 item")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.on_drop: Callable[[T], None] | None = None

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
            displaced = []
            while len(self._items) >= self.maxsize:
                displaced.append(self._items.popleft())
            self.dropped += len(displaced)
            self._items.append(item)
            self._cond.notify_all()
        on_drop = self.on_drop
        if on_drop is not None:
            for old in displaced:
                on_drop(old)
        return len(displaced)

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
