"""Reading real files: streams, timestamps, rotation and clear errors for bad files (clips: helpers/media_clips.py)."""

from __future__ import annotations

import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.odd_clips import write_clock_jump, write_rawvideo, write_size_change_ts
from helpers.pipeline_fakes import ListSink, replay_pipeline, run_bounded

from monitor.run_end import EndReason, RunEnd
from sec2sec.media import (
    MAX_ASPECT,
    MAX_PIXELS,
    AudioChunk,
    FrameTick,
    MediaError,
    MediaReader,
    VideoFrame,
    frame_size_error,
)
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.decoding import MAX_GAP_S, DecodedClip, decode_clip
from sec2sec.stream import AffectStream
from sec2sec.windows import Windower, file_windows


def read_all(path: Path) -> tuple[list[VideoFrame], list[AudioChunk], MediaReader]:
    with MediaReader(path) as reader:
        items = list(reader)
    return [i for i in items if isinstance(i, VideoFrame)], [i for i in items if isinstance(i, AudioChunk)], reader


def test_mpeg1_with_mp2_audio(media: Path) -> None:
    frames, chunks, reader = read_all(media / "grid_speaker_mpeg1.mpg")
    assert reader.info.has_video and reader.info.has_audio and reader.info.sample_rate == 44_100
    assert len(frames) == 75 and frames[0].rgb.shape == (288, 360, 3) and frames[0].rgb.dtype == np.uint8
    assert [f.t_ns for f in frames[:3]] == [0, 40_000_000, 80_000_000]
    ends = [c.first_sample for c in chunks[1:]]
    assert ends == [c.end_sample for c in chunks[:-1]]  # contiguous
    assert chunks[-1].end_sample == pytest.approx(3 * 44_100, abs=1200)


def test_rotation_metadata_turns_the_frames_upright(media: Path) -> None:
    with MediaReader(media / "talking_face_rotate90_tag.mp4") as reader:
        first = next(i for i in reader if isinstance(i, VideoFrame))
    with MediaReader(media / "talking_face_silent_audio.mp4") as reader:
        plain = next(i for i in reader if isinstance(i, VideoFrame))
    assert plain.rgb.shape == (288, 360, 3) and first.rgb.shape == (360, 288, 3)
    assert np.array_equal(first.rgb, np.rot90(plain.rgb, k=-1))


@pytest.mark.parametrize(
    ("name", "windows", "video", "audio"),
    [
        ("grid_speaker_0.6s.mp4", 1, [True], [True]),
        ("single_face_vp9_opus.webm", 3, [True] * 3, [True] * 3),
        ("carphone_qcif_no_audio.mp4", 4, [True] * 4, [False] * 4),
        ("audio_only_no_video_stream.mov", 8, [False] * 8, [True] * 8),
        ("grid_speaker_8khz_pcm.mkv", 3, [True] * 3, [True] * 3),
    ],
)
def test_file_windows(media: Path, name: str, windows: int, video: list[bool], audio: list[bool]) -> None:
    got, report = file_windows(str(media / name), 8, 16_000)
    assert len(got) == windows
    assert [w.video_ok for w in got] == video and [w.audio_ok for w in got] == audio
    assert all(w.audio.shape == (16_000,) for w in got)
    assert all(w.frames.shape[0] == 8 for w in got if w.frames is not None)
    assert report["skipped_packets"] == 0


def test_short_file_gives_one_partial_window(media: Path) -> None:
    (window,), _ = file_windows(str(media / "grid_speaker_0.6s.mp4"), 8, 16_000)
    assert window.frames_seen == 15 and 0.55 < window.audio_coverage < 0.65


def test_corrupted_file_is_decoded_around_the_damage(media: Path) -> None:
    frames, _, reader = read_all(media / "grid_speaker_corrupted_bytes.mpg")
    assert reader.skipped >= 1 and 60 <= len(frames) < 75  # 75 frames when intact; 70 survive this damage


def test_damaged_audio_that_changes_format_is_resampled_afresh(media: Path, tmp_path: Path) -> None:
    """This damage makes one MP2 frame decode with another layout/rate: the reader starts a new resampler
    (or skips that frame) instead of stopping with "Frame does not match AudioResampler setup"."""
    from helpers.media_clips import corrupt

    damaged = tmp_path / "damaged.mpg"
    damaged.write_bytes(corrupt((media / "grid_speaker_mpeg1.mpg").read_bytes(), 3000, 4))
    frames, chunks, reader = read_all(damaged)
    assert reader.skipped >= 1 and len(frames) >= 60
    assert chunks[-1].end_sample >= 2.5 * chunks[-1].sample_rate  # the audio goes on to the end (3 s)


def test_a_playlist_disguised_as_mp4_may_not_open_other_files(tmp_path: Path) -> None:
    """FFmpeg's concat and HLS demuxers would read the files a playlist names: only media demuxers and the
    file protocol are allowed."""
    target = tmp_path / "secret.mp4"
    target.write_bytes((Path(__file__).resolve().parents[1] / "samples" / "demo_face.mp4").read_bytes())
    (tmp_path / "concat.mp4").write_text(f"ffconcat version 1.0\nfile {target}\n")
    (tmp_path / "list.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:12\n#EXTINF:12.0,\n{target}\n#EXT-X-ENDLIST\n")
    for name in ("concat.mp4", "list.m3u8"):
        with pytest.raises(MediaError, match="not a readable audio/video file, or a playlist/format"):
            MediaReader(tmp_path / name)
    with MediaReader(target) as reader:  # the file itself is fine
        assert reader.info.has_video


def test_truncated_file_keeps_what_decodes(media: Path) -> None:
    frames, chunks, reader = read_all(media / "talking_face_truncated_60pct.mp4")
    assert reader.skipped >= 1  # the packet cut in half
    assert 250 < len(frames) < 500  # 60% of the bytes of 20 s at 25 fps: 288 frames decode
    assert 10 * 48_000 < chunks[-1].end_sample < 20 * 48_000  # and the audio interleaved with them (11.5 s)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.mp4", "no such file; check the path"),
        ("empty.mp4", "the file is empty (0 bytes)"),
        ("not_a_video.mp4", "not a readable audio/video file"),
    ],
)
def test_unreadable_files_fail_with_one_line(media: Path, name: str, message: str) -> None:
    with pytest.raises(MediaError) as err:
        MediaReader(media / name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_committed_clips_are_small_and_listed_in_the_manifest() -> None:
    """Every file in tests/data has a source, a licence that allows redistribution, and a purpose."""
    data = Path(__file__).resolve().parent / "data"
    header, *rows = (line.split("\t") for line in (data / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines())
    assert header == ["file", "source", "license", "what it exercises"]
    assert all(len(row) == 4 and all(field.strip() for field in row) for row in rows)
    assert all(row[2].startswith(("MIT", "BSD", "Apache-2.0", "CC BY 4.0")) for row in rows)
    listed = {row[0] for row in rows}
    assert listed == {p.name for p in data.iterdir()} - {"MANIFEST.tsv"}
    assert sum((data / name).stat().st_size for name in listed) < 2_000_000


def unthinned_windows(path: Path, m: int) -> list:
    """The windows of every frame converted (no thinning), for comparison."""
    with MediaReader(path, short_side=128, sample_rate=16_000) as reader:
        windower = Windower(m, 16_000, expect_video=reader.info.has_video, expect_audio=reader.info.has_audio)
        windows = []
        for item in reader:
            if isinstance(item, AudioChunk):
                windower.push_audio(item)
            else:
                windower.push_frame(item)
            windows += list(windower.ready())
        return windows + list(windower.finish())


def write_jittered_clip(path: Path, seconds: int = 3) -> Path:
    """H.264 at an irregular frame rate (10-40 ms gaps, two equal-gap runs), so frames sit near slot edges."""
    import av

    rng = np.random.default_rng(3)
    gaps_ms = rng.choice([10, 20, 25, 33, 40], size=seconds * 40)
    times_ms = np.cumsum(gaps_ms)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1000, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 64, 48, "yuv420p", Fraction(1, 1000)
        for k, t in enumerate(times_ms[times_ms < seconds * 1000]):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), k % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("m", [1, 4, 8, 16])
def test_thinned_decoding_gives_the_windows_of_every_frame(media: Path, tmp_path: Path, m: int) -> None:
    """Converting only the frames a slot will use (FrameTick for the rest) changes nothing in the windows:
    same frames, same counts, on a regular 25 fps clip and an irregular one."""
    demo = Path(__file__).resolve().parents[1] / "samples" / "demo_face.mp4"
    for path in (demo, write_jittered_clip(tmp_path / "jitter.mp4")):
        thinned, _ = file_windows(str(path), m, 16_000, 128)
        full = unthinned_windows(path, m)
        assert [w.index for w in thinned] == [w.index for w in full] and len(full) >= 3
        for a, b in zip(thinned, full, strict=True):
            assert a.frames_seen == b.frames_seen and a.video_ok == b.video_ok
            assert a.frames is not None and np.array_equal(a.frames, b.frames)
            assert np.array_equal(a.audio, b.audio)
    with MediaReader(demo, short_side=128, frames_per_window=8) as reader:
        items = list(reader)
    converted = sum(isinstance(item, VideoFrame) for item in items)
    ticks = sum(isinstance(item, FrameTick) for item in items)
    assert converted == 8 * 12 and ticks == 25 * 12 - converted  # 8 of every 25 frames are converted


# ---- files that lie: a clock that jumps, a size that changes, absurd dimensions (tests/odd_clips.py) ----


def test_a_clock_jump_costs_what_the_content_costs(tmp_path: Path) -> None:
    """1 s of frames, then one frame 2000 s later: two windows, the empty seconds skipped without allocating
    anything per second (before, each empty second was a window with its own second of audio zeros)."""
    path = write_clock_jump(tmp_path / "jump.mkv", jump_s=2_000)
    tracemalloc.start()
    try:
        windows, report = file_windows(str(path), 8, 16_000, 112)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(w.index, w.video_ok, w.frames_seen) for w in windows] == [(0, True, 25), (2_000, True, 1)]
    assert report["skipped_windows"] == 1_999
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_replay_of_a_clock_jump_steps_the_model_twice_and_reports_the_gap(tmp_path: Path) -> None:
    """Offline replay of a 100000 s jump: two model steps, the second estimate says 99999 s were missing."""
    path = write_clock_jump(tmp_path / "jump.mkv", jump_s=100_000)
    torch.manual_seed(0)
    sink = ListSink()
    pipeline = replay_pipeline(path, AffectStream(Sec2Sec(small_config()).eval()), "offline", sink)
    tracemalloc.start()
    try:
        assert run_bounded(pipeline) == RunEnd(EndReason.END)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(r.window, r.gap, r.video_ok) for r in sink.rows] == [(0, 0, True), (100_000, 99_999, True)]
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_realtime_replay_skips_a_clock_jump_instead_of_sleeping_through_it(tmp_path: Path) -> None:
    path = write_clock_jump(tmp_path / "jump.mkv", jump_s=100_000)
    torch.manual_seed(0)
    sink = ListSink()
    pipeline = replay_pipeline(path, AffectStream(Sec2Sec(small_config()).eval()), "realtime", sink)
    started, started_ns = time.monotonic(), time.monotonic_ns()
    assert run_bounded(pipeline) == RunEnd(EndReason.END)
    ended_ns = time.monotonic_ns()
    assert time.monotonic() - started < 30  # 1 s of media at real pace; before: 100000 s of sleeping
    assert [(r.window, r.gap) for r in sink.rows] == [(0, 0), (100_000, 99_999)]
    (replay,) = pipeline.sources
    assert replay.skipped_ns == 100_000 * 1_000_000_000 - 960_000_000  # from the frame at 0.96 s
    # the pacing origin moved back by what was skipped (before: it stayed, and stamps were 100000 s ahead)
    assert abs(started_ns - replay.origin_ns - replay.skipped_ns) < 5 * 1_000_000_000
    last_end_ns = replay.origin_ns + 100_001 * 1_000_000_000  # what capture_clock stamps the last window with
    assert started_ns < last_end_ns < ended_ns + 2 * 1_000_000_000


def test_extraction_ends_a_clip_at_a_jump_longer_than_the_limit(tmp_path: Path) -> None:
    path = write_clock_jump(tmp_path / "jump.mkv", jump_s=1_000_000)
    record = ClipRecord("jump", path, "g", "train", {})
    clip = decode_clip(record, 4, 16_000, 3)
    assert isinstance(clip, DecodedClip) and clip.length == 1 and clip.windows == 1
    assert clip.note == f"ended at 1 s: the next data is 999999 s later (more than {MAX_GAP_S} s)"
    assert clip.video_ok.tolist() == [True, False, False]
    near_path = write_clock_jump(tmp_path / "near.mkv", jump_s=2)
    near = decode_clip(ClipRecord("near", near_path, "g", "train", {}), 4, 16_000, 4)
    assert near.note == "" and near.video_ok.tolist() == [True, False, True, False] and near.length == 3


def test_a_resolution_change_mid_second_is_rescaled_to_one_size_per_window(tmp_path: Path) -> None:
    path = write_size_change_ts(tmp_path / "change.ts")
    with MediaReader(path) as reader:
        sizes = {item.rgb.shape for item in reader if isinstance(item, VideoFrame)}
    assert sizes == {(48, 64, 3), (80, 96, 3)}  # the file really changes size inside window 0
    windows, _ = file_windows(str(path), 8, 16_000)
    assert [(w.index, w.frames.shape) for w in windows] == [(0, (8, 80, 96, 3)), (1, (8, 80, 96, 3))]
    first = windows[0].frames[0]  # a uniform 64x48 frame, scaled up: still uniform
    assert int(first.max()) - int(first.min()) <= 2
    clip = decode_clip(ClipRecord("change", path, "g", "train", {}), 8, 16_000, 2, short_side=48)
    assert isinstance(clip, DecodedClip) and clip.video_ok.tolist() == [True, True]
    sink = ListSink()
    torch.manual_seed(0)
    ended = run_bounded(replay_pipeline(path, AffectStream(Sec2Sec(small_config()).eval()), "offline", sink))
    assert ended == RunEnd(EndReason.END) and [(r.window, r.video_ok) for r in sink.rows] == [(0, True), (1, True)]


def test_absurd_frame_dimensions_are_refused_with_one_line(tmp_path: Path) -> None:
    path = write_rawvideo(tmp_path / "wide.nut", 60_000, 100)
    with pytest.raises(MediaError) as caught:
        MediaReader(path)
    message = str(caught.value)
    assert message == (
        f"{path}: video frames are 60000x100 pixels; at most {MAX_PIXELS} pixels (8K) with sides at most "
        f"{MAX_ASPECT}:1 apart are allowed; scale or crop the video with ffmpeg -vf scale=W:H or crop=W:H"
    )
    assert frame_size_error(1920, 1080) == "" and frame_size_error(7680, 4320) == ""
    assert frame_size_error(900, 100) != "" and frame_size_error(7681, 4320) != ""


def test_frames_are_bounded_by_pixels_after_scaling(tmp_path: Path) -> None:
    """The widest allowed frame, scaled to the model's short side, holds at most short^2 * MAX_ASPECT pixels."""
    path = write_rawvideo(tmp_path / "pano.nut", 800, 100)
    with MediaReader(path, short_side=32) as reader:
        (frame,) = [item for item in reader if isinstance(item, VideoFrame)]
    assert frame.rgb.shape == (32, 256, 3) and frame.rgb.size <= 32 * 32 * MAX_ASPECT * 3
