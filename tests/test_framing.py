"""Framing (sec2sec/framing.py): the whole frame as before, or one subject's face, found, followed, aligned and
cropped where frames enter; the same boxes on the same frames in replay, a fake camera and extraction; windows
without the face have no video. Clips: real faces from tests/data pasted on busy textures (helpers/face_clips)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from helpers.configs import TINY_ENCODERS_TOML, TINY_FUSION_TOML, small_config
from helpers.face_clips import FacePath, inside, iou, write_face_clip

from sec2sec.checkpoint import encoder_settings_mismatch, read_checkpoint, save_checkpoint, setting
from sec2sec.commands import build_parser
from sec2sec.config import NANOS_PER_SECOND, VideoConfig, load_config, parse_config
from sec2sec.faces import FaceDetector, detector_identity
from sec2sec.framing import (
    HOLD_NS,
    FaceRecord,
    FaceSummary,
    Framer,
    FramingMismatch,
    choose_framing,
    framer_for,
    shared_detector,
)
from sec2sec.media import MediaReader, SlotThinning, VideoFrame, sample_frame_times
from sec2sec.model import Sec2Sec
from sec2sec.offline.datasets import ClipRecord
from sec2sec.offline.decoding import MAX_GAP_S, DecodedClip, decode_clip
from sec2sec.offline.extract import extract
from sec2sec.offline.features import read_index
from sec2sec.offline.prepared import prepare
from sec2sec.windows import Window, Windower, file_windows

M, RATE, FPS = 8, 16_000, 30
DATA = Path(__file__).resolve().parent / "data"


def _framer(subject: str = "largest") -> Framer:
    return Framer("face", resize=128, crop=112, margin=0.25, subject=subject)


def _replay(path: Path, framer: Framer) -> list[VideoFrame]:
    """The frames replay and extraction frame: the decoder's, thinned to the window slots."""
    with MediaReader(path, sample_rate=RATE, frames_per_window=M, framer=framer) as reader:
        return [item for item in reader if isinstance(item, VideoFrame)]


def _truth(truth: list, t_ns: int, k: int = 0) -> tuple[float, ...] | None:
    return truth[round(t_ns * FPS / NANOS_PER_SECOND)][k]


def _windows(path: Path, framer: Framer) -> list[Window]:
    return file_windows(str(path), M, RATE, framer=framer, face_min_found=0.5)[0]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The detector's tiny convolutions gain nothing from a second thread and, on a machine shared with other
    jobs, wait on it at every layer: run this module's detections on one (results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faces")


@pytest.fixture(scope="module")
def moving(clips: Path) -> tuple[Path, list]:
    """A 60 px face crossing a 640 x 480 frame for 4 s, wobbling (up to ~4 face widths a second)."""
    path = clips / "moving.mp4"
    return path, write_face_clip(path, [FacePath("grid", 60, (120, 140), (520, 340), wobble=25)], seconds=4)


def _crop_face(detector: FaceDetector, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    faces = detector.detect(rgb, min_face=20)[0]
    assert len(faces) == 1, faces.boxes
    return faces.boxes[0], faces.landmarks[0]


def test_frame_framing_gives_the_decoders_own_pixels() -> None:
    """`frame` framing is the old path pixel for pixel: FFmpeg's area filter to short side 128 (so every cache
    extracted before framing existed stays valid), and no face record."""
    clip = DATA / "single_face_vp9_opus.webm"
    with av.open(str(clip)) as container:
        expected = [
            f.reformat(width=228, height=128, format="rgb24", interpolation="AREA").to_ndarray()
            for f in container.decode(video=0)
        ]
    with MediaReader(clip, short_side=128) as reader:
        by_size = [item for item in reader if isinstance(item, VideoFrame)]
    with MediaReader(clip, framer=Framer("frame", resize=128)) as reader:
        framed = [item for item in reader if isinstance(item, VideoFrame)]
    assert len(framed) == len(by_size) == len(expected) == 72
    for a, b, c in zip(framed, by_size, expected, strict=True):
        assert np.array_equal(a.rgb, c) and np.array_equal(b.rgb, c) and a.face is None
    array = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = Framer("frame", resize=128).frame(array, 0)
    assert out.face is None and np.array_equal(out.rgb, cv2.resize(array, (171, 128), interpolation=cv2.INTER_AREA))
    windows = file_windows(str(clip), M, RATE, framer=Framer("frame", resize=128))[0]
    assert [w.face for w in windows] == [None, None, None] and all(w.video_ok for w in windows)


def test_a_moving_face_is_found_followed_and_cropped_in_every_window(moving: tuple[Path, list]) -> None:
    path, truth = moving
    frames = _replay(path, _framer())
    assert len(frames) == 4 * M and all(f.rgb.shape == (128, 128, 3) and f.face is not None for f in frames)
    held = [f.face.found and inside(f.face.box, _truth(truth, f.t_ns), 0.05) for f in frames if f.face]
    assert sum(held) >= 0.9 * len(frames), held
    windows = _windows(path, _framer())
    assert len(windows) == 4
    detector = shared_detector()
    for w in windows:
        assert w.face is not None and w.face.found >= 7 / 8 and w.face.faces == 1 and w.video_ok
        assert w.face.box is not None and inside(w.face.box, _truth(truth, w.start_ns + NANOS_PER_SECOND // 2), 0.1)
        for rgb in w.frames:  # the crop holds the face, centred, two thirds of the encoder's 112 px view
            box, _ = _crop_face(detector, rgb)
            centre = (box[:2] + box[2:]) / 2
            assert np.abs(centre - 64).max() < 14 and 0.35 < (box[2] - box[0]) / 112 < 0.8, box


@pytest.mark.parametrize(
    ("width", "size"),
    [(40, (640, 480)), pytest.param(200, (1280, 720), marks=pytest.mark.slow)],
)
def test_the_smallest_and_a_large_face_are_framed(clips: Path, width: int, size: tuple[int, int]) -> None:
    path = clips / f"face_{width}.mp4"
    start, end = (size[0] * 0.3, size[1] * 0.4), (size[0] * 0.65, size[1] * 0.55)
    truth = write_face_clip(path, [FacePath("single", width, start, end, wobble=10)], size=size, seconds=3)
    frames = _replay(path, _framer())
    assert sum(f.face.found and inside(f.face.box, _truth(truth, f.t_ns), 0.05) for f in frames) >= 0.9 * len(frames)
    assert all(f.rgb.shape == (128, 128, 3) for f in frames)  # the model's input, whatever the source's size
    assert all(w.video_ok and w.face.found >= 7 / 8 for w in _windows(path, _framer()))


def test_a_tilted_face_comes_out_with_its_eyes_level(clips: Path) -> None:
    path = clips / "tilted.mp4"
    write_face_clip(path, [FacePath("grid", 100, (300, 230), (340, 250), roll=20)], seconds=2)
    detector = shared_detector()
    for frame in _replay(path, _framer())[2:]:
        _, (left, right, *_) = _crop_face(detector, frame.rgb)
        assert abs(math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))) < 5
    with av.open(str(path)) as container:
        source = next(container.decode(video=0)).to_ndarray(format="rgb24")
    (left, right, *_) = detector.detect(source)[0].landmarks[0]
    assert 15 < math.degrees(math.atan2(right[1] - left[1], right[0] - left[0])) < 25  # as pasted: 20 degrees


def test_a_still_face_gives_a_still_box(clips: Path) -> None:
    path = clips / "still.mp4"
    write_face_clip(path, [FacePath("single", 90, (320, 240), (320, 240), frozen=True)], seconds=3)
    boxes = np.array([f.face.box for f in _replay(path, _framer())[2:]])
    side = boxes[:, 2] - boxes[:, 0]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert centres.std(axis=0).max() < 0.01 * side.mean() and side.std() < 0.02 * side.mean()


@pytest.mark.parametrize("subject", ["largest", pytest.param("centre", marks=pytest.mark.slow)])
def test_with_two_faces_the_subject_is_chosen_once_and_kept(clips: Path, subject: str) -> None:
    """A large face near a corner and a small one in the middle, both moving: `largest` follows the large one,
    `centre` the small one, in every frame; each window counts both."""
    path = clips / "two.mp4"
    paths = [
        FacePath("grid", 120, (150, 150), (190, 170), wobble=15),
        FacePath("single", 50, (330, 250), (300, 270), wobble=15),
    ]
    truth = write_face_clip(path, paths, seconds=3)
    mine, other = (0, 1) if subject == "largest" else (1, 0)
    frames = _replay(path, _framer(subject))
    for f in frames:
        assert f.face.found and inside(f.face.box, _truth(truth, f.t_ns, mine), 0.05), f.t_ns
        assert iou(f.face.box, _truth(truth, f.t_ns, other)) < iou(f.face.box, _truth(truth, f.t_ns, mine))
    assert [w.face.faces for w in _windows(path, _framer(subject))] == [2, 2, 2]


def test_a_face_passing_behind_the_subject_never_takes_over(clips: Path) -> None:
    """The subject (in front) sits still; from 1 s another face walks across the whole frame behind it, larger
    than the subject at first (a person close to the camera) and overlapping it on the way."""
    path = clips / "passer.mp4"
    paths = [
        FacePath("single", 150, (-80, 220), (720, 260), appear_s=1.0, end_width=110),  # drawn first: behind
        FacePath("grid", 100, (320, 240), (330, 250), wobble=8),
    ]
    truth = write_face_clip(path, paths, seconds=5)
    frames = _replay(path, _framer())
    assert all(f.face.found and inside(f.face.box, _truth(truth, f.t_ns, 1), 0.05) for f in frames)
    assert max(w.face.faces for w in _windows(path, _framer())) == 2


def test_a_lost_face_is_held_briefly_then_looked_for_again_in_the_whole_frame(clips: Path) -> None:
    path = clips / "away.mp4"
    paths = [
        FacePath("grid", 90, (200, 200), (220, 210), gone_s=1.5),
        FacePath("grid", 90, (470, 300), (480, 310), appear_s=3.0),
    ]
    truth = write_face_clip(path, paths, seconds=4.5)
    frames = _replay(path, _framer())
    seen = max(f.t_ns for f in frames if f.t_ns < 1.5 * NANOS_PER_SECOND)
    for f in frames:
        if f.t_ns <= seen + HOLD_NS:  # seen, or held through the miss
            assert f.face.found and inside(f.face.box, _truth(truth, min(f.t_ns, seen)), 0.05)
        elif f.t_ns < 3 * NANOS_PER_SECOND:
            assert not f.face.found and f.face.box is None
        elif f.t_ns >= 3.5 * NANOS_PER_SECOND:  # found again by a search (every 0.5 s while none is followed)
            assert f.face.found and inside(f.face.box, _truth(truth, f.t_ns, 1), 0.05)
    windows = _windows(path, _framer())
    assert [w.video_ok for w in windows] == [True, True, False, True, True]
    assert windows[2].frames is None and windows[2].face == FaceSummary(0.0, None, 0) and windows[2].audio_ok


def test_a_clip_without_a_face_has_no_video_in_any_window_and_keeps_its_audio(clips: Path) -> None:
    path = clips / "nobody.mp4"
    write_face_clip(path, [], seconds=3)
    windows, report = file_windows(str(path), M, RATE, framer=_framer(), face_min_found=0.5)
    assert len(windows) == 3 and report["has_video"] == 1
    for w in windows:
        assert not w.video_ok and w.frames is None and w.audio_ok and w.frames_seen == FPS
        assert w.face == FaceSummary(found=0.0, box=None, faces=0)


def _camera(path: Path, framer: Framer) -> list[VideoFrame]:
    """A fake camera: every frame of the file at full resolution, as a 30 fps camera delivers them, framed in
    the capture thread only when a window slot will use it (SlotThinning, one frame of look-ahead)."""
    with av.open(str(path)) as container:
        arrays = [(f.to_ndarray(format="rgb24"), round(f.time * NANOS_PER_SECOND)) for f in container.decode(video=0)]
    thinning, out = SlotThinning(M), []
    for k, (rgb, t_ns) in enumerate(arrays):
        after = arrays[k + 1][1] if k + 1 < len(arrays) else None
        if thinning.needed(t_ns, after):
            framed = framer.frame(rgb, t_ns)
            out.append(VideoFrame(framed.rgb, t_ns, framed.face))
    return out


def test_replay_a_fake_camera_and_extraction_frame_the_same_frames_alike(moving: tuple[Path, list]) -> None:
    path, _ = moving
    replay = _replay(path, _framer())
    camera = _camera(path, _framer())
    assert [f.t_ns for f in camera] == [f.t_ns for f in replay]
    for a, b in zip(camera, replay, strict=True):
        assert a.face == b.face and np.array_equal(a.rgb, b.rgb), a.t_ns
    windower = Windower(M, RATE, expect_audio=False, face_min_found=0.5)
    for frame in camera:
        windower.push_frame(frame)
    live = list(windower.finish())
    files = _windows(path, _framer())
    assert [w.face for w in live] == [w.face for w in files]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(live, files, strict=True))
    record = ClipRecord("moving", path, "g", "train", {})
    clip = decode_clip(record, M, RATE, 4, 128, 112, MAX_GAP_S, _framer(), 0.5)
    assert isinstance(clip, DecodedClip), clip
    assert clip.video_ok.tolist() == [True] * 4
    assert torch.equal(clip.frames, torch.from_numpy(np.stack([w.frames for w in files])))


def _frame(t_ns: int, found: bool, box: tuple[float, ...], faces: int) -> VideoFrame:
    record = FaceRecord(found=found, box=box if found else None, faces=faces)
    return VideoFrame(np.full((128, 128, 3), 7, dtype=np.uint8), t_ns, record)


def test_a_window_with_too_few_face_frames_has_no_video() -> None:
    windower = Windower(M, RATE, expect_audio=False, face_min_found=0.5)
    found = [[1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 1, 0, 1, 1, 1]]
    for index, pattern in enumerate(found):
        for k, (t_ns, hit) in enumerate(zip(sample_frame_times(index, M), pattern, strict=True)):
            windower.push_frame(_frame(t_ns, bool(hit), (10.0 + k, 20.0, 110.0 + k, 120.0), faces=1 + k % 3))
    first, second = windower.finish()
    assert first.frames is None and not first.video_ok and first.frames_seen == M
    assert first.face == FaceSummary(found=3 / 8, box=(11.0, 20.0, 111.0, 120.0), faces=3)
    assert second.video_ok and second.frames.shape == (M, 128, 128, 3) and second.face.found == 6 / 8
    assert second.face.box == (14.0, 20.0, 114.0, 120.0)  # the per-coordinate median of its 6 found frames
    with pytest.raises(ValueError, match=r"face_min_found = 1\.5; it must be between 0 and 1"):
        Windower(M, RATE, face_min_found=1.5)


def test_framing_is_validated_and_the_shipped_configs_choose_it() -> None:
    with pytest.raises(ValueError, match=r"\[model.video\] framing = 'crop' is not allowed; use one of frame, face"):
        VideoConfig(framing="crop")
    with pytest.raises(ValueError, match=r"\[model.video\] face_margin = 1.5 is out of range; it must be >= 0.0"):
        VideoConfig(face_margin=1.5)
    with pytest.raises(ValueError, match=r"\[model.video\] face_min_found = -0.1 is out of range"):
        parse_config({"model": {"video": {"face_min_found": -0.1}}})
    assert VideoConfig().framing == "frame"
    assert load_config("hume_reaction").model.video.framing == "face"
    for name in ("default", "first_impressions", "lstm", "attention_lstm", "vision_only"):
        assert load_config(name).model.video.framing == "frame", name
    with pytest.raises(ValueError, match="--face 'left' is not allowed; use one of largest, centre"):
        Framer("face", subject="left")


def test_a_checkpoint_keeps_its_framing(tmp_path: Path) -> None:
    config = small_config()
    faced = config.__class__(
        **{**config.__dict__, "video": VideoConfig(**{**config.video.__dict__, "framing": "face"})}
    )
    save_checkpoint(tmp_path / "c.pt", Sec2Sec(faced), trained=True)
    loaded = read_checkpoint(tmp_path / "c.pt").config
    assert loaded.video.framing == "face" and loaded.video.face_margin == 0.25 and loaded == faced
    assert framer_for(loaded.video).framing == "face" and framer_for(loaded.video, framing="frame").framing == "frame"


def test_features_of_one_framing_do_not_fit_a_model_of_the_other() -> None:
    frame = small_config()
    face = replace(frame, video=replace(frame.video, framing="face"))
    assert encoder_settings_mismatch(frame, face) == "video.framing" and setting(face, "video.framing") == "face"
    assert encoder_settings_mismatch(face, replace(face, fusion=replace(face.fusion, width=32))) is None


def test_a_framing_override_that_differs_from_training_warns_once() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_framing("face", None) == "face" and choose_framing("frame", "frame") == "frame"
    with pytest.warns(FramingMismatch) as caught:
        assert choose_framing("face", "frame") == "frame"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and message.startswith("the checkpoint frames video by 'face' but --framing frame")
    with pytest.raises(ValueError, match="framing 'faces' is not allowed; use one of frame, face"):
        choose_framing("frame", "faces")


def test_the_framer_keeps_no_pixels_and_restarts_when_time_goes_back_or_the_size_changes(
    moving: tuple[Path, list],
) -> None:
    path, _ = moving
    framer = _framer()
    with av.open(str(path)) as container:
        arrays = [f.to_ndarray(format="rgb24") for _, f in zip(range(20), container.decode(video=0), strict=False)]
    first = [framer.frame(rgb, k * NANOS_PER_SECOND // FPS).face for k, rgb in enumerate(arrays)]
    assert not any(isinstance(v, np.ndarray) and v.size > 8 for v in vars(framer).values())
    again = [framer.frame(rgb, k * NANOS_PER_SECOND // FPS).face for k, rgb in enumerate(arrays)]  # a new stream
    assert again == first
    smaller = [cv2.resize(rgb, (480, 360), interpolation=cv2.INTER_AREA) for rgb in arrays[:4]]
    start = 20 * NANOS_PER_SECOND // FPS
    resized = [framer.frame(rgb, start + k * NANOS_PER_SECOND // FPS).face for k, rgb in enumerate(smaller)]
    assert all(r.found and r.box[2] <= 480 and r.box[3] <= 360 for r in resized)  # searched afresh at the new size


TINY_FACE_TOML = (
    """
[model]
clip_seconds = 3
"""
    + TINY_ENCODERS_TOML
    + TINY_FUSION_TOML
    + """
[model.temporal]
kind = "lstm"
hidden = 16
"""
)


@pytest.mark.slow
def test_extraction_frames_faces_and_records_the_framing_and_the_detector(clips: Path, tmp_path: Path) -> None:
    write_face_clip(clips / "ext_face.mp4", [FacePath("grid", 70, (200, 200), (420, 300), wobble=10)], seconds=3)
    write_face_clip(clips / "ext_nobody.mp4", [], seconds=3)
    manifest = tmp_path / "manifest.csv"
    rows = [f"{clips / 'ext_face.mp4'},0.5,0.5,a,train", f"{clips / 'ext_nobody.mp4'},0.4,0.6,b,train"]
    manifest.write_text("path,valence,arousal,group,split\n" + "\n".join(rows) + "\n")
    (tmp_path / "tiny.toml").write_text(TINY_FACE_TOML)
    config = load_config(tmp_path / "tiny.toml")
    assert config.model.video.framing == "frame"
    with pytest.warns(FramingMismatch, match="the config frames video by 'frame' but --framing face"):
        extract("manifest", manifest, tmp_path / "cache", config, workers=0, framing="face")
    index = read_index(tmp_path / "cache")
    assert index.framing == "face" and index.face == "largest" and index.detector == detector_identity()
    on_disk = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert on_disk["framing"] == "face" and on_disk["config"]["video"]["framing"] == "face"
    shard = torch.load(tmp_path / "cache" / index.shards[0], weights_only=True)
    by_clip = {cid: shard["video_ok"][c["row"]].tolist() for cid, c in index.clips.items()}
    assert sorted(by_clip.values()) == [[False, False, False], [True, True, True]]
    with pytest.raises(ValueError, match="chose faces by --face largest"), pytest.warns(FramingMismatch):
        extract("manifest", manifest, tmp_path / "cache", config, workers=0, framing="face", subject="centre")
    wrong = "the cache was extracted with model.video.framing = 'face' but the config has 'frame'; use the extraction"
    with pytest.raises(ValueError, match=wrong):
        prepare(tmp_path / "cache", config, "group", 0)


def test_sec2sec_extract_takes_framing_and_face() -> None:
    args = build_parser().parse_args(["extract", "--dataset", "manifest", "--root", "m.csv", "--out", "c"])
    assert args.framing is None and args.face == "largest"
    argv = [
        "extract",
        "--dataset",
        "manifest",
        "--root",
        "m.csv",
        "--out",
        "c",
        "--framing",
        "face",
        "--face",
        "centre",
    ]
    args = build_parser().parse_args(argv)
    assert args.framing == "face" and args.face == "centre"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv[:-4], "--framing", "faces"])
