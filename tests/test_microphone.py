"""MicrophoneSource: device selection, the PortAudio-missing message, the callback's stamping and counters
(through an injected stream), and a real recording through PortAudio's `pulse` device from a PulseAudio null
sink playing a known tone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers.configs import small_toml
from helpers.fault_process import finish, start
from helpers.pulse_fixture import RATE, TONE_HZ, PulseServer, pulse_server  # noqa: F401 - pulse_server is a fixture

from monitor import microphone
from monitor.microphone import (
    NO_INPUT_DEVICE,
    PORTAUDIO_MISSING,
    InputDevice,
    MicrophoneError,
    MicrophoneSource,
    SampleClock,
    list_devices,
    resolve_device,
)
from monitor.queues import BoundedQueue
from monitor.sources import SourceEnd
from sec2sec.media import AudioChunk

DEVICES = [
    InputDevice(
        index=0, name="HDA Intel PCH: ALC257 Analog (hw:0,0)", hostapi="ALSA", channels=2, default_samplerate=44100
    ),
    InputDevice(index=3, name="USB Audio Mic: Audio (hw:1,0)", hostapi="ALSA", channels=1, default_samplerate=48000),
    InputDevice(index=5, name="pulse", hostapi="ALSA", channels=32, default_samplerate=44100),
    InputDevice(index=6, name="default", hostapi="ALSA", channels=32, default_samplerate=44100),
]


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four input devices, index 6 the default."""
    monkeypatch.setattr(microphone, "_query_devices", lambda: (list(DEVICES), 6))


def drain(q: BoundedQueue) -> list[Any]:
    items = []
    while (item := q.get(timeout=0)) is not None:
        items.append(item)
    return items


# --- device selection -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fake_devices")
def test_resolve_by_default_index_and_name() -> None:
    assert resolve_device(None).index == 6
    assert resolve_device(3).name.startswith("USB Audio Mic")
    assert resolve_device("3").index == 3  # a number given as text on the command line
    assert resolve_device("usb audio").index == 3  # case-insensitive substring
    assert resolve_device("PULSE").index == 5
    assert resolve_device("default").index == 6  # exact name, although "default" appears nowhere else


@pytest.mark.usefixtures("fake_devices")
def test_ambiguous_and_missing_names_list_the_candidates() -> None:
    with pytest.raises(ValueError, match="ambiguous") as ambiguous:
        resolve_device("hw:")
    message = str(ambiguous.value)
    assert "0 'HDA Intel PCH: ALC257 Analog (hw:0,0)'" in message and "3 'USB Audio Mic: Audio (hw:1,0)'" in message
    assert "pulse" not in message
    with pytest.raises(ValueError, match="no audio input device matches 'webcam'") as missing:
        resolve_device("webcam")
    assert all(d.label() in str(missing.value) for d in DEVICES)
    with pytest.raises(ValueError, match="audio device 4 does not exist") as bad_index:
        resolve_device(4)
    assert "5 'pulse' (ALSA)" in str(bad_index.value)


def test_default_falls_back_to_first_input_and_no_input_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(microphone, "_query_devices", lambda: (DEVICES[1:3], None))
    assert resolve_device(None).index == 3
    monkeypatch.setattr(microphone, "_query_devices", lambda: ([], None))
    with pytest.raises(MicrophoneError) as err:
        MicrophoneSource(None, BoundedQueue(4), 0, stream_factory=FakeStream.factory([]))
    assert str(err.value) == NO_INPUT_DEVICE


def test_portaudio_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(microphone, "_import_sounddevice", no_portaudio)
    with pytest.raises(MicrophoneError) as err:
        MicrophoneSource(None, BoundedQueue(4), 0)
    assert str(err.value) == PORTAUDIO_MISSING
    assert "\n" not in PORTAUDIO_MISSING and "apt-get install libportaudio2" in PORTAUDIO_MISSING
    assert "--no-mic" in PORTAUDIO_MISSING
    with pytest.raises(MicrophoneError, match="PortAudio is not installed"):
        list_devices()


@pytest.mark.usefixtures("fake_devices")
def test_list_devices_marks_the_default() -> None:
    text = list_devices()
    assert "*   6 default (ALSA), 32 in, 44100 Hz" in text
    assert "    3 USB Audio Mic: Audio (hw:1,0) (ALSA), 1 in, 48000 Hz" in text
    assert "--camera N" in text


def test_invalid_arguments(fake_devices: None) -> None:
    with pytest.raises(ValueError, match="sample_rate = 0"):
        MicrophoneSource(None, BoundedQueue(4), 0, sample_rate=0)
    with pytest.raises(ValueError, match="blocksize = -1"):
        MicrophoneSource(None, BoundedQueue(4), 0, blocksize=-1)


# --- stamping -----------------------------------------------------------------------------------------------------


def test_sample_clock_maps_adc_time_and_stays_contiguous() -> None:
    rate = 48_000
    clock = SampleClock(origin_ns=1_000_000_000, sample_rate=rate)
    # PortAudio's clock reads 100.0 s when the monotonic clock reads 5.0 s: offset -95 s.
    first, skip = clock.stamp(480, adc_time_s=99.99, current_time_s=100.0, now_ns=5_000_000_000)
    assert (first, skip) == (round((4.99 - 1.0) * rate), 0)  # 191520
    # jitter of 15 ms (ALSA's pulse plugin jitters past 10 ms under load), under the 25 ms tolerance (and more
    # than the block of 480 = 10 ms), keeps the count contiguous
    first2, _ = clock.stamp(480, adc_time_s=99.99 + 0.01 + 0.015, current_time_s=100.02, now_ns=0)
    assert first2 == first + 480 and clock.restamps == 0
    # a 0.5 s gap (lost buffers): re-stamp and count it
    first3, _ = clock.stamp(480, adc_time_s=99.99 + 0.02 + 0.5, current_time_s=100.6, now_ns=0)
    assert first3 == round((4.99 + 0.02 + 0.5 - 1.0) * rate) and clock.restamps == 1
    # the clock says this block starts 1440 samples (30 ms) before the previous one ended: re-stamp, but never go
    # back in time: trim the overlap
    first4, skip4 = clock.stamp(2400, adc_time_s=99.99 + 0.52 + 0.01 - 0.030, current_time_s=100.6, now_ns=0)
    assert (first4, skip4) == (first3 + 480, 1440) and clock.restamps == 2
    first5, skip5 = clock.stamp(480, adc_time_s=99.99 + 0.52 + 0.01 - 0.030 + 0.05, current_time_s=100.7, now_ns=0)
    assert (first5, skip5) == (first4 + 960, 0) and clock.restamps == 2


def test_sample_clock_without_adc_time_and_before_origin() -> None:
    clock = SampleClock(origin_ns=1_000_000_000, sample_rate=48_000)
    # inputBufferAdcTime == 0 (some host APIs): the block ended now, so it began frames / rate earlier
    assert clock.stamp(480, adc_time_s=0.0, current_time_s=0.0, now_ns=2_000_000_000) == (47_520, 0)
    assert clock.stamp(480, adc_time_s=0.0, current_time_s=0.0, now_ns=2_010_000_000) == (48_000, 0)
    early = SampleClock(origin_ns=10_000_000_000, sample_rate=48_000)
    # a block that began 5 ms before the origin: its first 240 samples are dropped, the rest start at 0
    assert early.stamp(480, adc_time_s=0.0, current_time_s=0.0, now_ns=10_005_000_000) == (0, 240)
    assert early.stamp(480, adc_time_s=0.0, current_time_s=0.0, now_ns=10_015_000_000) == (240, 0)


# --- the callback, through an injected stream ---------------------------------------------------------------------


@dataclass
class FakeFlags:
    """Stands in for sounddevice.CallbackFlags."""

    input_overflow: bool = False
    input_underflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow or self.input_underflow


@dataclass
class FakeTime:
    inputBufferAdcTime: float
    currentTime: float


@dataclass
class Block:
    """One scripted callback: its data (frames, channels), an extra ADC jump in seconds, status flags."""

    data: np.ndarray
    jump_s: float = 0.0
    flags: FakeFlags | None = None
    zero_adc: bool = False


class FakeStream:
    """A stand-in for sounddevice.InputStream: start() runs the scripted callbacks synchronously, with a
    PortAudio clock equal to the monotonic clock (so stamps can be checked against the origin)."""

    def __init__(self, script: list[Block], **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.script = script
        self.active = False
        self.closed = False

    @classmethod
    def factory(cls, script: list[Block], made: list[FakeStream] | None = None) -> Callable[..., FakeStream]:
        def make(**kwargs: Any) -> FakeStream:
            stream = cls(script, **kwargs)
            if made is not None:
                made.append(stream)
            return stream

        return make

    def start(self) -> None:
        self.active = True
        rate = self.kwargs["samplerate"]
        base = time.monotonic() - 0.002  # the first block was captured 2 ms ago
        position = 0
        callback = self.kwargs["callback"]
        for block in self.script:
            base += block.jump_s
            adc = base + position / rate
            info = FakeTime(0.0, 0.0) if block.zero_adc else FakeTime(adc, time.monotonic())
            callback(block.data, len(block.data), info, block.flags or FakeFlags())
            position += len(block.data)

    def end_unexpectedly(self) -> None:
        self.active = False
        self.kwargs["finished_callback"]()

    def stop(self) -> None:
        if self.active:
            self.active = False
            self.kwargs["finished_callback"]()

    def close(self) -> None:
        self.closed = True


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """(n, channels) float32 data whose first channel counts samples (so continuity shows in the values)."""
    x = (np.arange(start, start + n, dtype=np.float32) / 10_000)[:, None]
    if channels == 1:
        return x
    return np.concatenate([x * 2, np.zeros((n, channels - 1), np.float32)], axis=1)  # mean over 2 ch = x


@pytest.mark.usefixtures("fake_devices")
def test_callback_copies_stamps_counts_and_restamps_on_a_jump() -> None:
    rate = 1_000
    script = [
        Block(ramp(0, 100)),
        Block(ramp(100, 100), flags=FakeFlags(input_overflow=True)),
        Block(ramp(200, 100), flags=FakeFlags(input_underflow=True)),
        Block(ramp(300, 100), jump_s=0.5),  # 500 samples lost upstream: re-stamp
        Block(ramp(400, 100)),
    ]
    made: list[FakeStream] = []
    q: BoundedQueue = BoundedQueue(16)
    origin = time.monotonic_ns() - 2 * 10**9  # the pipeline started 2 s ago
    mic = MicrophoneSource(
        "usb", q, origin, sample_rate=rate, blocksize=100, stream_factory=FakeStream.factory(script, made)
    )
    mic.start()
    (stream,) = made
    assert stream.kwargs["device"] == 3 and stream.kwargs["channels"] == 1 and stream.kwargs["dtype"] == "float32"
    assert stream.kwargs["samplerate"] == rate and stream.kwargs["blocksize"] == 100
    chunks = drain(q)
    assert [type(c) for c in chunks] == [AudioChunk] * 5
    for chunk, block in zip(chunks, script, strict=True):
        np.testing.assert_array_equal(chunk.samples, block.data[:, 0])
        assert chunk.samples.dtype == np.float32 and chunk.sample_rate == rate
        assert not np.shares_memory(chunk.samples, block.data)  # copied out of PortAudio's buffer
    assert abs(chunks[0].first_sample - 2 * rate) <= 5  # 2 s after the origin, less the 2 ms of the block
    assert [c.first_sample - chunks[0].first_sample for c in chunks] == [0, 100, 200, 800, 900]
    assert (mic.overflows, mic.other_flags, mic.restamps, mic.queue_drops) == (1, 1, 1, 0)
    status = mic.status
    assert (status.name, status.running, status.items, status.dropped) == ("microphone", True, 5, 1)
    assert status.detail == "USB Audio Mic: Audio (hw:1,0) 1000 Hz" and status.error == ""
    mic.stop()
    assert stream.closed and not mic.status.running and drain(q) == []  # a requested stop is no SourceEnd


def lossy_script(rate: int = 16_000) -> list[Block]:
    """3 s in 0.1 s blocks: at 1.5 s an overflow loses 50 ms (within the tolerance of one block: hidden by
    the contiguous count), at 2.5 s the stream jumps 500 ms (re-stamped)."""
    block = rate // 10
    script = [Block(ramp(k * block, block)) for k in range(30)]
    script[15] = Block(script[15].data, jump_s=0.05, flags=FakeFlags(input_overflow=True))
    script[25] = Block(script[25].data, jump_s=0.5)
    return script


@pytest.mark.usefixtures("fake_devices")
def test_samples_lost_and_restamped_are_counted_and_filed_under_their_second() -> None:
    losses: list[tuple[int, int, int]] = []
    mic = MicrophoneSource(
        "usb",
        BoundedQueue(100),
        time.monotonic_ns(),
        sample_rate=16_000,
        stream_factory=FakeStream.factory(lossy_script()),
    )
    mic.on_loss = lambda second, samples=0, restamped=0: losses.append((second, samples, restamped))
    mic.start()
    mic.stop()
    assert (mic.overflows, mic.restamps) == (1, 1)
    (second_1, lost_1, moved_1), (second_2, lost_2, moved_2) = losses
    assert (second_1, moved_1, second_2) == (1, 0, 2) and abs(lost_1 - 800) <= 2  # 50 ms at 16 kHz
    assert abs(lost_2 - 8000) <= 2 and abs(moved_2 - 8800) <= 4  # the re-stamp also undoes the hidden 50 ms
    assert (mic.samples_lost, mic.samples_restamped) == (lost_1 + lost_2, moved_2)


@pytest.mark.usefixtures("fake_devices")
def test_a_microphone_with_missing_blocks_shows_them_in_the_rows_and_the_summary(tmp_path: Path) -> None:
    """The lossy stream through the pipeline into the CSV: each row carries what its second lost, the summary
    totals the rows, and the input report has the microphone's own counters."""
    import argparse

    from helpers.pipeline_fakes import FakeStream as FakeModel
    from helpers.pipeline_fakes import run_bounded

    from monitor.assembly import open_sinks
    from monitor.pipeline import Pipeline
    from monitor.recorders import CsvRecorder
    from monitor.run_end import EndReason, RunEnd
    from sec2sec.windows import Windower

    inputs: BoundedQueue = BoundedQueue(100)
    mic = MicrophoneSource("usb", inputs, 0, sample_rate=16_000, stream_factory=FakeStream.factory(lossy_script()))
    csv = tmp_path / "mic.csv"
    args = argparse.Namespace(csv=str(csv), jsonl=None, no_ui=False)
    (recorder,) = open_sinks(args, ("valence", "arousal"), {}, [mic])
    assert isinstance(recorder, CsvRecorder)
    model = FakeModel()
    windower = Windower(model.config.video.frames_per_window, 16_000, expect_video=False)
    pipeline = Pipeline(model, [mic], inputs, windower, [recorder], clock="live", window_queue=8)
    threading.Timer(1.5, lambda: pipeline.request_stop(EndReason.INTERRUPTED)).start()
    assert run_bounded(pipeline) == RunEnd(EndReason.INTERRUPTED)
    rows = pd.read_csv(csv)
    assert list(rows["window"][:3]) == [0, 1, 2]
    lost, moved = rows["samples_lost"].tolist(), rows["samples_restamped"].tolist()
    assert lost[0] == 0 and abs(lost[1] - 800) <= 2 and abs(lost[2] - 8000) <= 2 and not any(lost[3:])
    assert moved[:2] == [0, 0] and abs(moved[2] - 8800) <= 4 and rows["frames_dropped"].eq(0).all()
    summary = json.loads(Path(f"{csv}.json").read_text())["summary"]
    assert summary["samples_lost"] == sum(lost) and summary["samples_restamped"] == sum(moved)
    report = summary["input"]["microphone"]
    assert set(report) == {
        "items",
        "dropped",
        "overflows",
        "queue_drops",
        "restamps",
        "samples_lost",
        "samples_restamped",
    }
    assert (report["overflows"], report["restamps"], report["queue_drops"]) == (1, 1, 0)
    assert (report["samples_lost"], report["samples_restamped"]) == (sum(lost), sum(moved))


@pytest.mark.usefixtures("fake_devices")
def test_a_new_origin_at_start_restarts_the_sample_clock() -> None:
    q: BoundedQueue = BoundedQueue(16)
    mic = MicrophoneSource(
        "usb",
        q,
        time.monotonic_ns() - 60 * 10**9,
        sample_rate=1_000,
        stream_factory=FakeStream.factory([Block(ramp(0, 100))]),
    )
    mic.start(time.monotonic_ns())  # the pipeline starts its clock now, after the model's warm-up
    (chunk,) = drain(q)
    mic.stop()
    assert chunk.first_sample == 0  # captured 2 ms ago, i.e. before the new origin: stamped at 0, not at 60 s


@pytest.mark.usefixtures("fake_devices")
def test_callback_averages_channels_and_falls_back_without_adc_time() -> None:
    script = [Block(ramp(0, 480, channels=2), zero_adc=True), Block(ramp(480, 480, channels=2), zero_adc=True)]
    q: BoundedQueue = BoundedQueue(4)
    origin = time.monotonic_ns() - 10**9
    before = time.monotonic_ns()
    mic = MicrophoneSource(None, q, origin, stream_factory=FakeStream.factory(script))
    mic.start()
    after = time.monotonic_ns()
    a, b = drain(q)
    assert mic.sample_rate == 44_100  # the default device's default rate
    np.testing.assert_allclose(a.samples, ramp(0, 480)[:, 0], rtol=1e-6)
    lo = (before - origin) * 44_100 // 10**9 - 480
    hi = (after - origin) * 44_100 // 10**9 - 480
    assert lo <= a.first_sample <= hi and b.first_sample == a.end_sample
    mic.stop()


@pytest.mark.usefixtures("fake_devices")
def test_full_queue_drops_the_oldest_and_counts() -> None:
    script = [Block(ramp(100 * k, 100), flags=FakeFlags(input_overflow=k == 4)) for k in range(6)]
    q: BoundedQueue = BoundedQueue(2)
    mic = MicrophoneSource(3, q, time.monotonic_ns(), sample_rate=1_000, stream_factory=FakeStream.factory(script))
    mic.start()
    kept = drain(q)
    assert [c.samples[0] for c in kept] == pytest.approx([0.04, 0.05])
    assert (mic.items, mic.queue_drops, mic.overflows, mic.status.dropped) == (6, 4, 1, 5)
    mic.stop()


@pytest.mark.usefixtures("fake_devices")
def test_stop_is_idempotent_and_an_unexpected_end_is_reported() -> None:
    made: list[FakeStream] = []
    q: BoundedQueue = BoundedQueue(4)
    mic = MicrophoneSource(5, q, 0, stream_factory=FakeStream.factory([], made))
    mic.stop()  # before start: nothing to do
    mic.stop()
    mic.start()  # after stop: stays stopped
    assert made == [] and not mic.status.running

    mic = MicrophoneSource(5, q, 0, stream_factory=FakeStream.factory([], made))
    mic.start()
    assert mic.status.running
    made[0].end_unexpectedly()  # device unplugged
    (end,) = drain(q)
    assert isinstance(end, SourceEnd) and end.name == "microphone" and "stopped unexpectedly" in end.error
    assert mic.status.error == end.error and not mic.status.running
    mic.stop()
    mic.stop()
    assert made[0].closed


class StopBlocks(FakeStream):
    """A stream whose stop() blocks until released (ALSA's Pa_StopStream after a USB device was unplugged)."""

    release = threading.Event()

    def stop(self) -> None:
        self.release.wait()
        super().stop()


@pytest.mark.usefixtures("fake_devices")
def test_a_stop_that_blocks_is_left_behind_within_the_bound() -> None:
    made: list[FakeStream] = []
    mic = MicrophoneSource(5, BoundedQueue(4), 0, stream_factory=StopBlocks.factory([], made))
    mic.start()
    started = time.monotonic()
    try:
        mic.stop(timeout_s=0.5)
        took = time.monotonic() - started
        assert 0.4 < took < 5, took
        assert mic.abandoned == ("stop microphone",) and not made[0].closed
        assert mic.status.error == "microphone 'pulse' did not stop within 0.5 s (unplugged?); left behind"
        mic.stop()  # idempotent: returns at once
    finally:
        StopBlocks.release.set()
    deadline = time.monotonic() + 5
    while not made[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made[0].closed  # the helper thread closes the stream once the driver lets go


# --- a real PortAudio device ---------------------------------------------------------------------------------------


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.audio_device
def test_records_the_tone_through_pulseaudio(pulse_server: PulseServer) -> None:  # noqa: F811
    assert "pulse" in list_devices()
    q: BoundedQueue = BoundedQueue(10_000)
    origin = time.monotonic_ns()
    mic = MicrophoneSource("pulse", q, origin)
    assert mic.device.name == "pulse" and mic.sample_rate == mic.device.default_samplerate
    threads_before = set(threading.enumerate())
    started = time.monotonic_ns()
    mic.start()
    time.sleep(1.5)
    assert mic.status.running
    stopped = time.monotonic_ns()
    mic.stop()
    mic.stop()
    chunks = drain(q)
    assert set(threading.enumerate()) <= threads_before
    assert chunks and all(isinstance(c, AudioChunk) and c.sample_rate == mic.sample_rate for c in chunks)
    rate = mic.sample_rate
    # pacing: contiguous, and as many samples as the wall clock says (within 20 %)
    assert [c.first_sample for c in chunks[1:]] == [c.end_sample for c in chunks[:-1]]
    assert mic.restamps == 0
    total = sum(len(c.samples) for c in chunks)
    expected = (stopped - started) * rate / 1e9
    assert 0.8 * expected <= total <= 1.2 * expected, (total, expected)
    # the first sample was captured after the stream started (less the host's buffering) and before it stopped
    first_ns = chunks[0].first_sample * 10**9 // rate + origin
    assert started - 200_000_000 <= first_ns <= started + 500_000_000, (first_ns - started) / 1e6
    # content: the tone that pacat plays, loud and clear
    x = np.concatenate([c.samples for c in chunks])
    rms = float(np.sqrt(np.mean(x[rate // 10 :] ** 2)))
    assert rms > 0.1, rms
    assert abs(dominant_hz(x, rate) - TONE_HZ) < 3.0
    status = mic.status
    assert (status.items, status.running) == (len(chunks), False)
    assert status.dropped == mic.overflows and mic.queue_drops == 0
    assert status.detail == f"pulse {rate} Hz" and RATE == 48_000


@pytest.mark.audio_device
@pytest.mark.parametrize("modalities", [pytest.param("audio", marks=pytest.mark.slow), "both"])
def test_a_live_run_from_the_microphone_alone(
    pulse_server: PulseServer,  # noqa: F811
    tmp_path: Path,
    modalities: str,
) -> None:
    """`sec2sec-live --mic pulse` without a camera: an audio-only model needs nothing else; a two-modality
    model runs with video_ok=0. The device is opened at the model's 16 kHz (PulseAudio converts)."""
    config, csv = tmp_path / "model.toml", tmp_path / "mic.csv"
    config.write_text(small_toml(modalities))
    args = ["--mic", "pulse", "--config", config, "--duration", "3", "--no-ui", "--csv", csv]
    result = subprocess.run(
        [sys.executable, "-m", "monitor.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(csv)
    assert list(rows["window"]) == [0, 1, 2]
    assert rows["audio_ok"].eq(1).all() and rows["video_ok"].eq(0).all() and rows["frames"].eq(0).all()
    assert rows["audio_coverage"].iloc[1:].gt(0.9).all()  # the tone arrives continuously
    sidecar = json.loads(Path(f"{csv}.json").read_text())
    assert sidecar["source"] == {"camera": None, "microphone": "pulse"}
    assert sidecar["summary"]["ended_by"] == "duration"
    if modalities == "both":
        assert "running audio-only, every window has video_ok=0" in result.stderr


def test_a_device_that_refuses_the_model_rate_is_resampled_on_the_way(fake_devices: None) -> None:
    """The device records at 48 kHz only: the stream opens at 48 kHz and a streaming resampler delivers
    16 kHz chunks, contiguous across blocks, carrying the same tone."""
    rate_in, rate_out, hz = 48_000, 16_000, 440
    t = np.arange(rate_in) / rate_in
    tone = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[:, None]
    script = [Block(tone[i : i + 480]) for i in range(0, rate_in, 480)]
    made: list[FakeStream] = []

    def only_48k(**kwargs: Any) -> FakeStream:
        if kwargs["samplerate"] != rate_in:
            raise ValueError("Invalid sample rate")
        return FakeStream.factory(script, made)(**kwargs)

    q: BoundedQueue = BoundedQueue(1_000)
    mic = MicrophoneSource(3, q, time.monotonic_ns(), stream_factory=only_48k)
    mic.prepare(sample_rate=rate_out)  # opens and starts now: what it hears before start() is discarded
    assert drain(q) == [] and (mic.device_rate, mic.sample_rate) == (rate_in, rate_out)
    mic.start(time.monotonic_ns())
    made[0].start()  # the open stream goes on delivering blocks, now kept
    chunks = drain(q)
    assert all(c.sample_rate == rate_out for c in chunks)
    assert [c.first_sample for c in chunks[1:]] == [c.end_sample for c in chunks[:-1]]
    x = np.concatenate([c.samples for c in chunks])
    assert rate_out - 800 < len(x) <= rate_out  # the resampler holds back its last few ms until more comes
    assert abs(dominant_hz(x, rate_out) - hz) < 3.0
    assert mic.status.detail == "USB Audio Mic: Audio (hw:1,0) 48000 Hz -> 16000 Hz"
    mic.stop()


@pytest.mark.audio_device
def test_a_microphone_that_exists_but_cannot_be_opened_fails_before_the_warm_up(
    pulse_server: PulseServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The `pulse` device exists (PortAudio lists it) but refuses to open, as a device held by another program
    does: one line naming the device and the fix, exit 2, before the model's warm-up, nothing recorded."""
    config, csv = tmp_path / "model.toml", tmp_path / "mic.csv"
    config.write_text(small_toml("audio"))
    returncode, lines = finish(start("mic-refuses", 0, "--mic", "pulse", "--config", config, "--no-ui", "--csv", csv))
    assert returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: microphone ") and "'pulse' (ALSA) could not be opened at " in lines[0]
    assert " Hz (Device unavailable" in lines[0] and lines[0].endswith("or run video-only with --no-mic")
    assert not csv.exists()


@pytest.mark.slow
@pytest.mark.audio_device
def test_a_microphone_whose_stop_blocks_cannot_hold_the_end_of_the_run(
    pulse_server: PulseServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A real recording whose stream.stop() then blocks for ever: the run still ends (exit 0, --duration),
    every row and the sidecar summary are on disk, and the closing line came out."""
    config, csv = tmp_path / "model.toml", tmp_path / "mic.csv"
    config.write_text(small_toml("audio"))
    args = ("--mic", "pulse", "--config", config, "--duration", "2", "--no-ui", "--csv", csv)
    returncode, lines = finish(start("mic-stop-blocks", 0, *args))
    assert returncode == 0 and "PHASE stop-blocks" in lines, lines
    assert lines[-1].startswith("2 windows") and lines[-1].endswith("ended by duration")
    assert list(pd.read_csv(csv)["window"]) == [0, 1]
    summary = json.loads(Path(f"{csv}.json").read_text())["summary"]
    assert summary["ended_by"] == "duration"
    assert set(summary["input"]["microphone"]) >= {"overflows", "restamps", "samples_lost", "samples_restamped"}
