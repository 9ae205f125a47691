"""Closed one-second windows of random content, for tests that drive the model's stream or batch paths
directly (no file, no windower)."""

from __future__ import annotations

import numpy as np

from sec2sec.windows import Window


def random_windows(n: int, m: int, seed: int = 0, rate: int = 16_000) -> list[Window]:
    """Windows 0..n-1, each with m uint8 frames (m, 72, 96, 3) and one second of float32 audio at `rate`."""
    rng = np.random.default_rng(seed)
    return [
        Window(
            index=i,
            frames=rng.integers(0, 256, (m, 72, 96, 3), dtype=np.uint8),
            audio=(0.1 * rng.standard_normal(rate)).astype(np.float32),
            sample_rate=rate,
            frames_seen=m,
            samples_seen=rate,
        )
        for i in range(n)
    ]
