"""Media files -> timestamped video frames and audio chunks (PyAV; a plain generator, no threads, no pacing).

Time is integer: video frames carry nanoseconds since the file's origin (the earliest stream start), audio
chunks carry the index of their first sample at the source rate, counted from that same origin, so sample
`s` lies at `s * 1e9 / sample_rate` ns on the video clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from sec2sec.config import NANOS_PER_SECOND
from sec2sec.framing import FaceRecord, Framer
from sec2sec.framing import scaled_size as scaled_size  # re-exported: the camera scales with it

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame
    from av.audio.resampler import AudioResampler
    from av.video.frame import VideoFrame as DecodedFrame


class MediaError(ValueError):
    """A file that cannot be read as audio/video; the message says what and how to fix it."""


# FFmpeg may only read the named local file: no network protocols, and only demuxers of real media containers.
# Playlist-like demuxers (hls, concat, dash, image2 patterns, ...) would open other files or URLs named inside a
# file disguised as .mp4, so they are not on the list.
PROTOCOLS = "file"
FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska,webm",
    "avi",
    "mpeg",
    "mpegts",
    "mpegvideo",
    "m4v",
    "h264",
    "hevc",
    "flv",
    "asf",
    "nut",
    "mxf",
    "dv",
    "ivf",
    "ogg",
    "wav",
    "w64",
    "aiff",
    "caf",
    "mp3",
    "aac",
    "flac",
    "amr",
)


@dataclass(frozen=True)
class VideoFrame:
    """One RGB frame: `rgb` is uint8 (H, W, 3); `t_ns` its presentation time in integer nanoseconds; `face` the
    subject's face in it when the frame was framed by face (`sec2sec.framing`), else None."""

    rgb: np.ndarray
    t_ns: int
    face: FaceRecord | None = None


@dataclass(frozen=True)
class FrameTick:
    """A decoded frame at `t_ns` that no window slot will use (see MediaReader's `frames_per_window`): it was
    not converted to RGB, but it counts as a frame seen and moves the video clock like a VideoFrame."""

    t_ns: int


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1], shape (n,); `first_sample` indexes the first at `sample_rate`."""

    samples: np.ndarray
    first_sample: int
    sample_rate: int

    @property
    def end_sample(self) -> int:
        return self.first_sample + len(self.samples)


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, as probed when it is opened."""

    path: str
    has_video: bool
    has_audio: bool
    duration_ns: int
    fps: float
    width: int
    height: int
    sample_rate: int


def _seconds(pts: int, time_base: Fraction) -> Fraction:
    return Fraction(pts) * time_base


def _to_ns(t: Fraction) -> int:
    return round(t * NANOS_PER_SECOND)


def _import_av() -> ModuleType:
    import av

    return av


MAX_PIXELS = 7680 * 4320  # 8K UHD: the largest frame decoded and kept (before scaling to the model's size)
MAX_ASPECT = 8  # long side / short side; beyond it a frame scaled to the model's short side is still huge


def frame_size_error(width: int, height: int) -> str:
    """Why frames of `width` x `height` pixels are refused ("" when they are allowed): more than MAX_PIXELS,
    or sides more than MAX_ASPECT:1 apart. So a frame kept downstream holds at most short_side^2 * MAX_ASPECT
    pixels after scaling (MAX_PIXELS unscaled), whatever the file declares."""
    if width < 1 or height < 1:
        return f"video frames are {width}x{height} pixels"
    if width * height > MAX_PIXELS or max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"video frames are {width}x{height} pixels; at most {MAX_PIXELS} pixels (8K) with sides at most "
            f"{MAX_ASPECT}:1 apart are allowed; scale or crop the video with ffmpeg -vf scale=W:H or crop=W:H"
        )
    return ""


class MediaReader:
    """Decode a file's first video and first audio stream together, in presentation order per stream.

    Use as an iterator of `VideoFrame | AudioChunk`; `skipped` counts packets that failed to decode
    (corrupted data is skipped and reported, never fatal once the file opened).

    `short_side`: frames are scaled down (FFmpeg's area filter, in the decoding thread) so that their short side
    is at most this many pixels, so no queue or window downstream ever holds full-resolution frames.
    `framer` (a `sec2sec.framing.Framer`; replaces `short_side`): frames the frames in the decoding thread, as
    the model's config says (its whole frame scaled by FFmpeg, or the subject's face cut from the full frame);
    with thinning it sees exactly the frames the window slots use, as the camera's framer does.
    `sample_rate`: audio is resampled on the decoded stream (FFmpeg's resampler keeps its state across frames,
    so there are no edges at window boundaries) to this rate; default: the stream's own rate.
    `frames_per_window` (m): only frames that the windower will pick for one of a window's m slots (the
    nearest to each slot centre, ties to the earlier) are converted and scaled; the others, decided with one
    frame of look-ahead, come as `FrameTick`s. A 30 fps source converts 8 of 30 frames at m = 8, and the
    windows are exactly those of unthinned frames. Frames out of time order switch thinning off.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        short_side: int | None = None,
        sample_rate: int | None = None,
        frames_per_window: int | None = None,
        audio_tolerance_ms: int = 5,
        framer: Framer | None = None,
    ) -> None:
        self.path = Path(path)
        self.set_output(
            short_side=short_side, sample_rate=sample_rate, frames_per_window=frames_per_window, framer=framer
        )
        av = _import_av()
        if not self.path.exists():
            raise MediaError(f"{self.path}: no such file; check the path given to --replay")
        if self.path.is_dir() or self.path.stat().st_size == 0:
            raise MediaError(f"{self.path}: the file is empty (0 bytes); give a video or audio file")
        try:
            self._container = av.open(
                str(self.path),
                metadata_errors="ignore",
                container_options={"protocol_whitelist": PROTOCOLS, "format_whitelist": ",".join(FORMATS)},
            )
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
            raise MediaError(
                f"{self.path}: not a readable audio/video file, or a playlist/format that may not be read "
                f"({type(exc).__name__}: {exc}); give an mp4/mkv/webm/mov/mpg/wav file, or re-encode it with ffmpeg"
            ) from None
        self._video = self._container.streams.video[0] if self._container.streams.video else None
        self._audio = self._container.streams.audio[0] if self._container.streams.audio else None
        if self._video is None and self._audio is None:
            self._container.close()
            raise MediaError(f"{self.path}: the file has neither a video nor an audio stream")
        self._origin = self._stream_origin()
        self._tolerance_ms = audio_tolerance_ms
        self.skipped = 0
        self._resampler: AudioResampler | None = None
        self.info = self._probe()
        if self.info.has_video and self.info.width and (problem := frame_size_error(self.info.width, self.info.height)):
            self._container.close()
            raise MediaError(f"{self.path}: {problem}")

    def _stream_origin(self) -> Fraction:
        starts = [
            _seconds(s.start_time, s.time_base)
            for s in (self._video, self._audio)
            if s is not None and s.start_time is not None and s.time_base is not None
        ]
        return min(starts) if starts else Fraction(0)

    def _probe(self) -> MediaInfo:
        v, a = self._video, self._audio
        duration = 0
        if self._container.duration is not None:
            duration = self._container.duration * 1000  # microseconds -> ns
        return MediaInfo(
            path=str(self.path),
            has_video=v is not None,
            has_audio=a is not None,
            duration_ns=int(duration),
            fps=float(v.average_rate) if v is not None and v.average_rate else 0.0,
            width=v.codec_context.width if v is not None else 0,
            height=v.codec_context.height if v is not None else 0,
            sample_rate=a.codec_context.sample_rate if a is not None else 0,
        )

    def set_output(
        self,
        *,
        short_side: int | None,
        sample_rate: int | None,
        frames_per_window: int | None = None,
        framer: Framer | None = None,
    ) -> None:
        """Change the frame size (or framing), audio rate and thinning this reader delivers (before iterating;
        see the class doc)."""
        if frames_per_window is not None and frames_per_window < 1:
            raise ValueError(f"frames_per_window = {frames_per_window}; give None (every frame) or at least 1")
        self._frames_per_window = frames_per_window
        if short_side is not None and short_side < 8:
            raise ValueError(f"short_side = {short_side}; give None (full size) or at least 8 pixels")
        if sample_rate is not None and sample_rate < 1:
            raise ValueError(f"sample_rate = {sample_rate}; give None (the file's rate) or a rate in Hz")
        self._short_side, self._rate = short_side, sample_rate
        self._framer = framer or Framer("frame", resize=short_side)

    @property
    def output_rate(self) -> int:
        """The rate of the audio chunks this reader yields."""
        return self._rate or self.info.sample_rate

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[VideoFrame | FrameTick | AudioChunk]:
        av = _import_av()
        streams = [s for s in (self._video, self._audio) if s is not None]
        self._resampler = None
        self._framer.reset()
        thinning = SlotThinning(self._frames_per_window) if self._frames_per_window else None
        next_sample: int | None = None
        packets = self._container.demux(*streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:
                self.skipped += 1
                if self.skipped > 10_000:
                    break
                continue
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError):
                self.skipped += 1
                continue
            for frame in frames:
                if packet.stream.type == "video":
                    yield from self._video_items(frame, thinning)
                else:
                    for chunk in self._audio_chunks(self._resample(frame), next_sample):
                        next_sample = chunk.end_sample
                        yield chunk
        if thinning is not None and thinning.pending is not None:
            yield self._decided(thinning.pending, thinning, None)
        if self._resampler is not None:
            for chunk in self._audio_chunks(self._resampler.resample(None), next_sample):
                next_sample = chunk.end_sample
                yield chunk

    def _resample(self, frame: AudioFrame) -> list[AudioFrame]:
        """One decoded audio frame -> mono float32 frames at the output rate. A frame whose layout or rate
        differs from the ones before (damaged data, a stream that changes format) gets a new resampler; one
        that still cannot be converted is counted as skipped."""
        av = _import_av()
        for attempt in range(2):
            resampler = self._resampler
            if resampler is None or attempt:
                resampler = self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.output_rate)
            try:
                return resampler.resample(frame)
            except (av.error.FFmpegError, ValueError):
                continue
        self.skipped += 1
        return []

    def _video_items(self, frame: DecodedFrame, thinning: SlotThinning | None) -> Iterator[VideoFrame | FrameTick]:
        """The item(s) one decoded frame releases: itself, or (thinning) the frame before it, decided now."""
        if frame.pts is None or frame.time_base is None:
            return
        t_ns = _to_ns(_seconds(frame.pts, frame.time_base) - self._origin)
        if thinning is None:
            yield self._video_frame(frame, t_ns)
            return
        previous, thinning.pending = thinning.pending, (frame, t_ns)
        if previous is not None:
            yield self._decided(previous, thinning, t_ns)

    def _decided(
        self, held: tuple[DecodedFrame, int], thinning: SlotThinning, next_t_ns: int | None
    ) -> VideoFrame | FrameTick:
        """The frame held back, converted when a window slot will use it, else a FrameTick."""
        frame, t_ns = held
        return self._video_frame(frame, t_ns) if thinning.needed(t_ns, next_t_ns) else FrameTick(t_ns)

    def _video_frame(self, frame: DecodedFrame, t_ns: int) -> VideoFrame:
        if problem := frame_size_error(frame.width, frame.height):  # the size may change mid-stream
            raise MediaError(f"{self.path}: at {t_ns / NANOS_PER_SECOND:.3f} s, {problem}")
        framed = self._framer.frame(_AvPicture(frame), t_ns)
        return VideoFrame(rgb=framed.rgb, t_ns=t_ns, face=framed.face)

    def _audio_chunks(self, resampled: list[AudioFrame], next_sample: int | None) -> Iterator[AudioChunk]:
        """Resampled mono float32 frames -> chunks, contiguous unless the timestamps jump."""
        rate = self.output_rate
        for out in resampled:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if samples.size == 0:
                continue
            first = next_sample if next_sample is not None else 0
            if out.pts is not None and out.time_base is not None:
                stamped = round((_seconds(out.pts, out.time_base) - self._origin) * rate)
                if next_sample is None or abs(stamped - next_sample) * 1000 > self._tolerance_ms * rate:
                    first = stamped
            if next_sample is not None and first < next_sample:
                samples = samples[next_sample - first :]  # overlapping timestamps: keep time monotonic
                first = next_sample
            if samples.size:
                yield AudioChunk(
                    samples=np.clip(samples, -1.0, 1.0),
                    first_sample=max(first, 0),
                    sample_rate=rate,
                )
                next_sample = first + samples.size


def file_duration_ns(path: str | Path) -> int:
    """How long the file at `path` lasts, in ns: the container's stated duration, or, where the container states
    none (a recording that was never finalised), the end of its last packet (demuxed, not decoded).
    MediaError when the file cannot be opened; 0 when it holds no timed packet."""
    av = _import_av()
    with MediaReader(path) as reader:
        if reader.info.duration_ns > 0:
            return reader.info.duration_ns
        streams = [s for s in (reader._video, reader._audio) if s is not None]
        end = reader._origin
        try:
            for packet in reader._container.demux(*streams):
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, _seconds(packet.pts + (packet.duration or 0), packet.time_base))
        except av.error.FFmpegError:
            pass  # damaged data: the packets before it give the duration
        return max(0, _to_ns(end - reader._origin))


class _AvPicture:
    """A decoded PyAV frame as a `sec2sec.framing.Picture`: upright (its display-matrix rotation applied, e.g.
    phone videos), scaled by FFmpeg's area filter."""

    def __init__(self, frame: DecodedFrame) -> None:
        self.frame = frame
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        self.turns = rotation // 90 if rotation in (90, 180, 270) else 0

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.frame.width, self.frame.height
        return (h, w) if self.turns % 2 else (w, h)

    def rgb(self, width: int, height: int) -> np.ndarray:
        frame = self.frame
        if self.turns % 2:
            width, height = height, width
        if (width, height) == (frame.width, frame.height):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        return np.ascontiguousarray(np.rot90(rgb, k=-self.turns)) if self.turns else rgb


def sample_frame_times(index: int, m: int) -> list[int]:
    """Centres (ns) of the m equal sub-intervals of window `index`: where the m frames are sampled.

    The windower picks the frame nearest each centre; the decoder (`SlotThinning`) uses the same centres to
    skip converting frames that no slot will pick."""
    start = index * NANOS_PER_SECOND
    return [start + (2 * k + 1) * NANOS_PER_SECOND // (2 * m) for k in range(m)]


class SlotThinning:
    """Which frames a window will pick: the pending frame (held unconverted) is needed when, for some slot
    centre of its window, it is strictly nearer than the frame before it in that window and no farther than
    the frame after it (the windower keeps the earlier of two equally near frames).

    The decoder uses it so that only those frames are converted and framed; a camera that frames by face uses it
    too (holding one frame until the next one's time is known), so that its framer sees the same frames as a
    replay of the same frames and gives the same boxes (see `sec2sec.framing`)."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.centres = sample_frame_times
        self.pending: tuple[DecodedFrame, int] | None = None
        self.previous_t_ns: int | None = None
        self.off = False  # frames came out of time order: convert everything from then on

    def needed(self, t: int, next_t_ns: int | None) -> bool:
        """Whether the frame at `t` (followed by one at `next_t_ns`, None at the end) fills a slot."""
        previous, self.previous_t_ns = self.previous_t_ns, t
        if (next_t_ns is not None and next_t_ns < t) or (previous is not None and previous > t):
            self.off = True
        if self.off or t < 0:
            return True
        index = t // NANOS_PER_SECOND
        before = previous if previous is not None and previous // NANOS_PER_SECOND == index else None
        after = next_t_ns if next_t_ns is not None and next_t_ns // NANOS_PER_SECOND == index else None
        return any(
            (before is None or abs(t - c) < abs(before - c)) and (after is None or abs(t - c) <= abs(after - c))
            for c in self.centres(index, self.m)
        )
