"""Timestamped frames and audio chunks -> exact one-second windows (pure, integer time, no threads).

Window i covers [i, i+1) s of the shared clock: video frames with `i*1e9 <= t_ns < (i+1)*1e9`, and audio
samples `[i*sr, (i+1)*sr)` of every source rate `sr`. Each window keeps `m` frame slots at the centres of
`m` equal sub-intervals and fills each with the nearest frame inside the window, so a slow camera repeats
frames and a fast one is subsampled evenly, with only `m` frames ever held per open window.

Cost follows content, not timestamps: a second that holds neither a frame nor a sample is not a window. Such
stretches are skipped in one step (a clock that jumps by 10^6 s costs nothing) and counted in
`skipped_windows`; the next window's index shows the gap (AffectStream reports it as the estimate's `gap`).
Frames of different sizes in one window (a stream that changed resolution) are rescaled to the newest size.

Frames framed by face (`sec2sec.framing`) carry the subject's face record; a window sums up its m slots' records
in `Window.face`, and one whose frames held the face in fewer than `face_min_found` of its slots keeps no frames:
its video is missing (`video_ok` False), as when the camera stalls, while its audio goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torchaudio.functional as AF

from sec2sec.config import NANOS_PER_SECOND
from sec2sec.frame_sizes import same_size
from sec2sec.framing import FaceSummary, Framer, summarize
from sec2sec.media import AudioChunk, FrameTick, VideoFrame, sample_frame_times


@dataclass(frozen=True)
class Window:
    """One second of input. `frames`: uint8 (m, H, W, 3) or None when no frame fell inside (or, framed by face,
    too few held the subject's face); `audio`: float32 (sample_rate,) at the model rate, zero where nothing was
    heard; `face`: the subject's face over the m frame slots (None unless framed by face and a frame came)."""

    index: int
    frames: np.ndarray | None
    audio: np.ndarray
    sample_rate: int
    frames_seen: int
    samples_seen: int  # at the model rate
    closed_ns: int | None = None  # pipeline clock when the window closed (for latency)
    face: FaceSummary | None = None

    @property
    def start_ns(self) -> int:
        return self.index * NANOS_PER_SECOND

    @property
    def end_ns(self) -> int:
        return (self.index + 1) * NANOS_PER_SECOND

    @property
    def video_ok(self) -> bool:
        return self.frames is not None

    @property
    def audio_ok(self) -> bool:
        return self.samples_seen > 0

    @property
    def audio_coverage(self) -> float:
        return self.samples_seen / self.sample_rate


def pick_frames(times_ns: list[int], index: int, m: int) -> list[int]:
    """For frames stamped `times_ns` (any order), the position of the nearest in-window frame per slot.

    Returns m positions into `times_ns` (repeats allowed); empty when no time lies inside window `index`.
    """
    start, end = index * NANOS_PER_SECOND, (index + 1) * NANOS_PER_SECOND
    inside = [p for p, t in enumerate(times_ns) if start <= t < end]
    if not inside:
        return []
    return [min(inside, key=lambda p: (abs(times_ns[p] - c), times_ns[p])) for c in sample_frame_times(index, m)]


@dataclass
class _OpenWindow:
    slots: list[VideoFrame | None]
    seen: int = 0


@dataclass
class Windower:
    """Push frames and chunks in; pull closed windows out.

    A window closes when every expected stream has passed its end; or, given `now_ns` (a live clock), once
    `grace_ns` has passed since its end; or, whatever the clock, once the stream that is ahead has passed its
    end by `max_skew_ns` (the other stream ended early or stalled: in a replay too, windows close on time with
    that modality flagged missing). So at most about `max_skew_ns` of open windows and audio is ever held,
    whatever the input's length. Data arriving later than that is counted as late. `finish()` closes
    everything up to the end of the data, the last partial window included. Seconds with no data at all are
    skipped, never closed (see the module docstring).

    Audio at another rate than `sample_rate` is resampled per window (a fallback: sources should deliver the
    model rate, as the file decoder does with FFmpeg's resampler). `face_min_found`: frames framed by face keep a
    window's video only when at least this fraction of its slots held the subject's face (the model's
    `video.face_min_found`).
    """

    frames_per_window: int
    sample_rate: int
    expect_video: bool = True
    expect_audio: bool = True
    grace_ns: int = 500_000_000
    max_skew_ns: int = 3 * NANOS_PER_SECOND
    face_min_found: float = 0.5
    next_index: int = 0
    late_frames: int = 0
    late_samples: int = 0
    skipped_windows: int = 0  # seconds that held neither a frame nor a sample (never closed as windows)
    _open: dict[int, _OpenWindow] = field(default_factory=dict)
    _chunks: list[AudioChunk] = field(default_factory=list)
    _video_end_ns: int = -1  # time of the newest frame
    _audio_end_ns: int = -1  # time just past the newest sample

    def __post_init__(self) -> None:
        if self.frames_per_window < 1:
            raise ValueError(f"frames_per_window = {self.frames_per_window}; it must be >= 1")
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate = {self.sample_rate}; it must be >= 1")
        if self.max_skew_ns < 0 or self.grace_ns < 0:
            raise ValueError(f"grace_ns = {self.grace_ns}, max_skew_ns = {self.max_skew_ns}; both must be >= 0")
        if not 0.0 <= self.face_min_found <= 1.0:
            raise ValueError(f"face_min_found = {self.face_min_found}; it must be between 0 and 1")

    def push_frame(self, frame: VideoFrame | FrameTick) -> None:
        """Take one frame (a FrameTick counts as seen and moves the clock, but fills no slot); a frame for an
        already closed window (or before time 0) is counted as late."""
        if not isinstance(frame, FrameTick) and (
            frame.rgb.ndim != 3 or frame.rgb.shape[2] != 3 or frame.rgb.dtype != np.uint8
        ):
            raise ValueError(f"video frame must be uint8 (H, W, 3) RGB, got {frame.rgb.dtype} {frame.rgb.shape}")
        index = frame.t_ns // NANOS_PER_SECOND
        self._video_end_ns = max(self._video_end_ns, frame.t_ns)
        if frame.t_ns < 0 or index < self.next_index:
            self.late_frames += 1
            return
        window = self._open.setdefault(index, _OpenWindow(slots=[None] * self.frames_per_window))
        window.seen += 1
        if isinstance(frame, FrameTick):
            return
        for k, centre in enumerate(sample_frame_times(index, self.frames_per_window)):
            held = window.slots[k]
            if held is None or abs(frame.t_ns - centre) < abs(held.t_ns - centre):
                window.slots[k] = frame

    def push_audio(self, chunk: AudioChunk) -> None:
        """Take mono float32 samples; samples before the first open window are counted as late."""
        if chunk.samples.ndim != 1 or chunk.samples.dtype != np.float32:
            raise ValueError(f"audio chunk must be float32 mono (n,), got {chunk.samples.dtype} {chunk.samples.shape}")
        if chunk.sample_rate < 1 or chunk.samples.size == 0:
            return
        first_allowed = self.next_index * chunk.sample_rate
        if chunk.first_sample < first_allowed:
            cut = min(first_allowed - chunk.first_sample, chunk.samples.size)
            self.late_samples += cut
            chunk = AudioChunk(chunk.samples[cut:], chunk.first_sample + cut, chunk.sample_rate)
            if chunk.samples.size == 0:
                return
        self._chunks.append(chunk)
        end_ns = chunk.end_sample * NANOS_PER_SECOND // chunk.sample_rate
        self._audio_end_ns = max(self._audio_end_ns, end_ns)

    def _closable_until(self, now_ns: int | None) -> int:
        """Windows below this index have ended: both expected clocks passed their end, or the leading stream
        is `max_skew_ns` past it, or (given `now_ns`) `grace_ns` has passed since it."""
        pairs = ((self._video_end_ns, self.expect_video), (self._audio_end_ns, self.expect_audio))
        clocks = [end for end, expected in pairs if expected] or [max(self._video_end_ns, self._audio_end_ns)]
        bound = max(min(clocks), max(clocks) - self.max_skew_ns)
        if now_ns is not None:
            bound = max(bound, now_ns - self.grace_ns)
        return max(0, bound // NANOS_PER_SECOND)

    def _first_content(self) -> int | None:
        """The first window index >= next_index that holds a frame or a sample; None when nothing is held."""
        held = [i for i in self._open if i >= self.next_index]
        held += [max(self.next_index, c.first_sample // c.sample_rate) for c in self._chunks]
        return min(held) if held else None

    def _windows_until(self, limit: int, now_ns: int | None) -> Iterator[Window]:
        """Close the windows below `limit`, one by one. A stretch that holds neither a frame nor a sample is
        not a window: it is skipped in one step (no allocation per second) and counted in `skipped_windows`,
        so the next window's index shows the gap (a clock jump of 10^6 s costs nothing)."""
        while self.next_index < limit:
            first = self._first_content()
            if first is None or first > self.next_index:
                skip_to = limit if first is None else min(first, limit)
                self.skipped_windows += skip_to - self.next_index
                self.next_index = skip_to
                continue
            yield self._close(now_ns)

    def ready(self, now_ns: int | None = None) -> Iterator[Window]:
        """Close, one by one as the caller takes them, every window whose end both clocks have passed (or
        whose grace ran out at `now_ns`, or that the leading stream has left `max_skew_ns` behind); empty
        stretches are skipped (see `_windows_until`)."""
        while self.next_index < (limit := self._closable_until(now_ns)):
            yield from self._windows_until(limit, now_ns)

    def finish(self) -> Iterator[Window]:
        """Close, one by one, all windows up to the end of the data (the last one may be partial)."""
        last_ns = max(self._video_end_ns, self._audio_end_ns - 1)
        yield from self._windows_until(last_ns // NANOS_PER_SECOND + 1 if last_ns >= 0 else 0, None)

    def _close(self, now_ns: int | None) -> Window:
        index = self.next_index
        opened = self._open.pop(index, None)
        frames, face = None, None
        if opened is not None and opened.slots[0] is not None:
            # the first frame stored in a window fills every slot, so no slot is empty once one was stored
            slots = [slot for slot in opened.slots if slot is not None]
            face = summarize([slot.face for slot in slots])
            if face is None or face.found >= self.face_min_found:
                frames = same_size([slot.rgb for slot in slots])
        audio, seen = self._window_audio(index)
        self.next_index += 1
        return Window(
            index=index,
            frames=frames,
            audio=audio,
            sample_rate=self.sample_rate,
            frames_seen=opened.seen if opened else 0,
            samples_seen=seen,
            closed_ns=now_ns,
            face=face,
        )

    def _window_audio(self, index: int) -> tuple[np.ndarray, int]:
        """Samples of window `index` at the model rate, and how many of them were heard."""
        out = np.zeros(self.sample_rate, dtype=np.float32)
        covered = np.zeros(self.sample_rate, dtype=bool)
        for rate, first, samples in _contiguous_runs(self._chunks, index):
            offset = (first - index * rate) * self.sample_rate // rate
            if rate != self.sample_rate:
                samples = AF.resample(torch.from_numpy(samples), rate, self.sample_rate).numpy()
            n = min(samples.size, self.sample_rate - offset)
            out[offset : offset + n] = samples[:n]
            covered[offset : offset + n] = True
        keep_from = [c for c in self._chunks if c.end_sample > (index + 1) * c.sample_rate]
        self._chunks = keep_from
        return out, int(covered.sum())


def _contiguous_runs(chunks: list[AudioChunk], index: int) -> list[tuple[int, int, np.ndarray]]:
    """(rate, first_sample, samples) runs of window `index`, joining chunks that follow each other."""
    runs: list[tuple[int, int, list[np.ndarray]]] = []
    for c in chunks:
        lo, hi = index * c.sample_rate, (index + 1) * c.sample_rate
        a, b = max(lo, c.first_sample), min(hi, c.end_sample)
        if a >= b:
            continue
        part = c.samples[a - c.first_sample : b - c.first_sample]
        if runs and runs[-1][0] == c.sample_rate and runs[-1][1] + sum(p.size for p in runs[-1][2]) == a:
            runs[-1][2].append(part)
        else:
            runs.append((c.sample_rate, a, [part]))
    return [(rate, first, np.concatenate(parts)) for rate, first, parts in runs]


def file_windows(
    path: str,
    frames_per_window: int,
    sample_rate: int,
    short_side: int | None = None,
    *,
    framer: Framer | None = None,
    face_min_found: float = 0.5,
) -> tuple[list[Window], dict[str, int]]:
    """Every window of a media file, read exactly as replay reads it (MediaReader -> Windower), frames scaled
    down to `short_side` (the model's `video.resize`) or framed by `framer` (the model's framing; see
    `sec2sec.framing.framer_for`), and audio resampled to `sample_rate` by the decoder; `face_min_found`: the
    model's `video.face_min_found` (used when the framer frames faces).

    Returns the windows (the last may be partial; seconds with neither video nor audio are not windows, see
    `Windower`) and a report: skipped packets, late frames/samples, skipped (empty) seconds, whether the file
    had video/audio.
    """
    report: dict[str, int] = {}
    windows = list(
        iter_file_windows(
            path, frames_per_window, sample_rate, short_side, report, framer=framer, face_min_found=face_min_found
        )
    )
    return windows, report


def iter_file_windows(
    path: str,
    frames_per_window: int,
    sample_rate: int,
    short_side: int | None = None,
    report: dict[str, int] | None = None,
    *,
    framer: Framer | None = None,
    face_min_found: float = 0.5,
) -> Iterator[Window]:
    """`file_windows` one window at a time (nothing is kept here, so a caller that stops early or keeps a
    few windows holds only those); `report` is filled in when the file has been read to its end."""
    from sec2sec.media import MediaReader

    with MediaReader(
        path, short_side=short_side, sample_rate=sample_rate, frames_per_window=frames_per_window, framer=framer
    ) as reader:
        windower = Windower(
            frames_per_window,
            sample_rate,
            expect_video=reader.info.has_video,
            expect_audio=reader.info.has_audio,
            face_min_found=face_min_found,
        )
        for item in reader:
            if isinstance(item, AudioChunk):
                windower.push_audio(item)
            else:
                windower.push_frame(item)
            yield from windower.ready()
        yield from windower.finish()
        if report is not None:
            report.update(
                skipped_packets=reader.skipped,
                late_frames=windower.late_frames,
                late_samples=windower.late_samples,
                skipped_windows=windower.skipped_windows,
                has_video=int(reader.info.has_video),
                has_audio=int(reader.info.has_audio),
            )
