"""Camera edge: one daemon thread reads frames from OpenCV, stamps them on the shared monotonic clock and keeps
the newest in a bounded queue.

A frame's time is the capture's own clock where the backend gives one (OpenCV's `CAP_PROP_POS_MSEC`: V4L2's
buffer timestamps, a stream's presentation times), mapped onto the shared monotonic clock and trusted only
while it increases and keeps pace with the reads (`CaptureClock`); otherwise `time.monotonic_ns()` taken right
after `grab()` (before the slower decode in `retrieve()`). What the device buffered before the run started
(frames queued in the driver, or in a network stream's socket while the model warmed up) is dropped and
counted (`backlog`): at the start of a run, frames that arrive in a burst, faster than the camera's rate,
were waiting already. Frames are scaled down to the model's
input size (`prepare(short_side)`) in the camera thread, so no queue holds full-resolution frames. The device
may also be a video file path (handy for tests; the CLI sends files to --replay): it is read as fast as it
decodes, and its end is reported as a normal `SourceEnd`.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from monitor.sources import InputCounters, InputQueue, Source, SourceEnd, SourceStatus
from sec2sec.media import VideoFrame, scaled_size

FIRST_FRAME_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 2.0
DRAIN_MAX_S = 5.0  # at most this long dropping a backlog at start (a stream served faster than real time)
BURST_NS = 20_000_000  # a frame that comes sooner than this (or half a frame interval) was waiting already
DEFAULT_FPS = 30.0  # assumed when the device does not say its rate
FRESH_LAG_NS = 250_000_000  # a frame waited for is this new at most, by a capture clock that can be trusted
MAX_LAG_NS = 2_000_000_000  # a capture clock whose frames seem older than this when read is not trusted
RATE_SPAN_NS = 3_000_000_000  # reads over which the capture clock's pace is compared with the monotonic clock
RATE_TOLERANCE = 0.1  # more than 10% faster or slower than the reads: not a clock of real time


class CaptureClock:
    """Frame times from the capture's own clock, mapped onto the monotonic clock, or the read time.

    The mapping adds the smallest (read - capture) difference seen (the transport delay), so a frame is never
    stamped after it was read. The capture clock is dropped for good, falling back to read times (and
    `reason` says why), when a stamp does not increase; when a frame known to be fresh (the first one waited
    for at the start of a run) seems older than FRESH_LAG_NS, or any frame older than MAX_LAG_NS; or when over
    RATE_SPAN_NS of reads it ran more than RATE_TOLERANCE faster or slower than real time (an MJPEG stream's
    "clock" is often its frame count over a guessed rate). Times stay increasing across the switch.
    """

    def __init__(self) -> None:
        self.trusted = True
        self.reason = ""
        self._offset: int | None = None
        self._last_capture: int | None = None
        self._last_ns: int | None = None
        self._reference: tuple[int, int] | None = None  # (capture, read) where the pace check started

    def stamp(self, capture_ms: float | None, read_ns: int, *, fresh: bool = False) -> int:
        """Monotonic time (ns) of a frame whose capture clock says `capture_ms` (None: there is none), read at
        `read_ns`; `fresh`: the frame is known to have been captured just before it was read."""
        t = read_ns
        if self.trusted:
            mapped = self._mapped(capture_ms, read_ns, fresh)
            if isinstance(mapped, str):
                self.trusted, self.reason = False, mapped
            else:
                t = mapped
        if self._last_ns is not None:
            t = max(t, self._last_ns + 1)
        self._last_ns = t
        return t

    def _mapped(self, capture_ms: float | None, read_ns: int, fresh: bool) -> int | str:
        """The frame's capture time on the monotonic clock (ns), or why the capture clock cannot be trusted
        with this frame; updates the mapping."""
        if capture_ms is None or not capture_ms >= 0:
            return "the device gives no capture time"
        capture = round(capture_ms * 1_000_000)
        if self._last_capture is not None and capture <= self._last_capture:
            return "its capture times do not increase"
        self._last_capture = capture
        self._offset = read_ns - capture if self._offset is None else min(self._offset, read_ns - capture)
        lag = read_ns - (capture + self._offset)
        if lag > (FRESH_LAG_NS if fresh else MAX_LAG_NS):
            return f"a frame it dates {lag / 1e9:.2f} s old was {'just captured' if fresh else 'read late'}"
        if self._reference is None or fresh:
            self._reference = (capture, read_ns)
        elif read_ns - self._reference[1] >= RATE_SPAN_NS:
            pace = (capture - self._reference[0]) / (read_ns - self._reference[1])
            if abs(pace - 1) > RATE_TOLERANCE:
                return f"its clock ran at {pace:.2f}x real time"
            self._reference = (capture, read_ns)
        return capture + self._offset


class CameraError(ValueError):
    """A camera that cannot be opened or gives no frames; the one-line message names the problem and the fix."""


def _cv2() -> Any:
    """OpenCV, imported on first use (keeps `--list-devices` and replay from loading it)."""
    import cv2

    return cv2


def _open_capture(device: int | str) -> Any:
    """The default capture factory: `cv2.VideoCapture(device)`, with OpenCV's own log silenced while it probes
    (a missing camera would otherwise print several [ERROR]/[WARN] lines before our one-line message)."""
    cv2 = _cv2()
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(device)
    finally:
        cv2.utils.logging.setLogLevel(level)


def camera_nodes() -> list[str]:
    """The V4L2 device nodes present (/dev/video0, ...), in numeric order."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


def _found() -> str:
    """What to try instead of a camera that failed: the cameras that exist, or the camera-less ways to run."""
    indices = [node.removeprefix("/dev/video") for node in camera_nodes()]
    if not indices:
        return "no camera was found on this machine; run microphone-only with --no-camera, or --replay a file"
    return f"cameras found: --camera {' or '.join(indices)} (see sec2sec-live --list-devices)"


def _is_file(device: int | str) -> bool:
    return isinstance(device, str) and os.path.isfile(device)


def _open_error(device: int | str) -> str:
    """Why `device` could not be opened, and what to try instead (one line)."""
    if isinstance(device, int):
        return f"camera {device} could not be opened: no such device, or it is busy in another program; {_found()}"
    if not os.path.exists(device) and ("/" in device or "." in device) and "://" not in device:
        return f"camera {device!r} could not be opened: no such file or device; {_found()}"
    return f"camera {device!r} could not be opened by OpenCV; give a camera index or a /dev/videoN path; {_found()}"


def camera_note() -> str:
    """Text for `--list-devices` about cameras: the V4L2 nodes present (no device is opened, so it is fast)."""
    nodes = camera_nodes()
    lines = ["Cameras (OpenCV): pick one with --camera N, where N is the number in /dev/videoN, or a path/URL."]
    if nodes:
        lines += [f"  {node}" for node in nodes]
        lines.append("  (a webcam often exposes two nodes; the first one gives the picture)")
    else:
        lines.append(
            "  no /dev/video* device found; `v4l2-ctl --list-devices` lists cameras where v4l-utils is installed"
        )
    return "\n".join(lines)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray / BGRA) image -> a new contiguous uint8 (H, W, 3) RGB array."""
    cv2 = _cv2()
    code = cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    rgb: np.ndarray = cv2.cvtColor(image, code)
    return rgb


class CameraSource(Source):
    """Capture frames from an OpenCV device (index, /dev path, URL or file) into `out` with `put_latest`.

    The constructor opens the device and reads one frame (within `first_frame_timeout_s`), so a wrong camera
    fails here with a `CameraError` rather than later in a thread. That first frame is not lost: `start()`
    emits it first, with the time it was grabbed. `stop()` is idempotent and joins the thread.
    """

    name = "camera"

    def __init__(
        self,
        device: int | str,
        out: InputQueue,
        origin_ns: int,
        *,
        width: int | None = None,
        height: int | None = None,
        capture_factory: Callable[[int | str], Any] | None = None,
        first_frame_timeout_s: float = FIRST_FRAME_TIMEOUT_S,
    ) -> None:
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)  # "0" from a command line means camera 0, not a file named 0
        self.device = device
        self._out = out
        self._origin_ns = origin_ns
        self._is_file = _is_file(device)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._released = False
        self._abandoned = False
        self._items = 0
        self._dropped = 0
        self.backlog = 0  # frames buffered before the run started, dropped
        self.clock = CaptureClock()
        self._error = ""
        self._ended = False
        self.short_side: int | None = None
        self._cap = (capture_factory or _open_capture)(device)
        if not self._cap.isOpened():
            self._release()
            raise CameraError(_open_error(device))
        self._request_size(width, height)
        self._first: VideoFrame | None = None
        h, w = self._read_first_frame(first_frame_timeout_s).rgb.shape[:2]
        fps = float(self._cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        self._frame_ns = int(1e9 / (fps if 1 <= fps <= 1000 else DEFAULT_FPS))
        self._detail = f"{w}x{h} @ {fps:.1f} fps" if fps > 0 else f"{w}x{h} @ ? fps"

    def _request_size(self, width: int | None, height: int | None) -> None:
        """Ask the device for a capture size (cameras may pick the nearest they support; files ignore it)."""
        cv2 = _cv2()
        if width is not None:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def _read_first_frame(self, timeout_s: float) -> VideoFrame:
        """Read one frame in a helper thread so a device that never delivers cannot hang the caller; it is kept
        in `_first` too (for `start()` to emit)."""
        probe = threading.Thread(target=self._probe, name="camera-probe", daemon=True)
        probe.start()
        probe.join(timeout_s)
        if probe.is_alive():
            with self._lock:
                self._abandoned = True  # the probe releases the device once the driver returns
            raise CameraError(
                f"camera {self.device!r} opened but gave no frame within {timeout_s:g} s; "
                "check that no other program uses it, or try another --camera"
            )
        if self._first is None:
            self._release()
            raise CameraError(
                f"camera {self.device!r} opened but its first frame could not be read"
                f"{' (' + self._error + ')' if self._error else ''}; try another --camera, or check the file"
            )
        return self._first

    def _probe(self) -> None:
        """Body of the first-frame helper thread."""
        try:
            self._first = self._read_one()
        except Exception as exc:  # noqa: BLE001 - thread boundary: the constructor reports it as CameraError
            self._error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            abandoned = self._abandoned
        if abandoned:
            self._release()

    def _grab(self) -> int | None:
        """Grab one frame and stamp it (see CaptureClock): its time on the run's clock, None at the end."""
        if not self._cap.grab():
            return None
        read_ns = time.monotonic_ns()
        capture_ms = None if self._is_file else self._cap.get(_cv2().CAP_PROP_POS_MSEC)
        return self.clock.stamp(capture_ms, read_ns) - self._origin_ns

    def _decode(self, t_ns: int | None) -> VideoFrame | None:
        """The frame just grabbed, decoded and converted; None when there is none."""
        if t_ns is None:
            return None
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            return None
        return VideoFrame(rgb=_to_rgb(self._scaled(image)), t_ns=t_ns)  # scale first: convert fewer pixels

    def _read_one(self) -> VideoFrame | None:
        """Grab, stamp, decode and convert one frame; None when the device or file has no more."""
        return self._decode(self._grab())

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        """`image` with its short side reduced to `short_side` (area filter); the same array when no smaller."""
        h, w = image.shape[:2]
        width, height = scaled_size(w, h, self.short_side)
        if (width, height) == (w, h):
            return image
        cv2 = _cv2()
        scaled: np.ndarray = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return scaled

    def prepare(
        self, short_side: int | None = None, sample_rate: int | None = None, frames_per_window: int | None = None
    ) -> None:
        """Before `start()`: frames will be scaled down (area filter) to short side `short_side`."""
        self.short_side = short_side

    def start(self, origin_ns: int | None = None) -> None:
        """Start the capture thread (once). A new `origin_ns` restarts the clock; the probed first frame,
        grabbed before that origin, is then discarded."""
        if self._thread is not None or self._stop_event.is_set():
            return
        if origin_ns is not None and origin_ns != self._origin_ns:
            self._origin_ns, self._first = origin_ns, None
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _emit(self, frame: VideoFrame) -> None:
        frame = VideoFrame(self._scaled(frame.rgb), frame.t_ns)  # only the probed first frame is still full size
        self._dropped += self._out.put_latest(frame)
        self._items += 1

    def _drain(self) -> VideoFrame | None:
        """Drop (and count in `backlog`) what the device buffered before the run: frames that come sooner than
        half the camera's frame interval (at most BURST_NS) were waiting already. Returns the first frame that
        had to be waited for (None at the end of the stream); gives up dropping after DRAIN_MAX_S (a stream
        served faster than real time)."""
        deadline = time.monotonic_ns() + int(DRAIN_MAX_S * 1e9)
        while not self._stop_event.is_set() and time.monotonic_ns() < deadline:
            before = time.monotonic_ns()
            if not self._cap.grab():
                return None
            if time.monotonic_ns() - before >= min(self._frame_ns // 2, BURST_NS):
                capture_ms = self._cap.get(_cv2().CAP_PROP_POS_MSEC)
                return self._decode(self.clock.stamp(capture_ms, time.monotonic_ns(), fresh=True) - self._origin_ns)
            self.backlog += 1
        return self._read_one()

    def _run(self) -> None:
        """Thread body: emit frames until stopped, the file ends or the device fails; then release the device."""
        try:
            frame, self._first = self._first, None
            if frame is None:  # discarded by a clock restart in start(): a run after a warm-up
                frame = self._read_one() if self._is_file else self._drain()
            while frame is not None and not self._stop_event.is_set():
                self._emit(frame)
                frame = self._read_one()
            if not self._stop_event.is_set():
                self._finish("" if self._is_file else f"camera {self.device!r} stopped delivering frames")
        except Exception as exc:  # noqa: BLE001 - thread boundary: every failure becomes a SourceEnd
            self._finish(f"camera {self.device!r} failed: {type(exc).__name__}: {exc}")
        finally:
            self._release()

    def _finish(self, error: str) -> None:
        """Record the end and tell the pipeline (an end marker must not be lost, so it displaces a frame)."""
        self._error = error
        self._ended = True
        self._dropped += self._out.put_latest(SourceEnd(self.name, error=error))

    def _release(self) -> None:
        """Release the capture exactly once."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._cap.release()

    def stop(self) -> None:
        """Stop capturing: set the event, join the thread (2 s), release the device. Safe to call twice or early."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                self._error = self._error or f"camera thread did not stop within {JOIN_TIMEOUT_S:g} s"
                return  # it releases the device itself when the driver returns
        self._release()

    def _timing_note(self) -> str:
        """How frames are stamped and what was dropped at start, for the dashboard's detail line."""
        note = "" if self._is_file or self.clock.trusted else f", read-time stamps ({self.clock.reason})"
        return note + (f", {self.backlog} frames buffered before the run dropped" if self.backlog else "")

    @property
    def status(self) -> SourceStatus:
        """A snapshot for the dashboard: running, frames captured, frames dropped, size and rate, last error."""
        thread = self._thread
        running = thread is not None and thread.is_alive() and not self._ended and not self._stop_event.is_set()
        return SourceStatus(
            name=self.name,
            running=running,
            items=self._items,
            dropped=self._dropped,
            detail=self._detail + self._timing_note(),
            error=self._error,
        )

    def counters(self) -> InputCounters:
        """Frames captured and dropped (a full queue), and the backlog dropped at the start."""
        return {"items": self._items, "dropped": self._dropped, "backlog_dropped": self.backlog}
