"""Reading real files: streams, timestamps, rotation and clear errors for bad files (clips: tests/media_clips.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sec2sec.media import AudioChunk, MediaError, MediaReader, VideoFrame
from sec2sec.windows import file_windows


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
    from media_clips import corrupt

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
