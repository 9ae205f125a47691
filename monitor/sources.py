"""Shared pieces of the capture edges: what the pipeline needs of a source (`Source`, the one base every source
derives from, with the defaults of its optional abilities), what a source reports about itself (`SourceStatus`
for the dashboard, `InputCounters` for the sidecar) and what it emits at its end (`SourceEnd`)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol, TypedDict

from monitor.queues import BoundedQueue
from sec2sec.media import AudioChunk, FrameTick, VideoFrame


@dataclass(frozen=True)
class SourceStatus:
    """A snapshot of one source for the dashboard: name, state, counters, last error."""

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


Captured = VideoFrame | FrameTick | AudioChunk | SourceEnd  # what a source puts on the run's input queue
InputQueue = BoundedQueue[Captured]  # the queue every source of a run puts its frames, chunks and end on


class _Captured(TypedDict):
    items: int  # frames or chunks captured
    dropped: int  # items the source itself lost (a full queue, PortAudio overflows)


class InputCounters(_Captured, total=False):
    """What one source captured and lost over the whole run, under the sidecar's names (its summary's `input`
    report has one entry per source; docs/reliability.md says what each counts). Every counter a source can
    report is declared here, so a misspelt or renamed one is a type error; a new counter is one line here and
    one in the source's `counters()`."""

    overflows: int  # microphone: callbacks PortAudio flagged input_overflow
    queue_drops: int  # microphone: chunks displaced from the full input queue
    restamps: int  # microphone: times the sample clock was re-stamped (the ADC time jumped)
    samples_lost: int  # microphone, at the delivered rate: overflows' shortfall and forward re-stamps
    samples_restamped: int  # microphone, at the delivered rate: how far re-stamps moved the clock
    backlog_dropped: int  # camera: frames the device buffered before the run, dropped at its start
    damaged_packets_skipped: int  # file: packets the decoder could not read, skipped


class LossHandler(Protocol):
    """Where a source files input it lost, by the second (window) it belonged to (`LossLedger.add`)."""

    def __call__(self, window: int, frames: int = 0, samples: int = 0, restamped: int = 0) -> None: ...


class Source(abc.ABC):
    """What the pipeline needs of a capture edge (CameraSource, MicrophoneSource, FileReplay, and the tests'
    fakes): a `name`, `start`, `stop` and `status`. The optional abilities have their defaults here, and a source
    that has one overrides it:

    - `prepare(...)`: learn the model's input before `start()` (devices open here); default: nothing to do.
    - `counters()`: its `InputCounters`; default: items and dropped from its status.
    - `on_loss`: set by the pipeline; a source that can tell what it lost calls it (the microphone).
    - `stalled_ns(now_ns)`: how long it has been stuck inside one read (a replay's decoder); default 0.
    - `abandoned`: helper threads it left blocked in a driver (a stop that never returned); default none.
    - `origin_ns`: the monotonic time its media time 0 is paced to (a realtime replay); None for sources whose
      time is the run's clock (live devices) or that are not paced.
    """

    on_loss: LossHandler | None = None
    origin_ns: int | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the sidecar's input report, the dashboard and error lines call it ("camera", "microphone",
        "file"); a class attribute in each source."""

    def prepare(
        self, short_side: int | None = None, sample_rate: int | None = None, frames_per_window: int | None = None
    ) -> None:
        """Before `start()`: deliver frames with short side `short_side` and audio at `sample_rate` Hz (the
        model's input; a file reader converts only the frames the m = `frames_per_window` slots will use);
        devices are opened here, before the model's warm-up. Default: a source that needs none of it."""
        return

    @abc.abstractmethod
    def start(self, origin_ns: int | None = None) -> None:
        """Start capturing; live sources stamp time from `origin_ns` (monotonic ns) when it is given."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop capturing and release the device; idempotent, safe before `start()`."""

    @property
    @abc.abstractmethod
    def status(self) -> SourceStatus:
        """A snapshot for the dashboard."""

    def counters(self) -> InputCounters:
        """What it captured and lost over the run, under the sidecar's names."""
        status = self.status
        return {"items": status.items, "dropped": status.dropped}

    def stalled_ns(self, now_ns: int) -> int:
        """How long (ns) it has been stuck inside one read: 0 for sources that cannot tell."""
        return 0

    @property
    def abandoned(self) -> tuple[str, ...]:
        """The names of helper threads it left blocked (in a driver) when it stopped."""
        return ()
