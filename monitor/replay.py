"""FileReplay: a media file played as if it were live (one thread; sec2sec's decoder underneath).

Clocks: `realtime` sleeps so each item leaves at its presentation time divided by `speed`; `virtual` and
`offline` do not sleep (the pipeline measures latency as if live, or not at all). Replay never drops
input: it waits for room in the queue, so the windows equal those of `sec2sec.windows.file_windows`.
A jump in the file's clock (nothing for more than `PACED_GAP_S` of media time) is not slept through in
`realtime` either: the pacing skips it (the windower turns it into a gap), so cost follows content.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from monitor.queues import first_line
from monitor.sources import InputCounters, InputQueue, Source, SourceEnd, SourceStatus
from sec2sec.config import NANOS_PER_SECOND
from sec2sec.media import AudioChunk, FrameTick, MediaReader, VideoFrame

CLOCKS = ("realtime", "virtual", "offline")
PACED_GAP_S = 10  # realtime: a pause longer than this between two items of the file is skipped, not slept


def item_time_ns(item: VideoFrame | FrameTick | AudioChunk) -> int:
    """Presentation time of a frame, or of the first sample of a chunk, in ns."""
    if isinstance(item, (VideoFrame, FrameTick)):
        return item.t_ns
    return item.first_sample * NANOS_PER_SECOND // item.sample_rate


class FileReplay(Source):
    """Decode `path` and put its frames and chunks on `out`, paced when `paced`. Opening happens here, so
    an unreadable file fails before any thread starts (MediaError, a ValueError). Frames are scaled down to
    `short_side` and audio resampled to `sample_rate` in this thread, before anything is queued."""

    name = "file"

    def __init__(
        self,
        path: str | Path,
        out: InputQueue,
        *,
        paced: bool,
        speed: float = 1.0,
        short_side: int | None = None,
        sample_rate: int | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"--speed {speed} must be > 0 (1.0 is real time, 2.0 twice as fast)")
        self.reader = MediaReader(path, short_side=short_side, sample_rate=sample_rate)
        self.info = self.reader.info
        self._out, self._paced, self._speed = out, paced, speed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._items = 0
        self._position_ns = 0
        self._error = ""
        self._done = False
        self._decoding_since_ns: int | None = None  # set while the thread is inside the decoder
        self.skipped_ns = 0  # realtime: media time not slept through (jumps in the file's clock)
        # the monotonic time that media time 0 is paced to: set by start(), moved back by each skipped jump
        self.origin_ns: int | None = None

    def prepare(
        self, short_side: int | None = None, sample_rate: int | None = None, frames_per_window: int | None = None
    ) -> None:
        """Before `start()`: the model's input size, audio rate and frames per window, applied in the decoding
        thread (only the frames the windows will use are converted)."""
        self.reader.set_output(short_side=short_side, sample_rate=sample_rate, frames_per_window=frames_per_window)

    def start(self, origin_ns: int | None = None) -> None:
        """Start decoding; a replay's clock is the file's own media time, so the `origin_ns` argument is not used:
        `self.origin_ns` becomes now (realtime pacing starts here)."""
        self.origin_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="file-replay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        error = ""
        items = iter(self.reader)
        try:
            while True:
                self._decoding_since_ns = time.monotonic_ns()
                item = next(items, None)
                self._decoding_since_ns = None
                if item is None or self._stop.is_set():
                    break
                t_ns = item_time_ns(item)
                wait_ns = self._pace(t_ns) if self._paced else 0
                if wait_ns > 0 and self._stop.wait(wait_ns / NANOS_PER_SECOND):
                    return
                if not self._out.put_wait(item):
                    return
                self._items += 1
                self._position_ns = max(self._position_ns, t_ns)
        except Exception as exc:  # noqa: BLE001 - any decoder failure ends the replay with its message
            error = first_line(exc)
            self._error = error
        finally:
            self._decoding_since_ns = None
            self._done = True
        if not self._stop.is_set():
            while not self._out.put_wait(SourceEnd(self.name, error=error), timeout=0.1):
                if self._stop.is_set() or self._out.closed:
                    return

    def _pace(self, t_ns: int) -> int:
        """How long (ns) to wait before the item at media time `t_ns` leaves. A jump in the file's clock is not
        waited for: the origin moves back by the wait instead, so that the capture clock
        (`monitor.assembly.capture_clock`, origin + media time / speed) stays the wall time items are paced at."""
        origin = self.origin_ns if self.origin_ns is not None else time.monotonic_ns()
        wait_ns = origin + int(t_ns / self._speed) - time.monotonic_ns()
        if t_ns - self._position_ns > PACED_GAP_S * NANOS_PER_SECOND and wait_ns > 0:
            self.origin_ns, self.skipped_ns = origin - wait_ns, self.skipped_ns + t_ns - self._position_ns
            return 0
        return max(0, wait_ns)

    def stalled_ns(self, now_ns: int) -> int:
        """How long the decoder has been stuck inside one read (0 when it is not decoding)."""
        since = self._decoding_since_ns
        return 0 if since is None else max(0, now_ns - since)

    def stop(self) -> None:
        """Idempotent: stop decoding, join the thread, close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._thread is None or not self._thread.is_alive():
            self.reader.close()

    def counters(self) -> InputCounters:
        """Items put on the queue (a replay drops none) and the damaged packets the decoder skipped."""
        return {"items": self._items, "dropped": 0, "damaged_packets_skipped": self.reader.skipped}

    @property
    def status(self) -> SourceStatus:
        total = self.info.duration_ns / NANOS_PER_SECOND
        detail = f"{Path(self.info.path).name} {self._position_ns / NANOS_PER_SECOND:.1f} / {total:.1f} s"
        if self.reader.skipped:
            detail += f", {self.reader.skipped} damaged packets skipped"
        running = self._thread is not None and self._thread.is_alive()
        return SourceStatus(self.name, running, self._items, 0, detail, self._error)
