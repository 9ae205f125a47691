"""The contract of a capture edge (monitor/sources.py): every source derives from `Source`, names itself, and
reports its counters under the sidecar's names (`InputCounters`); the optional abilities have defaults there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.pipeline_fakes import ScriptedSource

from monitor.camera import CameraSource
from monitor.microphone import MicrophoneSource
from monitor.queues import BoundedQueue
from monitor.replay import FileReplay
from monitor.sources import InputCounters, Source, SourceStatus

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "samples" / "demo_face.mp4"
DECLARED = InputCounters.__required_keys__ | InputCounters.__optional_keys__


def test_every_source_derives_from_the_one_base_and_names_itself() -> None:
    sources = (CameraSource, MicrophoneSource, FileReplay, ScriptedSource)
    assert all(issubclass(source, Source) for source in sources)
    assert [source.name for source in sources[:3]] == ["camera", "microphone", "file"]


def test_a_replay_and_a_camera_report_their_counters_under_the_sidecar_names() -> None:
    """(The microphone's: test_microphone.py::test_a_microphone_with_missing_blocks_shows_them_in_the_rows...)"""
    replay = FileReplay(DEMO, BoundedQueue(4), paced=False)
    assert replay.counters() == {"items": 0, "dropped": 0, "damaged_packets_skipped": 0}
    replay.stop()
    camera = CameraSource(str(DEMO), BoundedQueue(4), time.monotonic_ns())  # a file read as a camera
    try:
        camera.start()
        deadline = time.monotonic() + 60
        while camera.status.items < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        camera.stop()
    counters = camera.counters()
    assert set(counters) <= DECLARED and set(counters) == {"items", "dropped", "backlog_dropped"}
    assert counters["items"] >= 10 and counters["dropped"] >= counters["items"] - 4  # nobody read the queue of 4


def test_a_source_gets_the_defaults_of_what_it_cannot_do() -> None:
    class Nameless(Source):
        def start(self, origin_ns: int | None = None) -> None:
            pass

        def stop(self) -> None:
            pass

        @property
        def status(self) -> SourceStatus:
            return SourceStatus("minimal", True, items=5, dropped=1)

    class Minimal(Nameless):
        name = "minimal"

    source = Minimal()
    source.prepare(112, 16_000, 8)  # nothing to prepare
    assert source.counters() == {"items": 5, "dropped": 1}
    assert (source.stalled_ns(10**12), source.abandoned, source.origin_ns, source.on_loss) == (0, (), None, None)
    with pytest.raises(TypeError, match="name"):
        Nameless()  # type: ignore[abstract]
