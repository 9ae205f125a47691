"""Decoders with a fault planted, for `decoding.clip_loader(..., decode=...)`. Decoding workers start from a
fresh interpreter (spawn), so a fault reaches them only as a module-level function they import by name."""

from __future__ import annotations

import time

from sec2sec.offline.decoding import DecodedClip

HANG_S = 120  # far past any decode timeout a test sets


def hung_decode(*args: object) -> DecodedClip:
    """A decoder that never returns (within any test's patience)."""
    time.sleep(HANG_S)
    raise AssertionError("a hung decoder was waited out; the loader's timeout should have fired long before")
