"""CameraSource through a real cv2.VideoCapture on a synthetic mp4 (true colours known), a camera index that
does not exist, and injected captures for the failure and shutdown paths."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers.mjpeg_server import FPS, LEVEL_STEP, MjpegServer

from monitor.camera import CameraError, CameraSource, CaptureClock, camera_note
from monitor.queues import BoundedQueue
from monitor.sources import SourceEnd
from sec2sec.media import VideoFrame
from sec2sec.windows import Windower

N_FRAMES = 20
WIDTH, HEIGHT = 64, 48
# distinct solid RGB colours; red and blue differ by >= 100 in each, so a BGR/RGB swap cannot go unnoticed
COLOURS = [
    ((37 * k + 200) % 256, (91 * k + 40) % 256, (37 * k + 200 + 100 + 28 * (k % 2)) % 256) for k in range(N_FRAMES)
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x48, 20-frame mp4 at 20 fps; frame k is a solid COLOURS[k]."""
    path = tmp_path_factory.mktemp("camera") / "colours.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for r, g, b in COLOURS:
        writer.write(np.full((HEIGHT, WIDTH, 3), (b, g, r), np.uint8))  # OpenCV writes BGR
    writer.release()
    return path


def collect(q: BoundedQueue, timeout_s: float = 10.0) -> list[Any]:
    """Everything until (and including) the SourceEnd."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = q.get(timeout=0.1)
        if item is not None:
            items.append(item)
            if isinstance(item, SourceEnd):
                return items
    raise AssertionError(f"no SourceEnd within {timeout_s} s; got {len(items)} items")


def camera_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("camera", "camera-probe")]


def test_red_blue_differ_enough() -> None:
    assert min(abs(r - b) for r, _, b in COLOURS) >= 100
    assert len(set(COLOURS)) == N_FRAMES


def test_file_frames_arrive_in_order_as_rgb(clip: Path) -> None:
    q: BoundedQueue = BoundedQueue(64)
    origin = time.monotonic_ns()
    cam = CameraSource(str(clip), q, origin)
    assert cam.status.detail == "64x48 @ 20.0 fps" and not cam.status.running
    before = time.monotonic_ns() - origin
    cam.start()
    items = collect(q)
    frames, end = items[:-1], items[-1]
    assert end == SourceEnd("camera", error="")  # the end of a file is a normal end
    assert len(frames) == N_FRAMES and all(isinstance(f, VideoFrame) for f in frames)
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
        mean = frame.rgb.reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colour).max() < 12, (mean, colour)
    times = [f.t_ns for f in frames]
    assert all(a < b for a, b in itertools.pairwise(times))
    assert times[0] < before <= times[1]  # the first frame was grabbed by the constructor, before start()
    assert times[-1] <= time.monotonic_ns() - origin
    cam.stop()
    status = cam.status
    assert (status.name, status.running, status.items, status.dropped, status.error) == ("camera", False, 20, 0, "")
    assert camera_threads() == []


def test_frames_are_scaled_down_in_the_camera_thread(clip: Path) -> None:
    """prepare(short_side) makes the camera thread scale each frame (area filter) before it is queued, so no
    queue holds full-resolution frames; colours survive."""
    q: BoundedQueue = BoundedQueue(64)
    cam = CameraSource(str(clip), q, time.monotonic_ns())
    cam.prepare(short_side=24, sample_rate=16_000, frames_per_window=8)
    cam.start()
    frames = [item for item in collect(q) if isinstance(item, VideoFrame)]
    cam.stop()
    assert len(frames) == N_FRAMES and all(f.rgb.shape == (24, 32, 3) for f in frames)  # 64x48 -> 32x24
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert np.abs(frame.rgb.reshape(-1, 3).mean(axis=0) - colour).max() < 12


def test_a_new_origin_at_start_restarts_the_clock(clip: Path) -> None:
    """The pipeline opens the camera, warms the model up, then starts the camera at a new origin: the probed
    frame (grabbed before that origin) is dropped and every time counts from the new origin."""
    q: BoundedQueue = BoundedQueue(64)
    cam = CameraSource(str(clip), q, time.monotonic_ns() - 10_000_000_000)
    origin = time.monotonic_ns()
    cam.start(origin)
    frames = collect(q)[:-1]
    cam.stop()
    assert len(frames) == N_FRAMES - 1  # frame 0 was the probe
    assert 0 <= frames[0].t_ns < time.monotonic_ns() - origin
    mean = frames[0].rgb.reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - COLOURS[1]).max() < 12


def test_tiny_queue_keeps_the_newest_and_counts_drops(clip: Path) -> None:
    q: BoundedQueue = BoundedQueue(3)
    cam = CameraSource(str(clip), q, time.monotonic_ns())
    cam.start()
    deadline = time.monotonic() + 10
    while cam._thread is not None and cam._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    items = [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)]
    assert q.get(timeout=0) is None
    # 20 frames + the end marker went into 3 places: the last 2 frames and the end survive, 18 were dropped
    assert isinstance(items[2], SourceEnd)
    for frame, colour in zip(items[:2], COLOURS[-2:], strict=True):
        assert np.abs(frame.rgb.reshape(-1, 3).mean(axis=0) - colour).max() < 12
    assert (cam.status.items, cam.status.dropped) == (20, 18)
    assert q.dropped == 18
    cam.stop()


def test_missing_camera_index_fails_fast_with_a_fix() -> None:
    started = time.monotonic()
    with pytest.raises(CameraError) as err:
        CameraSource(97, BoundedQueue(4), 0)
    assert time.monotonic() - started < 30  # fails fast: only a hang takes this long
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert message.startswith("camera 97 could not be opened")
    assert "no camera was found" in message and "--no-camera" in message and "--replay" in message


def test_the_camera_error_names_the_cameras_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.camera

    monkeypatch.setattr(monitor.camera, "camera_nodes", lambda: ["/dev/video0", "/dev/video2"])
    with pytest.raises(CameraError) as err:
        CameraSource(97, BoundedQueue(4), 0)
    assert "cameras found: --camera 0 or 2 (see sec2sec-live --list-devices)" in str(err.value)


def test_a_number_as_text_is_a_camera_index() -> None:
    opened: list[int | str] = []

    def factory(device: int | str) -> FakeCapture:
        opened.append(device)
        return FakeCapture()

    cam = CameraSource("3", BoundedQueue(2), 0, capture_factory=factory)
    cam.stop()
    assert opened == [3] and cam.device == 3


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(CameraError, match="no such file") as err:
        CameraSource(str(missing), BoundedQueue(4), 0)
    assert str(missing) in str(err.value)


class FakeCapture:
    """An endless (or `frames`-long) camera; `block` makes grab() wait until it is set."""

    def __init__(self, frames: int | None = None, opened: bool = True, block: threading.Event | None = None) -> None:
        self.frames = frames
        self.opened = opened
        self.block = block
        self.grabs = 0
        self.released = False
        self.settings: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.settings[prop] = value
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def grab(self) -> bool:
        if self.block is not None:
            self.block.wait()
        if self.released or (self.frames is not None and self.grabs >= self.frames):
            return False
        self.grabs += 1
        time.sleep(0.002)
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        bgr = np.zeros((6, 8, 3), np.uint8)
        bgr[..., 2] = self.grabs % 256  # red channel in BGR order
        return True, bgr

    def release(self) -> None:
        self.released = True


def test_stop_is_idempotent_joins_and_releases() -> None:
    cap = FakeCapture()
    q: BoundedQueue = BoundedQueue(2)
    cam = CameraSource(0, q, time.monotonic_ns(), width=640, height=480, capture_factory=lambda device: cap)
    assert cap.settings == {cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480}
    assert cam.status.detail == "8x6 @ 30.0 fps"
    cam.start()
    cam.start()  # once only
    deadline = time.monotonic() + 5
    while cam.status.items < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cam.status.running and len(camera_threads()) == 1
    cam.stop()
    assert cap.released and camera_threads() == [] and not cam.status.running
    items = cam.status.items
    cam.stop()
    assert cam.status.items == items and cam.status.error == ""
    frame = q.get(timeout=0)
    assert isinstance(frame, VideoFrame) and frame.rgb[0, 0, 0] == frame.rgb.max() > 0  # red came out first (RGB)


def test_stop_before_start_releases() -> None:
    cap = FakeCapture()
    cam = CameraSource(1, BoundedQueue(2), 0, capture_factory=lambda device: cap)
    cam.stop()
    cam.stop()
    assert cap.released and camera_threads() == []
    cam.start()  # after stop: nothing starts
    assert camera_threads() == [] and not cam.status.running


def test_camera_that_stops_delivering_ends_with_an_error() -> None:
    cap = FakeCapture(frames=4)
    q: BoundedQueue = BoundedQueue(16)
    cam = CameraSource(2, q, 0, capture_factory=lambda device: cap)
    cam.start()
    items = collect(q)
    assert len(items) == 5 and all(isinstance(f, VideoFrame) for f in items[:4])
    assert items[-1].name == "camera" and "camera 2 stopped delivering frames" in items[-1].error
    cam._thread.join(2)
    assert cap.released and cam.status.error == items[-1].error and not cam.status.running
    cam.stop()


def test_unopened_and_silent_cameras_fail_clearly() -> None:
    closed = FakeCapture(opened=False)
    with pytest.raises(CameraError, match="camera 4 could not be opened"):
        CameraSource(4, BoundedQueue(2), 0, capture_factory=lambda device: closed)
    assert closed.released

    gate = threading.Event()
    stuck = FakeCapture(block=gate)
    started = time.monotonic()
    with pytest.raises(CameraError, match=r"gave no frame within 0.2 s"):
        CameraSource(0, BoundedQueue(2), 0, capture_factory=lambda device: stuck, first_frame_timeout_s=0.2)
    assert time.monotonic() - started < 30 and not stuck.released  # returned without waiting for the driver
    gate.set()  # the driver returns: the abandoned probe releases the device and ends
    deadline = time.monotonic() + 2
    while camera_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stuck.released and camera_threads() == []

    empty = FakeCapture(frames=0)
    with pytest.raises(CameraError, match="first frame could not be read"):
        CameraSource(0, BoundedQueue(2), 0, capture_factory=lambda device: empty)
    assert empty.released


def test_camera_note_mentions_the_option() -> None:
    note = camera_note()
    assert "--camera N" in note and "/dev/video" in note


# ---- time that lies: a backlog at start, capture clocks (monitor/camera.py CaptureClock) ----


@pytest.mark.slow
def test_a_network_camera_backlog_is_dropped_after_a_slow_warm_up() -> None:
    """An MJPEG stream on 127.0.0.1 at 20 fps, opened, then left unread for 2.5 s (the model warming up): the
    ~50 frames buffered meanwhile are dropped and counted, not stamped "now" in a burst; every frame kept was
    produced after the run's origin, and no window holds more than a second's worth."""
    with MjpegServer() as server:
        q: BoundedQueue = BoundedQueue(512)
        cam = CameraSource(server.url, q, time.monotonic_ns())
        time.sleep(2.5)  # the warm-up
        origin = time.monotonic_ns()
        cam.start(origin)
        time.sleep(2.0)  # the stream's grey levels identify frames for 6.4 s in all
        cam.stop()
    frames = [item for item in iter(lambda: q.get(timeout=0.05), None) if isinstance(item, VideoFrame)]
    assert cam.backlog >= 35, cam.backlog  # 50 produced while unread (some may still sit in transit)
    produced_ns = [server.started[0] + round(float(f.rgb.mean()) / LEVEL_STEP) * 1_000_000_000 // FPS for f in frames]
    assert min(produced_ns) >= origin - 150_000_000  # nothing from the warm-up (one frame of slack)
    windower = Windower(frames_per_window=4, sample_rate=16_000, expect_audio=False)
    for frame in frames:
        windower.push_frame(frame)
    seen = [w.frames_seen for w in windower.finish()]
    assert seen and max(seen) <= FPS + 3, seen  # before: window 0 held the whole backlog (~70 frames)
    assert (not cam.clock.trusted and "x real time" in cam.clock.reason) or "old" in cam.clock.reason


def test_a_capture_clock_at_real_pace_is_used_and_mapped_onto_the_read_clock() -> None:
    clock = CaptureClock()
    read0 = 5_000_000_000
    stamps = [clock.stamp(k * 40.0, read0 + k * 40_000_000 + (k % 3) * 7_000_000) for k in range(200)]
    assert clock.trusted, clock.reason
    assert stamps == [read0 + k * 40_000_000 for k in range(200)]  # read jitter gone; offset = smallest delay


@pytest.mark.parametrize(
    ("captures_ms", "reason"),
    [
        ([0.0, 40.0, 40.0, 120.0], "its capture times do not increase"),
        ([-1.0, -1.0, -1.0, -1.0], "the device gives no capture time"),
        ([k * 32.0 for k in range(200)], "its clock ran at 0.80x real time"),
    ],
)
def test_a_capture_clock_that_fails_a_check_is_dropped_for_read_times(captures_ms: list[float], reason: str) -> None:
    clock = CaptureClock()
    reads = [1_000_000_000 + k * 40_000_000 for k in range(len(captures_ms))]
    stamps = [clock.stamp(c, r) for c, r in zip(captures_ms, reads, strict=True)]
    assert not clock.trusted and clock.reason == reason
    assert stamps[-1] == reads[-1] and all(a < b for a, b in itertools.pairwise(stamps))


def test_a_fresh_frame_dated_old_by_the_capture_clock_drops_it() -> None:
    clock = CaptureClock()
    clock.stamp(0.0, 1_000_000_000)
    t = clock.stamp(1_000.0, 3_000_000_000, fresh=True)  # waited for, yet dated 1 s old
    assert not clock.trusted and "1.00 s old was just captured" in clock.reason and t == 3_000_000_000
