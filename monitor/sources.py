"""Shared pieces of the capture edges: what the pipeline needs of a source, what a source reports about
itself and what it emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class Source(Protocol):
    """What the pipeline needs of a capture edge (CameraSource, MicrophoneSource, FileReplay).

    A source may also offer `stalled_ns(now_ns) -> int` (how long it has been stuck inside one read), which
    the replay clocks use to end a run whose decoder hangs."""

    name: str

    def prepare(
        self, short_side: int | None = None, sample_rate: int | None = None, frames_per_window: int | None = None
    ) -> None:
        """Before `start()`: deliver frames with short side `short_side` and audio at `sample_rate` Hz (the
        model's input; a file reader converts only the frames the m = `frames_per_window` slots will use);
        devices are opened here, before the model's warm-up."""

    def start(self, origin_ns: int | None = None) -> None:
        """Start capturing; live sources stamp time from `origin_ns` (monotonic ns) when it is given."""

    def stop(self) -> None: ...

    @property
    def status(self) -> SourceStatus: ...
