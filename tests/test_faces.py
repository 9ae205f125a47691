"""The face detector that ships with the package (sec2sec/faces.py): MTCNN on real faces from tests/data, small and
large, on busy backgrounds; nothing on faceless textures; batched equals one by one; the weights are verified."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers.face_clips import FacePath, iou, render_faces, texture

from sec2sec.faces import (
    MIN_FACE,
    PYRAMID_FACTOR,
    WEIGHTS_DIR,
    WEIGHTS_SHA256,
    FaceDetector,
    FaceWeightsError,
    detector_identity,
    pyramid_scales,
)

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The detector's tiny convolutions gain nothing from a second thread and, on a machine shared with other
    jobs, wait on it at every layer: run this module's detections on one (results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _first_frame(name: str) -> np.ndarray:
    with av.open(str(DATA / name)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


# facenet-pytorch 2.6.0's MTCNN (the reference implementation these weights come from; torch 2.14, min_face_size
# 20) on the first frame of each clip: box and landmarks (left eye, right eye, nose, mouth left, mouth right).
REFERENCE = {
    "grid_speaker_mpeg1.mpg": (
        (98.3, 100.4, 206.2, 253.7),
        ((131, 161), (180, 158), (160, 191), (140, 221), (180, 217)),
    ),
    "single_face_vp9_opus.webm": (
        (220.6, 81.9, 372.1, 293.6),
        ((258, 170), (330, 167), (295, 215), (271, 253), (328, 250)),
    ),
}


@pytest.mark.parametrize("clip", sorted(REFERENCE))
def test_the_shipped_speakers_are_found_where_the_reference_implementation_finds_them(
    detector: FaceDetector, clip: str
) -> None:
    box, landmarks = REFERENCE[clip]
    faces = detector.detect(_first_frame(clip))[0]
    assert len(faces) == 1 and faces.scores[0] > 0.99
    assert faces.boxes.shape == (1, 4) and faces.landmarks.shape == (1, 5, 2)
    assert iou(tuple(faces.boxes[0]), box) > 0.85, faces.boxes[0]
    width = box[2] - box[0]
    assert np.abs(faces.landmarks[0] - np.array(landmarks)).max() < 0.04 * width, faces.landmarks[0]
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = faces.landmarks[0]
    assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)  # left first; eyes, nose, mouth


@pytest.mark.parametrize(
    ("width", "size"),
    [
        (40, (640, 480)),
        pytest.param(60, (640, 480), marks=pytest.mark.slow),
        pytest.param(120, (640, 480), marks=pytest.mark.slow),
        (200, (640, 480)),
        pytest.param(40, (1280, 720), marks=pytest.mark.slow),
    ],
)
def test_faces_from_40_to_200_px_wide_are_found_on_a_busy_background(
    detector: FaceDetector, width: int, size: tuple[int, int]
) -> None:
    for source, seed in (("grid", 1), ("single", 2)):
        start = (size[0] * 0.35, size[1] * 0.45)
        frames, truth = render_faces([FacePath(source, width, start, start)], size, fps=1, seconds=1, seed=seed)
        faces = detector.detect(frames[0], min_face=MIN_FACE)[0]
        assert len(faces) == 1, (source, faces.boxes)
        assert iou(tuple(faces.boxes[0]), truth[0][0]) > 0.5, (source, faces.boxes[0], truth[0][0])


def test_busy_textures_hold_no_face(detector: FaceDetector) -> None:
    images = np.stack([texture(640, 480, seed) for seed in range(8)])
    assert [len(f) for f in detector.detect(images)] == [0] * 8


def test_a_batch_gives_what_each_image_gives_alone(detector: FaceDetector) -> None:
    paths = [FacePath("grid", 90, (200, 200), (420, 300)), FacePath("single", 60, (500, 120), (500, 360))]
    frames, _ = render_faces(paths, fps=2, seconds=1.5)
    batched = detector.detect(np.stack(frames))
    assert [len(f) for f in batched] == [2, 2, 2]
    for frame, together in zip(frames, batched, strict=True):
        alone = detector.detect(frame)[0]
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(together.landmarks, alone.landmarks, atol=1e-3)


def test_rescore_moves_a_stale_box_onto_the_face_and_rejects_background(detector: FaceDetector) -> None:
    """What the framer's follower relies on: O-Net alone, on last frame's box in a new frame."""
    frames, truth = render_faces([FacePath("grid", 100, (320, 240), (320, 240))], fps=1, seconds=1)
    face = np.array(truth[0][0], dtype=np.float32)
    stale = face + np.array([18, -12, 18, -12], dtype=np.float32)  # the face moved 18 px left, 12 px down
    found = detector.rescore(frames[0], np.stack([stale, [20, 20, 120, 120]]))
    assert found.scores[0] > 0.9 and found.scores[1] < 0.3
    assert iou(tuple(found.boxes[0]), tuple(face)) > iou(tuple(stale), tuple(face)) + 0.1
    assert found.landmarks.shape == (2, 5, 2)


def test_the_pyramid_starts_where_a_40_px_face_fills_p_nets_window() -> None:
    scales = pyramid_scales(480, 40)
    assert scales[0] == pytest.approx(0.3) and 480 * scales[-1] >= 12 > 480 * scales[-1] * PYRAMID_FACTOR
    assert all(b / a == pytest.approx(PYRAMID_FACTOR) for a, b in itertools.pairwise(scales))
    assert pyramid_scales(480, 40, 80) == scales[:3]  # faces of 40, 56 and 80 px
    with pytest.raises(ValueError, match="need 0 < min_face <= max_face"):
        pyramid_scales(480, 40, 20)


def test_the_shipped_weights_are_the_published_files() -> None:
    for name, digest in WEIGHTS_SHA256.items():
        assert hashlib.sha256((WEIGHTS_DIR / f"{name}.pt").read_bytes()).hexdigest() == digest
    assert (WEIGHTS_DIR / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2019 Timothy Esler")
    lines = "".join(f"{n} {WEIGHTS_SHA256[n]}\n" for n in ("pnet", "rnet", "onet"))
    assert detector_identity() == {"name": "mtcnn", "weights_sha256": hashlib.sha256(lines.encode()).hexdigest()}


def test_a_damaged_or_missing_weight_file_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, folder)
    data = bytearray((folder / "rnet.pt").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    (folder / "rnet.pt").write_bytes(bytes(data))
    with pytest.raises(FaceWeightsError) as err:
        FaceDetector(folder=folder)
    message = str(err.value)
    assert "\n" not in message and str(folder / "rnet.pt") in message and WEIGHTS_SHA256["rnet"] in message
    assert message.endswith("the file is damaged or replaced: reinstall sec2sec-live")
    (folder / "onet.pt").unlink()
    shutil.copy(WEIGHTS_DIR / "rnet.pt", folder / "rnet.pt")
    with pytest.raises(FaceWeightsError, match=r"onet.pt cannot be read \(No such file or directory\); reinstall"):
        FaceDetector(folder=folder)


def test_detections_do_not_depend_on_the_thread_count(detector: FaceDetector) -> None:
    """Live capture, replay and extraction workers may run torch with different thread counts; the faces (and so
    the crops) must not change with it."""
    paths = [FacePath("grid", 70, (200, 200), (420, 300), wobble=10), FacePath("single", 45, (500, 150), (480, 330))]
    frames, _ = render_faces(paths, fps=2, seconds=1)
    found = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        found[threads] = [detector.detect(frame)[0] for frame in frames]
    torch.set_num_threads(1)
    for one, two in zip(found[1], found[2], strict=True):
        assert len(one) == 2 and np.array_equal(one.boxes, two.boxes) and np.array_equal(one.landmarks, two.landmarks)


@pytest.mark.requires_cuda
def test_on_a_gpu_the_detector_finds_the_faces_it_finds_on_the_cpu(detector: FaceDetector) -> None:
    paths = [FacePath("grid", 70, (200, 200), (420, 300), wobble=10), FacePath("single", 45, (500, 150), (480, 330))]
    frames, _ = render_faces(paths, fps=2, seconds=1)
    gpu = FaceDetector("cuda")
    for cpu_faces, gpu_faces in zip(detector.detect(np.stack(frames)), gpu.detect(np.stack(frames)), strict=True):
        assert len(cpu_faces) == len(gpu_faces) == 2
        for a, b in zip(cpu_faces.boxes, gpu_faces.boxes, strict=True):
            assert iou(tuple(a), tuple(b)) > 0.95
        assert np.abs(cpu_faces.landmarks - gpu_faces.landmarks).max() < 1.5
