"""Clips -> decoded, model-sized windows (`DecodedClip`), in this process or in decoding worker processes.

Clips are read with `iter_file_windows`, the reader and windower of live replay, so training windows and live
windows are the same. `clip_loader` runs the decoding in DataLoader worker processes that start from a fresh
interpreter (see `WORKER_START`); this module imports only what decoding needs (no encoders, no torchvision),
because each worker imports it when it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sec2sec.config import ModelConfig
from sec2sec.frame_sizes import same_size, trim_to_input
from sec2sec.framing import Framer, framer_for
from sec2sec.offline.distributed import RankStalled
from sec2sec.offline.records import ClipRecord
from sec2sec.windows import Window, iter_file_windows

DECODE_TIMEOUT_S = 600.0  # one clip's decoding (a 15 s clip takes well under a second): longer is a hung decoder
MAX_GAP_S = 60  # a clip whose clock jumps further than this over nothing ends at the jump (see decode_clip)


@dataclass(frozen=True)
class DecodedClip:
    """One clip read into windows, padded/trimmed to T = clip_seconds.

    frames uint8 (T, m, H, W, 3) (zeros where video_ok is False), audio float32 (T, sample_rate),
    video_ok / audio_ok bool (T,), `length` positions up to the last window kept, `windows` seconds the file
    spans (to its end, or to a jump that ended it: `note`).
    """

    clip_id: str
    frames: torch.Tensor
    audio: torch.Tensor
    video_ok: torch.Tensor
    audio_ok: torch.Tensor
    length: int
    windows: int
    note: str = ""  # why the clip was cut short (a jump in its clock), "" when it was read to its end


@dataclass(frozen=True)
class UnreadableClip:
    """A clip that could not be read, and why (extraction lists it in `unreadable.tsv` and goes on)."""

    clip_id: str
    error: str


Decoded = DecodedClip | UnreadableClip  # what decoding one clip gives


def decode_clip(
    record: ClipRecord,
    frames_per_window: int,
    sample_rate: int,
    seconds: int,
    short_side: int | None = None,
    crop: int | None = None,
    max_gap_s: int = MAX_GAP_S,
    framer: Framer | None = None,
    face_min_found: float = 0.5,
) -> Decoded:
    """Read a clip through `iter_file_windows` (only the frames a window slot uses are converted, scaled to
    `short_side`, or framed by `framer`, in the decoding worker, as replay does) into `seconds` positions (window
    i at position i; seconds with neither modality stay masked); with `crop` too, frames are trimmed to the
    square the front end crops from (`trim_to_input`). Only the first `seconds` windows are kept. A jump of more
    than `max_gap_s` seconds with neither video nor audio (a broken clock) ends the clip there, with a `note`.
    Framed by face, a window whose frames held the subject's face in fewer than `face_min_found` of its slots
    has no video. Never raises on a bad file."""
    kept: list[Window] = []
    span, note = 0, ""
    windows = iter_file_windows(
        str(record.path), frames_per_window, sample_rate, short_side, framer=framer, face_min_found=face_min_found
    )
    try:
        for w in windows:
            if w.index - span > max_gap_s:
                note = f"ended at {span} s: the next data is {w.index - span} s later (more than {max_gap_s} s)"
                break
            span = w.index + 1
            if w.index < seconds:
                kept.append(w)
    except (ValueError, OSError, RuntimeError) as exc:
        return UnreadableClip(record.clip_id, f"{type(exc).__name__}: {exc}")
    if not kept:
        return UnreadableClip(record.clip_id, "the file decoded to no windows")
    shape = next((w.frames.shape for w in kept if w.frames is not None), (frames_per_window, 8, 8, 3))
    frames = np.zeros((seconds, *shape), dtype=np.uint8)
    audio = np.zeros((seconds, sample_rate), dtype=np.float32)
    video_ok = np.zeros(seconds, dtype=bool)
    audio_ok = np.zeros(seconds, dtype=bool)
    for w in kept:
        if w.frames is not None:  # a clip whose resolution changed: every window at the first one's size
            same = w.frames.shape[1:3] == shape[1:3]  # the usual case: copied once, not rescaled into a copy first
            frames[w.index], video_ok[w.index] = w.frames if same else same_size(list(w.frames), shape[1:3]), True
        if w.audio_ok:
            audio[w.index], audio_ok[w.index] = w.audio, True
    if short_side is not None and crop is not None:
        frames = np.ascontiguousarray(trim_to_input(frames, short_side, crop))
    return DecodedClip(
        record.clip_id,
        torch.from_numpy(frames),
        torch.from_numpy(audio),
        torch.from_numpy(video_ok),
        torch.from_numpy(audio_ok),
        kept[-1].index + 1,
        span,
        note=note,
    )


Decode = Callable[..., Decoded]  # decode_clip's signature: what a ClipReader calls per clip


class ClipReader(torch.utils.data.Dataset[Decoded]):
    """A torch Dataset of decoded (or unreadable) clips, so a DataLoader worker process decodes while the main
    one encodes. What crosses to the main process is model-sized: m frames per window, at most (resize, resize) pixels.
    Frames are framed as `config.video` says (`subject`: how a face framing chooses the subject).
    `decode` is `decode_clip` (a test may give another module-level function: a worker unpickles it by name)."""

    def __init__(
        self, records: list[ClipRecord], config: ModelConfig, decode: Decode = decode_clip, subject: str = "largest"
    ) -> None:
        self.records = records
        self.config = config
        self.decode = decode
        self.subject = subject

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Decoded:
        c = self.config
        v = c.video
        framer = framer_for(v, subject=self.subject)  # a fresh subject per clip; the detector is one per process
        record, m, rate = self.records[i], v.frames_per_window, c.audio.sample_rate
        return self.decode(record, m, rate, c.clip_seconds, v.resize, v.crop, MAX_GAP_S, framer, v.face_min_found)


def _keep(item: Any) -> Any:
    """The collate function: with batch_size=None the loader hands each sample (a DecodedClip or an
    UnreadableClip) over as it is (typed Any: torch annotates collate functions for batches of samples)."""
    return item


# Decoding workers start from a fresh interpreter, never by fork. A forked child gets the parent's memory but
# not its threads: a parent that scaled frames with PyAV (replay, the Python API, a notebook) holds FFmpeg
# scaler contexts whose slice threads do not exist in the child, and the child's first `frame.reformat`
# waits for them for ever (issue 27). `spawn` pays an interpreter start and the imports (~3 s of CPU) once
# per worker and loader; `clip_loader` starts them at once, so callers make it before their own start-up.
WORKER_START = "spawn"


def _decode_worker_init(worker_id: int) -> None:
    """A decoding worker's own settings, set where it starts: one torch thread (it decodes, with FFmpeg's
    own threads; the main process runs the encoders on the cores)."""
    torch.set_num_threads(1)


def clip_loader(
    records: list[ClipRecord],
    config: ModelConfig,
    workers: int,
    decode_timeout_s: float | None = None,
    decode: Decode = decode_clip,
    subject: str = "largest",
) -> Generator[Decoded, None, None]:
    """Decoded clips in order; with `workers` >= 1, decoding runs in that many processes (at most one per
    clip; started by `WORKER_START` when this is called, and decoding from then on) ahead of the caller, and
    a clip that takes more than `decode_timeout_s` (default `DECODE_TIMEOUT_S`) to arrive (a decoder that
    hung) raises RankStalled. The workers end with the last clip, or when the generator is closed. `subject`:
    how face framing chooses the subject (`sec2sec.framing.SUBJECTS`)."""
    timeout = DECODE_TIMEOUT_S if decode_timeout_s is None else decode_timeout_s
    workers = min(workers, len(records))
    loader = torch.utils.data.DataLoader(
        ClipReader(records, config, decode, subject),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_keep,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,  # one pass per loader: the workers start once and end with it
        timeout=timeout if workers else 0,
        multiprocessing_context=WORKER_START if workers else None,
        worker_init_fn=_decode_worker_init if workers else None,
    )
    return _stall_named(iter(loader), timeout)  # iter() starts the workers and hands them the first clips


def _stall_named(clips: Iterator[Decoded], timeout: float) -> Generator[Decoded, None, None]:
    """`clips`, with the DataLoader's timeout turned into RankStalled and its one-line message."""
    try:
        yield from clips
    except RuntimeError as exc:
        if "timed out" not in str(exc):
            raise
        raise RankStalled(
            f"no decoded clip came from the decoding workers for {timeout:g} s (a decoder hung on a "
            "clip); the run is stopped. A resumed run skips the clips already done; --workers 0 decodes inline"
        ) from None
