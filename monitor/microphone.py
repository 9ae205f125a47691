"""Microphone edge: a PortAudio input stream (python-sounddevice) whose callback only copies, stamps and enqueues.

Time: the first chunk's first sample is stamped from PortAudio's `inputBufferAdcTime`, mapped onto
`time.monotonic_ns()` (the clock the camera uses) by an offset measured once, in the first callback. Later chunks
continue contiguously (`first_sample += frames`, the sound card's own clock) unless the ADC time disagrees by
more than one block or 25 ms: then the chunk is re-stamped and the re-stamp is counted (lost buffers, a stalled
device, or a long-run drift between the sound card and the system clock). Time never runs backwards: samples
that would overlap what was already emitted, or lie before the origin, are trimmed.

sounddevice is imported lazily, so a machine without PortAudio can still replay files and run video-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.queues import call_with_deadline
from monitor.sources import InputCounters, InputQueue, Source, SourceEnd, SourceStatus
from sec2sec.config import NANOS_PER_SECOND
from sec2sec.media import AudioChunk

PORTAUDIO_MISSING = (
    "PortAudio is not installed (sounddevice needs libportaudio2): install it with `apt-get install libportaudio2`, "
    "or run video-only with --no-mic"
)
NO_INPUT_DEVICE = (
    "no audio input device found; connect a microphone, pick one from --list-devices, or run video-only with --no-mic"
)
# Re-stamp when the ADC time and the sample count disagree by more than max(one block, this). ALSA's `pulse`
# plugin reports ADC times that jitter by up to 6 ms on this 2-core machine with three busy torch processes
# beside it (3,600 callbacks measured), and once past 10 ms during the test suite (10 ms then re-stamped a real
# recording and trimmed samples that had not been lost).
# 25 ms keeps the audio within 25 ms of the camera's clock, under the ~45 ms at which people notice lip-sync
# error and 2.5% of a 1 s window.
MIN_TOLERANCE_MS = 25
# Stopping a stream whose USB device was unplugged can block inside ALSA (Pa_StopStream) for ever: stop() waits
# this long, then leaves the stream to a helper thread and says so.
STOP_TIMEOUT_S = 2.0


class MicrophoneError(ValueError):
    """A microphone that cannot be used; the one-line message names the problem and the fix."""


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio device that can record."""

    index: int
    name: str
    hostapi: str
    channels: int  # maximum input channels
    default_samplerate: int

    def label(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi})"


def _import_sounddevice() -> Any:
    """`import sounddevice` (raises OSError when the PortAudio library is missing)."""
    import sounddevice

    return sounddevice


def _sounddevice() -> Any:
    """The sounddevice module, or a MicrophoneError saying how to install PortAudio."""
    try:
        return _import_sounddevice()
    except OSError as exc:
        if "portaudio" in str(exc).lower() and "not found" in str(exc).lower():
            raise MicrophoneError(PORTAUDIO_MISSING) from None
        raise MicrophoneError(
            f"PortAudio could not be loaded ({exc}); reinstall libportaudio2, or run video-only with --no-mic"
        ) from None


def _query_devices() -> tuple[list[InputDevice], int | None]:
    """The input devices PortAudio knows, and the index of the default input (None when there is none)."""
    sd = _sounddevice()
    hostapis = sd.query_hostapis()
    devices = [
        InputDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            channels=int(d["max_input_channels"]),
            default_samplerate=round(d["default_samplerate"]),
        )
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]
    default = sd.default.device[0]
    return devices, (int(default) if default is not None and int(default) >= 0 else None)


def _candidates(devices: list[InputDevice]) -> str:
    return "; ".join(d.label() for d in devices)


def resolve_device(device: int | str | None) -> InputDevice:
    """Pick an input device: None = the default, an int = a PortAudio index, a str = part of a device's name
    (case-insensitive; an exact name wins). Raises MicrophoneError (a ValueError) listing the candidates."""
    devices, default = _query_devices()
    if not devices:
        raise MicrophoneError(NO_INPUT_DEVICE)
    if device is None:
        return next((d for d in devices if d.index == default), devices[0])
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if isinstance(device, int):
        for d in devices:
            if d.index == device:
                return d
        raise MicrophoneError(
            f"audio device {device} does not exist or cannot record; input devices: {_candidates(devices)}"
        )
    wanted = device.strip().lower()
    matches = [d for d in devices if d.name.lower() == wanted] or [d for d in devices if wanted in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise MicrophoneError(f"no audio input device matches {device!r}; input devices: {_candidates(devices)}")
    raise MicrophoneError(
        f"audio device name {device!r} is ambiguous, it matches: {_candidates(matches)}; "
        "give the index or more of the name"
    )


def list_devices() -> str:
    """The text of `sec2sec-live --list-devices`: audio inputs (index, name, channels, default rate) and cameras."""
    from monitor.camera import camera_note

    devices, default = _query_devices()
    lines = ["Audio input devices (select one with --mic N or --mic NAME-PART; * = default):"]
    for d in devices:
        mark = "*" if d.index == default else " "
        lines.append(f"{mark} {d.index:3d} {d.name} ({d.hostapi}), {d.channels} in, {d.default_samplerate} Hz")
    if not devices:
        lines.append(f"  {NO_INPUT_DEVICE}")
    lines += ["", camera_note()]
    return "\n".join(lines)


class SampleClock:
    """Stamps input buffers with the index of their first sample at `sample_rate`, counted from `origin_ns`.

    `stamp()` returns `(first_sample, skip)`: drop the first `skip` samples of the buffer (they overlap what
    was already stamped, or precede the origin) and the rest start at `first_sample`. After each call,
    `last_error` is how many samples the ADC time put this buffer after where the count expected it (negative:
    before; 0 for the first buffer) and `restamped` whether that moved the stream (`restamps` counts them).
    """

    def __init__(self, origin_ns: int, sample_rate: int) -> None:
        self.origin_ns = origin_ns
        self.sample_rate = sample_rate
        self.restamps = 0
        self._offset_ns: int | None = None  # monotonic_ns - PortAudio time, measured once
        self._next: int | None = None
        self._largest_block = 0
        self.last_error = 0
        self.restamped = False
        self.counted_ahead = 0  # of the current error, the samples already counted as lost (see _count_losses)

    def _adc_ns(self, frames: int, adc_time_s: float, current_time_s: float, now_ns: int) -> int:
        """The buffer's ADC time on the monotonic clock (or now minus its duration when the host gives none)."""
        if self._offset_ns is None and current_time_s > 0:
            self._offset_ns = now_ns - round(current_time_s * NANOS_PER_SECOND)
        if adc_time_s > 0 and self._offset_ns is not None:
            return round(adc_time_s * NANOS_PER_SECOND) + self._offset_ns
        return now_ns - frames * NANOS_PER_SECOND // self.sample_rate

    def stamp(self, frames: int, adc_time_s: float, current_time_s: float, now_ns: int) -> tuple[int, int]:
        """Stamp one buffer of `frames` samples (PortAudio times in seconds, `now_ns` = monotonic at callback)."""
        adc_ns = self._adc_ns(frames, adc_time_s, current_time_s, now_ns)
        measured = ((adc_ns - self.origin_ns) * self.sample_rate + NANOS_PER_SECOND // 2) // NANOS_PER_SECOND
        first = measured
        self.last_error, self.restamped = 0, False
        if self._next is not None:
            tolerance = max(self._largest_block, self.sample_rate * MIN_TOLERANCE_MS // 1000)
            self.last_error = measured - self._next
            if abs(self.last_error) > tolerance:
                self.restamps += 1
                self.restamped = True
            else:
                first = self._next
        self._largest_block = max(self._largest_block, frames)
        floor = max(self._next or 0, 0)
        skip = min(max(floor - first, 0), frames)
        first += skip
        if skip < frames:
            self._next = first + frames - skip
        return first, skip


class MicrophoneSource(Source):
    """Record mono float32 chunks from a PortAudio input into `out` with `put_latest`.

    The constructor resolves the device (and fails there, with a one-line MicrophoneError, when PortAudio or
    the device is missing). `prepare(sample_rate=R)` opens and starts the stream before the model's warm-up, so
    a device that cannot be opened is refused early; it asks the device for R (the model's rate) and, where the
    device refuses, records at its own rate and resamples with a streaming resampler (python-soxr) that keeps
    its state across blocks. Until `start()` the callback discards what it hears; `start()` (which also opens
    the stream when `prepare` was not called) restarts the sample clock at the pipeline's origin. `stop()`
    stops and closes the stream (idempotent). `stream_factory` replaces `sounddevice.InputStream` (same
    keyword arguments) in tests.
    """

    name = "microphone"

    def __init__(
        self,
        device: int | str | None,
        out: InputQueue,
        origin_ns: int,
        *,
        sample_rate: int | None = None,
        blocksize: int = 0,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        if sample_rate is not None and sample_rate <= 0:
            raise MicrophoneError(f"sample_rate = {sample_rate}; give a positive rate in Hz, e.g. 48000")
        if blocksize < 0:
            raise MicrophoneError(f"blocksize = {blocksize}; give 0 (the host's choice) or a number of frames")
        self._sd: Any = None if stream_factory is not None else _sounddevice()  # the module, unless injected
        self.device = resolve_device(device)
        self.sample_rate = int(sample_rate) if sample_rate is not None else self.device.default_samplerate
        self.device_rate = self.sample_rate  # the rate the stream records at (differs when resampling)
        self._resampler: Any = None
        self._next_out: int | None = None  # next output sample index while resampling
        self._seen_jumps = 0
        self._live = False  # the callback keeps what it hears only after start()
        self._blocksize = blocksize
        self._out = out
        self._clock = SampleClock(origin_ns, self.sample_rate)
        self._factory = stream_factory
        self._lock = threading.Lock()
        self._stream: Any = None
        self._stopped = False
        self._ended = False
        self._error = ""
        self.items = 0
        self.overflows = 0  # callbacks flagged input_overflow (samples lost inside PortAudio)
        self.other_flags = 0  # callbacks with any other status flag
        self.queue_drops = 0  # chunks displaced from the full queue
        self._left_behind: list[str] = []  # helper threads left blocked in PortAudio (a stop that never returned)
        self.samples_lost = 0  # at the delivered rate: overflows' measured shortfall and forward re-stamps
        self.samples_restamped = 0  # at the delivered rate: how far re-stamps moved the stream's clock

    @property
    def restamps(self) -> int:
        """How many times the stream was re-stamped because the ADC time jumped."""
        return self._clock.restamps

    @property
    def abandoned(self) -> tuple[str, ...]:
        return tuple(self._left_behind)

    def counters(self) -> InputCounters:
        """Chunks captured and lost, overflows, queue drops, re-stamps, and the samples they lost or moved."""
        return {
            "items": self.items,
            "dropped": self.overflows + self.queue_drops,
            "overflows": self.overflows,
            "queue_drops": self.queue_drops,
            "restamps": self.restamps,
            "samples_lost": self.samples_lost,
            "samples_restamped": self.samples_restamped,
        }

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: copy, stamp, (resample), enqueue, count flags. No I/O, no locks held long."""
        now_ns = time.monotonic_ns()
        if not self._live:
            return
        if status:
            if status.input_overflow:
                self.overflows += 1
            else:
                self.other_flags += 1
        if indata.shape[1] == 1:
            samples = indata[:, 0].astype(np.float32)
        else:
            samples = indata.mean(axis=1, dtype=np.float32)
        first, skip = self._clock.stamp(frames, time_info.inputBufferAdcTime, time_info.currentTime, now_ns)
        self._count_losses(first, bool(status and status.input_overflow))
        samples = samples[skip:]
        if self._resampler is not None and samples.size:
            samples, first = self._resample(samples, first)
        if samples.size:
            chunk = AudioChunk(samples=samples, first_sample=first, sample_rate=self.sample_rate)
            self.queue_drops += self._out.put_latest(chunk)
            self.items += 1

    def _count_losses(self, first: int, overflow: bool) -> None:
        """What the stamp of the buffer starting at device sample `first` says was lost: a re-stamp moved the
        clock by |error| samples (and lost them when it moved forward); an overflow whose shortfall stayed
        within the tolerance lost `error` samples that the contiguous count hides (counted once: later buffers
        carry the same shortfall until a re-stamp). At the delivered rate."""
        clock, error = self._clock, self._clock.last_error
        lost = max(error - clock.counted_ahead, 0) if (clock.restamped or overflow) else 0
        moved = abs(error) if clock.restamped else 0
        clock.counted_ahead = 0 if clock.restamped else clock.counted_ahead + lost
        if not lost and not moved:
            return
        lost, moved = lost * self.sample_rate // self.device_rate, moved * self.sample_rate // self.device_rate
        self.samples_lost += lost
        self.samples_restamped += moved
        if self.on_loss is not None:
            expected = first - error if self._clock.restamped else first  # where the count expected the buffer
            self.on_loss(max(expected, 0) // self.device_rate, samples=lost, restamped=moved)

    def _resample(self, samples: np.ndarray, first: int) -> tuple[np.ndarray, int]:
        """Device-rate samples starting at device sample `first` -> model-rate samples and their first index.
        The resampler's state runs on across blocks; a re-stamp (a jump in time) starts it afresh."""
        if self._next_out is None or self._clock.restamps != self._seen_jumps:
            self._resampler.clear()
            self._seen_jumps = self._clock.restamps
            self._next_out = first * self.sample_rate // self.device_rate
        out = self._resampler.resample_chunk(samples)
        start, self._next_out = self._next_out, self._next_out + out.size
        return out.astype(np.float32, copy=False), start

    def _finished(self) -> None:
        """PortAudio thread, when the stream becomes inactive: an end we did not ask for is an error."""
        with self._lock:
            if self._stopped or self._ended:
                return
            self._ended = True
        self._error = f"microphone {self.device.name!r} stopped unexpectedly (unplugged or taken by another program?)"
        self._out.put_latest(SourceEnd(self.name, error=self._error))

    def _portaudio_errors(self) -> tuple[type[BaseException], ...]:
        """What opening or starting a stream raises: PortAudio's error, or anything from an injected factory."""
        return (self._sd.PortAudioError,) if self._sd is not None else (Exception,)

    def _open(self, rate: int) -> Any:
        """Open the input stream at `rate`: mono if the device allows it, else two channels averaged."""
        factory = self._factory or self._sd.InputStream
        channel_options = [1, 2] if self.device.channels >= 2 else [1]
        error: BaseException | None = None
        for channels in channel_options:
            try:
                return factory(
                    device=self.device.index,
                    channels=channels,
                    samplerate=rate,
                    blocksize=self._blocksize,
                    dtype="float32",
                    callback=self._callback,
                    finished_callback=self._finished,
                )
            except self._portaudio_errors() as exc:
                error = exc
        raise MicrophoneError(
            f"microphone {self.device.label()} could not be opened at {rate} Hz ({error}); "
            "pick another device or rate from --list-devices, or run video-only with --no-mic"
        )

    def prepare(
        self, short_side: int | None = None, sample_rate: int | None = None, frames_per_window: int | None = None
    ) -> None:
        """Open and start the stream now (before the model's warm-up), delivering `sample_rate` Hz; what it
        hears is discarded until `start()`. Raises MicrophoneError (one line) when the device cannot be used."""
        wanted = sample_rate or self.sample_rate
        with self._lock:
            if self._stream is not None or self._stopped:
                return
            try:
                self._stream, self.device_rate = self._open(wanted), wanted
            except MicrophoneError:
                if wanted == self.sample_rate:
                    raise
                import soxr  # the device records at its own rate; resample on the way out

                self._stream, self.device_rate = self._open(self.sample_rate), self.sample_rate
                self._resampler = soxr.ResampleStream(self.device_rate, wanted, 1, dtype="float32")
            self.sample_rate = wanted
            self._clock = SampleClock(self._clock.origin_ns, self.device_rate)
        self._start_stream()

    def start(self, origin_ns: int | None = None) -> None:
        """Start delivering (once; a no-op after stop), opening the stream first unless `prepare()` did.
        A new `origin_ns` restarts the sample clock."""
        with self._lock:
            if self._stopped or self._live:
                return
            if origin_ns is not None:
                self._clock = SampleClock(origin_ns, self.device_rate)
                self._next_out = None
            self._live = True
            if self._stream is not None:
                return
            self._stream = self._open(self.device_rate)
        self._start_stream()

    def _start_stream(self) -> None:
        try:
            self._stream.start()
        except self._portaudio_errors() as exc:
            self.stop()
            raise MicrophoneError(
                f"microphone {self.device.label()} could not start ({exc}); "
                "check that no other program holds it, or run video-only with --no-mic"
            ) from None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop and close the stream; idempotent, safe before start, and bounded: a stop that has not returned
        within `timeout_s` (a device unplugged mid-run can block ALSA) is left to its helper thread, named in
        `abandoned`, and reported as the source's error."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            stream, self._stream = self._stream, None
        if stream is None:
            return

        def stop_and_close() -> None:
            try:
                stream.stop()
            except self._portaudio_errors() as exc:  # the device may already be gone; closing still frees it
                self._error = self._error or f"microphone stop failed: {exc}"
            finally:
                stream.close()

        returned, error = call_with_deadline(stop_and_close, timeout_s, "stop microphone")
        if not returned:
            self._left_behind.append("stop microphone")
            self._error = self._error or (
                f"microphone {self.device.name!r} did not stop within {timeout_s:g} s (unplugged?); left behind"
            )
        elif error:
            self._error = self._error or f"microphone stop failed: {error}"

    @property
    def status(self) -> SourceStatus:
        """A snapshot: running, chunks captured, chunks lost (overflows + queue drops), device and rate, error."""
        stream = self._stream
        running = stream is not None and bool(getattr(stream, "active", True)) and not self._ended
        return SourceStatus(
            name=self.name,
            running=running,
            items=self.items,
            dropped=self.overflows + self.queue_drops,
            detail=f"{self.device.name} {self.device_rate} Hz"
            + (f" -> {self.sample_rate} Hz" if self.device_rate != self.sample_rate else ""),
            error=self._error,
        )
