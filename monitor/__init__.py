"""monitor: live capture, replay pacing, the streaming pipeline, recorders, dashboard and the `sec2sec-live` CLI.

The Python API (`load_model`, `estimate_file`, `live`) is importable from here; it is loaded on first use, so
importing `monitor` stays free of torch and of side effects.
"""

from __future__ import annotations

from typing import Any

API = (
    "EndReason",
    "LiveRun",
    "LoadedModel",
    "Options",
    "RunEnd",
    "RunFailed",
    "estimate_file",
    "live",
    "load_model",
    "record_of",
)
__all__ = list(API)


def __getattr__(name: str) -> Any:
    if name in API:
        from monitor import api

        return getattr(api, name)
    raise AttributeError(f"module 'monitor' has no attribute {name!r}")
