"""Full-resolution frames -> what the video encoder sees: the whole frame, or the subject's face, followed.

One class frames a frame, `Framer.frame(picture, t_ns) -> Framed`, and every path that makes frames for the model
calls it where frames enter: replay and extraction in the decoder (`sec2sec.media.MediaReader`), live capture in
the camera thread. So a cached token equals the live token of the same frames, and nothing downstream ever holds
more than the model's input: the full frame (and, under "face", a small detection copy) never leaves `frame()`.

`framing = "frame"` (config `[model.video]`): the frame with its short side scaled to `video.resize` by the
source's own area filter (the picture's `rgb(width, height)`), pixel for pixel what the decoder and the camera
made before framing existed. No face record.

`framing = "face"`: one subject, followed (all times are the frames' own `t_ns`, never a frame count):
- **Search.** The whole frame is searched by the MTCNN detector (`sec2sec.faces`; faces from `MIN_FACE` = 40 px,
  on its scaled-down pyramid) at the first frame, then at the first frame at or after each multiple of
  `LOOK_EVERY_NS` (0.5 s) on the stream's clock while no subject is followed, of `SEARCH_EVERY_NS` (2 s) while
  one is. The subject is chosen once, when none is followed: the largest face
  (`subject = "largest"`) or the one nearest the frame's centre ("centre"). Later searches only confirm it: the
  face whose box overlaps the subject's last box most (IoU >= `MATCH_IOU`) is the subject; other faces (a
  person walking behind) are counted, never followed.
- **Follow.** Every other frame, the detector's last stage (O-Net) rescores the subject's last box in the new
  frame and moves it onto the face with five landmarks; when the face left that box (a fast move), the whole
  cascade looks for it in a square `FOLLOW_REACH` times its size around it.
- **Smooth and hold.** Centre, size and eye angle pass a One-Euro filter (steady when the head is still, quick
  when it moves); a subject missed for up to `HOLD_NS` (a blink, a turned head, motion blur) keeps its last
  box and counts as found; after that it is lost, and the next search looks in the whole frame again.
- **Crop.** A square around the face, `1 + 2 * face_margin` face sizes across within the encoder's `crop` view
  (so `resize / crop` times that in all), rotated so the eyes are level, cut from the full frame (area filter,
  then a bilinear warp; outside the frame is black) at `resize` x `resize`. The geometry is rounded to 1/16 px
  and 1/100 degree first, so the float rounding of another thread count or device practically never moves a
  pixel. Before a face was ever found the crop is the frame's centre square; while lost, the last box.

The schedule and the camera: a framer's output depends only on the frames it is given, so replay, extraction and
the camera give the same boxes on the same frames when they give it the same frames. They do: each frames only
the frames a window slot will use (decided with one frame of look-ahead by `sec2sec.media.SlotThinning`, the rule
the windower picks by), so a 30 fps camera and a replay that converts 8 frames a second feed the framer the very
same 8; and the search moments are multiples of a period on the stream's clock, not every n-th frame. Memory:
the framer keeps a few numbers between frames, never pixels.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sec2sec.config import FRAMINGS, NANOS_PER_SECOND, VideoConfig

if TYPE_CHECKING:  # the detector (and torch) load on first use: importing the decoder stays light
    from sec2sec.faces import FaceDetector, Faces

SUBJECTS = ("largest", "centre")  # how the subject is chosen among several faces (a run option: --face)
# Whole-frame searches, on multiples of these periods of the stream's clock: every 0.5 s while no subject is
# followed (a face that comes into view is framed within half a second), every 2 s while one is (to count the
# faces in view and to re-anchor the follower). A search costs 6-10 follows (docs/performance.md).
LOOK_EVERY_NS = 500_000_000
SEARCH_EVERY_NS = 2 * NANOS_PER_SECOND
HOLD_NS = 500_000_000  # a subject missed for longer is lost
MATCH_IOU = 0.3  # a face found by a search is the subject when its box overlaps the subject's last box this much
FOLLOW_SCORE = 0.7  # O-Net's face score for the subject's box in a new frame to count as found
FOLLOW_REACH = 2.5  # sides of the face: the square searched around it when O-Net lost it
FOLLOW_FACE_PX = 56  # that square is scaled so the face is about this wide (O-Net's 48 px from a sharper copy)
MAX_ROLL = 45.0  # degrees: eye lines steeper than this (a face in profile) are clamped
QUANTUM_PX, QUANTUM_DEG = 1 / 16, 1 / 100


class FramingMismatch(UserWarning):
    """A model runs on another framing than the one it was trained (or a cache was extracted) with."""


def choose_framing(trained: str, requested: str | None, *, what: str = "the checkpoint") -> str:
    """The framing to run with: `requested` (an override: --framing, the API) when given, else `trained`. When
    they differ, one warning line says so (the model then sees input unlike its training)."""
    for value in (trained, requested):
        if value is not None and value not in FRAMINGS:
            raise ValueError(f"framing {value!r} is not allowed; use one of {', '.join(FRAMINGS)}")
    if requested is None or requested == trained:
        return trained
    warnings.warn(
        f"{what} frames video by {trained!r} but --framing {requested} was asked for: the model sees input unlike "
        f"what it was trained on; leave --framing out (or give {trained}) unless that is the comparison you want",
        FramingMismatch,
        stacklevel=2,
    )
    return requested


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side reduced to `short_side`, aspect kept; never enlarged."""
    short = min(width, height)
    if short_side is None or short <= short_side:
        return width, height
    if width <= height:
        return short_side, max(short_side, round(height * short_side / width))
    return max(short_side, round(width * short_side / height)), short_side


class Picture(Protocol):
    """A frame as its source holds it (a decoded PyAV frame, a camera's array), upright."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright picture."""
        ...

    def rgb(self, width: int, height: int) -> np.ndarray:
        """The upright picture as uint8 (height, width, 3) RGB, scaled by the source's own area filter."""
        ...


class ArrayPicture:
    """A uint8 (H, W, 3) RGB array as a Picture; scaled by OpenCV's area filter (as the camera scales)."""

    def __init__(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"a frame must be uint8 (H, W, 3) RGB; got {rgb.dtype} {rgb.shape}")
        self.array = rgb

    @property
    def size(self) -> tuple[int, int]:
        return self.array.shape[1], self.array.shape[0]

    def rgb(self, width: int, height: int) -> np.ndarray:
        if (width, height) == self.size:
            return self.array
        import cv2

        return cv2.resize(self.array, (width, height), interpolation=cv2.INTER_AREA)


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceRecord:
    """The subject's face in one frame. `found`: the subject was followed in this frame (seen, or held through a
    miss of up to HOLD_NS); `box`: the square the encoder sees (its centre crop x crop pixels: the face plus
    `face_margin` on each side), as (x0, y0, x1, y1) in the source frame's pixels before the eye-level turn, None
    when not found; `faces`: faces in view at the last whole-frame search."""

    found: bool
    box: Box | None
    faces: int


@dataclass(frozen=True)
class Framed:
    """What `Framer.frame` returns: `rgb` uint8 (H, W, 3), the model's input (frame: short side `resize`; face:
    `resize` x `resize`), and the face record (None under frame framing)."""

    rgb: np.ndarray
    face: FaceRecord | None


@dataclass(frozen=True)
class FaceSummary:
    """A window's face: `found`, the fraction of its m frame slots whose frame had the subject's face; `box`, the
    per-coordinate median of those frames' boxes (None when none had it); `faces`, the most faces seen in one
    of its frames."""

    found: float
    box: Box | None
    faces: int


def summarize(records: Sequence[FaceRecord | None]) -> FaceSummary | None:
    """The summary of a window's slot records (one per slot, repeats included); None under frame framing."""
    if not records or all(r is None for r in records):
        return None
    boxes = [r.box for r in records if r is not None and r.found and r.box is not None]
    box = tuple(float(v) for v in np.median(np.array(boxes), axis=0)) if boxes else None
    return FaceSummary(
        found=sum(1 for r in records if r is not None and r.found) / len(records),
        box=box,  # type: ignore[arg-type]
        faces=max(r.faces for r in records if r is not None),
    )


class _OneEuro:
    """One-Euro filter (Casiez et al. 2012) of one value over irregular times: the cutoff rises with the speed."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: float | None = None
        self.speed = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def __call__(self, x: float, dt: float, scale: float = 1.0) -> float:
        """Filter `x`, `dt` seconds after the last value; `scale` makes the speed relative (e.g. face sizes)."""
        if self.value is None or dt <= 0:
            self.value, self.speed = x, 0.0
            return x
        speed = (x - self.value) / dt / scale
        self.speed += self._alpha(self.d_cutoff, dt) * (speed - self.speed)
        alpha = self._alpha(self.min_cutoff + self.beta * abs(self.speed), dt)
        self.value += alpha * (x - self.value)
        return self.value


@dataclass
class _Subject:
    """The subject being followed: the last measured face (box, eye angle) and the smoothed crop geometry."""

    box: np.ndarray  # (4,) last measured face box, source pixels
    seen_ns: int
    filters: tuple[_OneEuro, _OneEuro, _OneEuro, _OneEuro]
    geometry: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # centre x, y, face side, angle (deg)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes `a` (n, 4) with one box `b` (4,)."""
    low, high = np.maximum(a[:, :2], b[:2]), np.minimum(a[:, 2:], b[2:])
    inter = np.clip(high - low, 0, None).prod(axis=1)
    area = (a[:, 2:] - a[:, :2]).prod(axis=1) + (b[2:] - b[:2]).prod()
    return inter / np.maximum(area - inter, 1e-6)


def _measure(box: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """A face box and its landmarks -> (centre x, centre y, side, eye-line angle in degrees)."""
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    angle = math.degrees(math.atan2(ry - ly, rx - lx)) if rx > lx else 0.0
    side = float((box[2] - box[0] + box[3] - box[1]) / 2)
    return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2, side, max(-MAX_ROLL, min(MAX_ROLL, angle))


def aligned_crop(rgb: np.ndarray, centre: tuple[float, float], side: float, angle: float, out: int) -> np.ndarray:
    """The `side`-pixel square of `rgb` centred at `centre` (pixel i spans [i, i + 1)), turned by `angle` degrees
    (its x axis along that direction in the source), as uint8 (out, out, 3); black outside the frame. A square
    two or more times larger than `out` is first shrunk by a whole factor (OpenCV's area filter), so the
    bilinear warp that follows never scales by less than a half."""
    import cv2

    height, width = rgb.shape[:2]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    scale = out / side  # output pixels per source pixel
    k = max(1, math.floor(1 / scale))
    reach = side / 2 * (abs(cos) + abs(sin)) + k + 1
    x0, y0 = max(0, math.floor(centre[0] - reach)), max(0, math.floor(centre[1] - reach))
    x1, y1 = min(width, math.ceil(centre[0] + reach)), min(height, math.ceil(centre[1] + reach))
    if x1 - x0 < k or y1 - y0 < k:
        return np.zeros((out, out, 3), dtype=np.uint8)
    w, h = (x1 - x0) // k, (y1 - y0) // k
    region = rgb[y0 : y0 + h * k, x0 : x0 + w * k]
    if k > 1:
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
    # output pixel (j, i) -> source point centre + R (j + 0.5 - out/2, i + 0.5 - out/2) / scale -> region pixel
    half = (0.5 - out / 2) / scale
    rot = np.array([[cos, -sin], [sin, cos]]) / scale
    offset = np.array([centre[0] - x0, centre[1] - y0]) + np.array([cos - sin, sin + cos]) * half
    matrix = np.hstack([rot, offset[:, None]]) / k
    matrix[:, 2] -= 0.5
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(region, matrix, (out, out), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@functools.lru_cache(maxsize=4)
def shared_detector(device: str = "cpu") -> FaceDetector:
    """One FaceDetector per device and process (weights checked and loaded once)."""
    from sec2sec.faces import FaceDetector

    return FaceDetector(device)


class Framer:
    """Frames in time order -> the model's input and the subject's face record (see the module docstring).

    `framing`: "frame" or "face"; `resize`, `crop`, `margin`: the model's `video.resize`, `video.crop` and
    `video.face_margin` (under frame framing `resize` may be None: frames keep their size); `subject`: "largest"
    or "centre"; `detector`: the face detector (default: this process's shared CPU detector, made on first use).
    Feed it the frames a window slot uses, in time order (`reset()` before another stream); a frame earlier than
    the one before, or of another size (a stream that changed resolution), starts the following afresh.
    """

    def __init__(
        self,
        framing: str = "frame",
        *,
        resize: int | None = 128,
        crop: int = 112,
        margin: float = 0.25,
        subject: str = "largest",
        detector: FaceDetector | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing {framing!r} is not allowed; use one of {', '.join(FRAMINGS)}")
        if subject not in SUBJECTS:
            raise ValueError(f"--face {subject!r} is not allowed; use one of {', '.join(SUBJECTS)}")
        if framing == "face" and (resize is None or resize < crop or not 0 <= margin <= 1):
            raise ValueError(f"face framing needs resize >= crop and 0 <= margin <= 1; got {resize}, {crop}, {margin}")
        self.framing, self.resize, self.crop, self.margin, self.subject = framing, resize, crop, margin, subject
        self._detector = detector
        self.reset()

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = shared_detector("cpu")
        return self._detector

    def reset(self) -> None:
        """Forget the subject and the search schedule (a new stream starts)."""
        self._subject: _Subject | None = None
        self._last_geometry: tuple[float, float, float, float] | None = None
        self._last_search_ns: int | None = None
        self._last_ns: int | None = None
        self._size: tuple[int, int] | None = None
        self._faces = 0

    def frame(self, picture: Picture | np.ndarray, t_ns: int) -> Framed:
        """One frame (a Picture, or a uint8 (H, W, 3) RGB array) at `t_ns` -> the model's input and face record."""
        if isinstance(picture, np.ndarray):
            picture = ArrayPicture(picture)
        width, height = picture.size
        if self.framing == "frame" or self.resize is None:
            return Framed(picture.rgb(*scaled_size(width, height, self.resize)), None)
        rgb = picture.rgb(width, height)
        if (self._last_ns is not None and t_ns < self._last_ns) or self._size not in (None, (width, height)):
            self.reset()  # time went back (another stream) or the frame size changed: boxes of before mean nothing
        self._last_ns, self._size = t_ns, (width, height)
        found = self._track(rgb, t_ns)
        if self._last_geometry is None:  # no face yet: the frame's centre square, the short side across
            cx, cy, view, angle = width / 2, height / 2, min(width, height) * self.crop / self.resize, 0.0
        else:
            cx, cy, face, angle = self._last_geometry
            view = face * (1 + 2 * self.margin)
        cx, cy, view = (round(v / QUANTUM_PX) * QUANTUM_PX for v in (cx, cy, view))
        angle = round(angle / QUANTUM_DEG) * QUANTUM_DEG
        crop = aligned_crop(rgb, (cx, cy), view * self.resize / self.crop, angle, self.resize)
        box = (cx - view / 2, cy - view / 2, cx + view / 2, cy + view / 2) if found else None
        return Framed(crop, FaceRecord(found=found, box=box, faces=self._faces))

    def _track(self, rgb: np.ndarray, t_ns: int) -> bool:
        """Search or follow in this frame; update the subject; whether it is found (seen or held)."""
        measured: tuple[np.ndarray, np.ndarray] | None = None
        period = LOOK_EVERY_NS if self._subject is None else SEARCH_EVERY_NS
        if self._last_search_ns is None or t_ns >= (self._last_search_ns // period + 1) * period:
            self._last_search_ns = t_ns
            faces = self.detector.detect(rgb)[0]  # faces from sec2sec.faces.MIN_FACE (40 px)
            self._faces = len(faces)
            measured = self._pick(faces, rgb.shape[1], rgb.shape[0])
        if measured is None and self._subject is not None:
            measured = self._follow(rgb, self._subject.box)
        subject = self._subject
        if measured is not None:
            self._update(measured[0], measured[1], t_ns)
            return True
        if subject is not None and t_ns - subject.seen_ns <= HOLD_NS:
            return True
        self._subject = None
        return False

    def _pick(self, faces: Faces, width: int, height: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The subject among a search's faces: the best overlap with its last box, or (none followed) the
        largest or the most central face; None when none qualifies."""
        if not len(faces):
            return None
        if self._subject is not None:
            overlap = _iou(faces.boxes, self._subject.box)
            best = int(overlap.argmax())
            return (faces.boxes[best], faces.landmarks[best]) if overlap[best] >= MATCH_IOU else None
        if self.subject == "largest":
            best = int((faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(axis=1).argmax())
        else:
            centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
            best = int(np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2).argmin())
        return faces.boxes[best], faces.landmarks[best]

    def _follow(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The subject in a new frame: O-Net on its last box, else the cascade around it; None when not there."""
        rescored = self.detector.rescore(rgb, box[None])
        if len(rescored) and rescored.scores[0] >= FOLLOW_SCORE and _iou(rescored.boxes, box)[0] >= MATCH_IOU:
            return rescored.boxes[0], rescored.landmarks[0]
        side = float(max(box[2] - box[0], box[3] - box[1]))
        region_side = FOLLOW_REACH * side
        scale = min(1.0, FOLLOW_FACE_PX / side)
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        out = max(24, round(region_side * scale))
        region = aligned_crop(rgb, centre, region_side, 0.0, out)
        faces = self.detector.detect(
            region, min_face=0.6 * side * out / region_side, max_face=1.6 * side * out / region_side
        )[0]
        if not len(faces):
            return None
        to_source = region_side / out
        origin = np.array([centre[0] - region_side / 2, centre[1] - region_side / 2])
        boxes = faces.boxes * to_source + np.tile(origin, 2)
        marks = faces.landmarks * to_source + origin
        overlap = _iou(boxes, box)
        best = int(overlap.argmax())
        return (boxes[best], marks[best]) if overlap[best] > 0 else None

    def _update(self, box: np.ndarray, landmarks: np.ndarray, t_ns: int) -> None:
        """Take a measurement of the subject: smooth it into the crop geometry."""
        cx, cy, side, angle = _measure(box, landmarks)
        subject = self._subject
        if subject is None:
            filters = (_OneEuro(1.0, 2.0), _OneEuro(1.0, 2.0), _OneEuro(1.0, 2.0), _OneEuro(1.0, 0.05))
            subject = self._subject = _Subject(box=box.astype(np.float32), seen_ns=t_ns, filters=filters)
        dt = (t_ns - subject.seen_ns) / NANOS_PER_SECOND
        size = subject.geometry[2] or side
        fx, fy, fs, fa = subject.filters
        subject.geometry = (fx(cx, dt, size), fy(cy, dt, size), fs(side, dt, size), fa(angle, dt))
        subject.box, subject.seen_ns = box.astype(np.float32), t_ns
        self._last_geometry = subject.geometry


def framer_for(
    video: VideoConfig, *, framing: str | None = None, subject: str = "largest", detector: FaceDetector | None = None
) -> Framer:
    """The Framer of a model's video config (`framing` overrides the config's; see `choose_framing`)."""
    return Framer(
        framing or video.framing,
        resize=video.resize,
        crop=video.crop,
        margin=video.face_margin,
        subject=subject,
        detector=detector,
    )
