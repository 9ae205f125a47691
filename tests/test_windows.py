"""The windower: exact one-second windows from timestamps with jitter, gaps, VFR, silence, rate changes."""

from __future__ import annotations

import numpy as np
import pytest

from sec2sec.media import AudioChunk, VideoFrame
from sec2sec.windows import Windower, pick_frames

S = 1_000_000_000


def frame(t_ns: int, value: int = 0) -> VideoFrame:
    return VideoFrame(rgb=np.full((8, 8, 3), value % 256, dtype=np.uint8), t_ns=t_ns)


def chunk(first: int, n: int, rate: int = 16_000, value: float = 0.5) -> AudioChunk:
    return AudioChunk(samples=np.full(n, value, dtype=np.float32), first_sample=first, sample_rate=rate)


def feed(w: Windower, times: list[int], audio_rate: int = 16_000, audio_seconds: int = 3) -> None:
    for i, t in enumerate(times):
        w.push_frame(frame(t, i))
    for k in range(audio_seconds * 10):
        w.push_audio(chunk(k * audio_rate // 10, audio_rate // 10, audio_rate))


def test_jittered_frames_fill_exact_windows_with_the_nearest_frames() -> None:
    rng = np.random.default_rng(1)
    times = [int(i * S / 25 + rng.integers(-8_000_000, 8_000_000)) for i in range(1, 75)]
    w = Windower(frames_per_window=5, sample_rate=16_000)
    feed(w, times)
    windows = [*w.ready(), *w.finish()]
    assert [x.index for x in windows] == [0, 1, 2]
    for win in windows:
        expected = pick_frames(times, win.index, 5)
        assert win.frames[:, 0, 0, 0].tolist() == [p % 256 for p in expected]
        assert win.frames_seen == sum(win.index * S <= t < (win.index + 1) * S for t in times)
        assert win.audio.shape == (16_000,) and win.samples_seen == 16_000 and win.audio_ok


def test_a_gap_in_video_marks_that_window_and_keeps_the_others() -> None:
    times = [t for t in range(0, 3 * S, S // 10) if not S <= t < 2 * S]
    w = Windower(frames_per_window=4, sample_rate=16_000)
    feed(w, times)
    windows = [*w.ready(), *w.finish()]
    assert [(x.index, x.video_ok, x.frames_seen) for x in windows] == [(0, True, 10), (1, False, 0), (2, True, 10)]
    assert windows[1].frames is None and windows[1].audio_ok


def test_variable_frame_rate_repeats_where_sparse() -> None:
    times = [0, 100_000_000, 150_000_000, 900_000_000]  # dense then sparse
    w = Windower(frames_per_window=4, sample_rate=16_000, expect_audio=False)
    for i, t in enumerate(times):
        w.push_frame(frame(t, i))
    (win,) = list(w.finish())
    assert win.frames[:, 0, 0, 0].tolist() == [1, 2, 3, 3]  # centres 125, 375, 625, 875 ms
    assert not win.audio_ok and win.audio_coverage == 0.0


def test_window_waits_for_both_clocks_then_closes() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000)
    w.push_frame(frame(500_000_000))
    w.push_frame(frame(1_100_000_000))  # video passed the end of window 0
    assert list(w.ready()) == []  # audio has not
    w.push_audio(chunk(0, 16_000))
    (win,) = w.ready()
    assert win.index == 0 and win.samples_seen == 16_000


def test_silent_microphone_closes_after_the_grace_timeout() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000, grace_ns=300_000_000)
    for t in range(0, 2 * S, S // 10):
        w.push_frame(frame(t))
    assert list(w.ready(now_ns=S + 200_000_000)) == []
    (win,) = w.ready(now_ns=S + 300_000_000)
    assert win.index == 0 and win.video_ok and not win.audio_ok
    assert win.closed_ns == S + 300_000_000


def test_sample_rate_change_mid_stream_is_resampled_per_run() -> None:
    w = Windower(frames_per_window=1, sample_rate=16_000, expect_video=False)
    w.push_audio(chunk(0, 22_050, rate=44_100, value=0.25))  # first half second at 44.1 kHz
    w.push_audio(chunk(24_000, 24_000, rate=48_000, value=-0.5))  # second half at 48 kHz
    (win,) = w.ready()
    assert win.samples_seen == 16_000
    assert np.allclose(win.audio[1000:7000], 0.25, atol=0.01)
    assert np.allclose(win.audio[9000:15000], -0.5, atol=0.01)


def test_last_partial_window_reports_its_coverage() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000)
    for t in range(0, 1_400_000_000, 100_000_000):
        w.push_frame(frame(t))
    w.push_audio(chunk(0, 22_400))  # 1.4 s
    windows = [*w.ready(), *w.finish()]
    assert [x.index for x in windows] == [0, 1]
    assert windows[1].frames_seen == 4 and windows[1].audio_coverage == pytest.approx(0.4)
    assert np.all(windows[1].audio[6400:] == 0)


def test_late_data_is_counted_not_misplaced() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000)
    feed(w, list(range(0, 2 * S, S // 10)), audio_seconds=2)
    assert [x.index for x in w.ready()] == [0]  # the video clock is at 1.9 s: window 1 stays open
    w.push_frame(frame(500_000_000))
    w.push_audio(chunk(8_000, 100))
    assert w.late_frames == 1 and w.late_samples == 100
    (last,) = list(w.finish())
    assert last.index == 1 and last.frames_seen == 10 and last.samples_seen == 16_000


def test_bad_pushes_are_refused() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000)
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        w.push_frame(VideoFrame(rgb=np.zeros((4, 4), dtype=np.uint8), t_ns=0))
    with pytest.raises(ValueError, match="float32 mono"):
        w.push_audio(AudioChunk(samples=np.zeros((4, 2), dtype=np.float32), first_sample=0, sample_rate=16_000))
    with pytest.raises(ValueError, match="frames_per_window = 0"):
        Windower(frames_per_window=0, sample_rate=16_000)


def interleaved(w: Windower, seconds: int, audio_until_s: float | None, video_until_s: float | None) -> list[int]:
    """Feed 10 fps video and 100 ms audio chunks in time order (as a demuxer does), each stream stopping at its
    `*_until_s`; after every item take what is ready. Returns, per window, how many items had been pushed when
    it closed, and checks that the windower's buffers stayed small all along."""
    closed_after: list[int] = []
    pushed = 0
    for k in range(seconds * 10):
        t = k * S // 10
        if video_until_s is None or t < video_until_s * S:
            w.push_frame(frame(t, k))
            pushed += 1
        if audio_until_s is None or t < audio_until_s * S:
            w.push_audio(chunk(k * 1_600, 1_600))
            pushed += 1
        closed_after += [pushed] * len(list(w.ready()))
        assert len(w._open) <= 5 and len(w._chunks) <= 50  # about max_skew_ns of data, whatever the length
    return closed_after


@pytest.mark.parametrize("audio_until_s, video_until_s", [(1.5, None), (None, 1.5)])
def test_a_stream_that_ends_early_does_not_hold_windows_back(
    audio_until_s: float | None, video_until_s: float | None
) -> None:
    """A file whose audio (or video) stops at 1.5 s: later windows still close while the other stream plays,
    about `max_skew_ns` behind it, flagged missing; nothing waits for the end of the file."""
    w = Windower(frames_per_window=2, sample_rate=16_000, max_skew_ns=2 * S)
    closed_after = interleaved(w, 60, audio_until_s, video_until_s)
    assert len(closed_after) >= 57  # the last two or three close at the end of the data (finish)
    # after 1.5 s, 10 items a second arrive: window i closes once the data has reached about i + 1 + 2 s
    assert all(pushed <= 30 + (i + 4) * 10 for i, pushed in enumerate(closed_after)), closed_after


def test_windows_after_an_ended_stream_are_flagged_missing() -> None:
    w2 = Windower(frames_per_window=2, sample_rate=16_000, max_skew_ns=2 * S)
    all_windows = []
    for k in range(80):
        w2.push_frame(frame(k * S // 10, k))
        if k < 15:
            w2.push_audio(chunk(k * 1_600, 1_600))
        all_windows += list(w2.ready())
    all_windows += list(w2.finish())
    assert [x.index for x in all_windows] == list(range(8))
    assert [x.audio_ok for x in all_windows] == [True, True] + [False] * 6
    assert all_windows[1].samples_seen == 8_000 and all(x.video_ok for x in all_windows)


def test_a_jump_in_time_is_a_gap_not_thousands_of_windows() -> None:
    """A timestamp far ahead (a broken file) closes no empty windows: the seconds in between are skipped in
    one step and counted, so the next window's index shows the gap."""
    w = Windower(frames_per_window=1, sample_rate=16_000, expect_audio=False)
    w.push_frame(frame(0))
    w.push_frame(frame(100_000 * S))
    (first,) = w.ready()
    assert first.index == 0 and first.video_ok and w.next_index == 100_000
    (last,) = w.finish()
    assert last.index == 100_000 and last.video_ok and w.skipped_windows == 99_999


def test_seconds_with_neither_modality_are_skipped_and_those_with_either_are_kept() -> None:
    w = Windower(frames_per_window=2, sample_rate=16_000)
    w.push_frame(frame(S // 2))  # window 0: video only
    w.push_audio(chunk(16_000 * 3, 16_000))  # window 3: audio only; windows 1 and 2 hold nothing
    w.push_frame(frame(5 * S))
    w.push_audio(chunk(16_000 * 5, 16_000))
    windows = [*w.ready(), *w.finish()]
    assert [(x.index, x.video_ok, x.audio_ok) for x in windows] == [(0, True, False), (3, False, True), (5, True, True)]
    assert w.skipped_windows == 3  # 1, 2 and 4


def test_live_silence_on_both_sources_closes_no_windows() -> None:
    """Live, the grace timeout moves the clock on, but seconds with no input are a gap, not empty windows."""
    w = Windower(frames_per_window=2, sample_rate=16_000, grace_ns=300_000_000)
    w.push_frame(frame(S // 2))
    w.push_audio(chunk(0, 16_000))
    assert [x.index for x in w.ready(now_ns=S + 300_000_000)] == [0]
    assert list(w.ready(now_ns=50 * S)) == [] and w.next_index == 49 and w.skipped_windows == 48
    w.push_frame(frame(60 * S))
    assert [x.index for x in w.ready(now_ns=61 * S + 300_000_000)] == [60]
