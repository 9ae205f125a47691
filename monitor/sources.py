"""Shared pieces of the capture edges: what a source reports about itself and what it emits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceStatus:
    """A snapshot of one source for the dashboard and the sidecar: name, state, counters, last error."""

    name: str  # "camera", "microphone", "file"
    running: bool
    items: int  # frames or chunks captured
    dropped: int  # items the source itself lost (full queue, PortAudio overflow)
    detail: str = ""  # e.g. "640x480 @ 30.0 fps", "pulse 48000 Hz", "12.0 / 19.7 s"
    error: str = ""  # one line; non-empty when the source failed


@dataclass(frozen=True)
class SourceEnd:
    """Put on the input queue when a source has no more data (end of file, device gone)."""

    name: str
    error: str = ""  # empty for a normal end
