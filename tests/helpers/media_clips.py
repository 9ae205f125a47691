"""The folder behind the `media` fixture: the small clips committed in tests/data (see its MANIFEST.tsv) and the
cases no redistributable clip covers, derived from those clips with PyAV when the test session starts.

Every file keeps the name the tests use. Derived here (about 2 s on one core):

- talking_face_silent_audio.mp4: the GRID speaker looped to 20 s, H.264 + an AAC track of digital silence,
  moov atom first (faststart), so that a byte-truncated copy still has its index;
- talking_face_rotate90_tag.mp4: the same bytes with a 90-degree display matrix in the video track header;
- talking_face_truncated_60pct.mp4: the first 60% of its bytes;
- grid_speaker_corrupted_bytes.mpg: 400 bytes of the middle third of the GRID clip overwritten (fixed seed);
- audio_only_no_video_stream.mov: QuickTime with no video stream, 7.02 s of 16 kHz stereo PCM (GRID speech);
- audio/speech_8k_mono.wav: the 8 kHz mono PCM track of grid_speaker_8khz_pcm.mkv as a WAV file;
- empty.mp4 (0 bytes) and not_a_video.mp4 (text).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"  # tests/data
COMMITTED = (
    "grid_speaker_mpeg1.mpg",
    "grid_speaker_0.6s.mp4",
    "grid_speaker_8khz_pcm.mkv",
    "single_face_vp9_opus.webm",
    "carphone_qcif_no_audio.mp4",
)
GRID = DATA / "grid_speaker_mpeg1.mpg"

TALKING_FACE_SECONDS = 20
TALKING_FACE_FPS = 25  # GRID's frame rate
TALKING_FACE_RATE = 48_000
AUDIO_ONLY_RATE = 16_000
AUDIO_ONLY_SAMPLES = 112_320  # 7.02 s: seven whole windows and a sliver of an eighth
CORRUPT_BYTES, CORRUPT_SEED = 400, 1  # seed 1: the MPEG-1 decoder rejects 11 packets, 70 of 75 frames left
# The display matrix FFmpeg writes for `-metadata:s:v rotate=90` (16.16 fixed point; w in 2.30).
ROTATE_90 = (0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000)


def build_media_folder(folder: Path) -> Path:
    """Fill `folder` with every clip the tests name; returns `folder`."""
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    for name in COMMITTED:
        shutil.copyfile(DATA / name, folder / name)
    talking = write_talking_face(folder / "talking_face_silent_audio.mp4")
    rotated = folder / "talking_face_rotate90_tag.mp4"
    rotated.write_bytes(set_video_matrix(talking.read_bytes(), ROTATE_90))
    data = talking.read_bytes()
    (folder / "talking_face_truncated_60pct.mp4").write_bytes(data[: len(data) * 6 // 10])
    (folder / "grid_speaker_corrupted_bytes.mpg").write_bytes(corrupt(GRID.read_bytes(), CORRUPT_BYTES, CORRUPT_SEED))
    speech = decode_audio(GRID, AUDIO_ONLY_RATE, "stereo")
    looped = np.tile(speech, (1, -(-AUDIO_ONLY_SAMPLES // speech.shape[1])))[:, :AUDIO_ONLY_SAMPLES]
    write_pcm(folder / "audio_only_no_video_stream.mov", looped, AUDIO_ONLY_RATE)
    write_pcm(folder / "audio" / "speech_8k_mono.wav", decode_audio(DATA / "grid_speaker_8khz_pcm.mkv"), 8_000)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "not_a_video.mp4").write_text("This is a text file with a video extension.\n" * 20, encoding="utf-8")
    return folder


def write_talking_face(path: Path, seconds: int = TALKING_FACE_SECONDS) -> Path:
    """The GRID speaker's 75 frames looped to `seconds` s at 25 fps, H.264 + stereo AAC of digital silence."""
    with av.open(str(GRID)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(path), "w", container_options={"movflags": "faststart"}) as container:
        video = container.add_stream("libx264", rate=TALKING_FACE_FPS)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "30"}
        sound = container.add_stream("aac", rate=TALKING_FACE_RATE, layout="stereo")
        for i in range(seconds * TALKING_FACE_FPS):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        total = seconds * TALKING_FACE_RATE
        for start in range(0, total, 1024):
            silence = np.zeros((2, min(1024, total - start)), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = TALKING_FACE_RATE, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    return path


def decode_audio(path: Path, rate: int | None = None, layout: str = "mono") -> np.ndarray:
    """The first audio stream as int16 (channels, n), resampled to `rate` (None: the file's rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16p", layout=layout, rate=rate or stream.codec_context.sample_rate)
        parts = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        parts += [out.to_ndarray() for out in resampler.resample(None)]
    return np.concatenate(parts, axis=1)


def write_pcm(path: Path, samples: np.ndarray, rate: int) -> Path:
    """int16 (channels, n) as 16-bit PCM in the container the suffix names (.wav, .mov, ...)."""
    layout = {1: "mono", 2: "stereo"}[samples.shape[0]]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        for start in range(0, samples.shape[1], 1024):
            chunk = np.ascontiguousarray(samples[:, start : start + 1024].T).reshape(1, -1)  # interleaved
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def corrupt(data: bytes, n: int, seed: int) -> bytes:
    """Overwrite `n` distinct bytes of the middle third with random values (reproducible from `seed`)."""
    rng = np.random.default_rng(seed)
    out = np.frombuffer(data, dtype=np.uint8).copy()
    where = rng.choice(np.arange(len(data) // 3, 2 * len(data) // 3), size=n, replace=False)
    out[where] = rng.integers(0, 256, size=n, dtype=np.uint8)
    return out.tobytes()


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each ISO-BMFF box in data[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:
            size = end - start
        yield kind, start + header, start + size
        start += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    return next((s, e) for k, s, e in _boxes(data, start, end) if k == kind)


def set_video_matrix(data: bytes, matrix: tuple[int, ...]) -> bytes:
    """An mp4's bytes with the video track header's display matrix replaced (what phones write to rotate)."""
    out = bytearray(data)
    moov = _child(data, 0, len(data), b"moov")
    for kind, start, end in _boxes(data, *moov):
        if kind != b"trak":
            continue
        hdlr, _ = _child(data, *_child(data, start, end, b"mdia"), b"hdlr")
        if data[hdlr + 8 : hdlr + 12] != b"vide":  # version+flags, pre_defined, then handler_type
            continue
        tkhd, _ = _child(data, start, end, b"tkhd")
        # version+flags, then times/ids/duration (20 bytes in version 0, 32 in 1), then 16 bytes before the matrix
        offset = tkhd + 4 + (32 if data[tkhd] == 1 else 20) + 16
        out[offset : offset + 36] = struct.pack(">9i", *matrix)
        return bytes(out)
    raise ValueError("no video track in this mp4")
