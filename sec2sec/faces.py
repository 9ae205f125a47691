"""RGB images -> faces (boxes, scores, five landmarks): MTCNN, with weights that ship inside the package.

The cascade of Zhang et al. ("Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", 2016), written here; its three networks load the state dicts of the facenet-pytorch 2.6.0 wheel
(MIT), shipped in `sec2sec/face_weights/` with their licence and checked against their full sha256 before
`torch.load(..., weights_only=True)` (see that folder's README). facenet-pytorch itself is not a dependency.

1. P-Net, a fully convolutional net with a 12 x 12 window and stride 2, slides over an image pyramid. Level 0 is
   the image at 12 / `min_face` of its size, so that a face of `min_face` pixels fills the window; each next level
   is 0.709 (1/sqrt 2) times smaller and finds faces 1.41 times larger, down to a level whose short side is 12
   pixels (or whose faces would exceed `max_face`). Level 0 is the scaled-down copy the search runs on (0.3 of a
   640 x 480 frame at `min_face` = 40); each level is made from the one before on uint8 pixels (`shrink`).
   Windows scoring over 0.8 become candidates, thinned by NMS within a level (IoU 0.5) and over all levels
   (0.7), moved by their box regression and made square.
2. R-Net rescores each candidate on a 24 x 24 crop: threshold 0.7, NMS 0.7, regression, square.
3. O-Net on 48 x 48 crops: score (threshold 0.7), box regression and five landmarks; then NMS at IoU 0.7 and a
   last pass that drops a box lying mostly (0.7 of the smaller box) inside a better one ("Min" overlap), so a
   face part is never a second face.
Crops are cut from the full-resolution image and scaled by `shrink` (an area filter by a whole factor, then
bilinear); a candidate past the image's edge is padded with mid-grey (0 after normalisation), not squeezed.
NMS is `torchvision.ops.nms`, image by image (`_nms`). Every stage runs batched over all images of a call and
all their candidates, on the detector's device, under `torch.inference_mode`, and leaves torch's thread
settings alone; its results do not depend on them either (the face probability is an elementwise sigmoid,
not a softmax, and a frame's faces do not depend on its place in a batch).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_area, nms

DETECTOR_NAME = "mtcnn"
WEIGHTS_DIR = Path(__file__).resolve().parent / "face_weights"
# Full sha256 of facenet-pytorch 2.6.0's facenet_pytorch/data/{pnet,rnet,onet}.pt (see face_weights/README.md).
WEIGHTS_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
CELL = 12  # P-Net's window, pixels of a pyramid level
STRIDE = 2  # P-Net's step between windows
PYRAMID_FACTOR = 0.709  # 1/sqrt(2): each level halves the pixels, and face sizes overlap between levels
MIN_FACE = 40  # pixels of the source frame: the smallest face a full-frame search looks for (issue 28)
# P-, R-, O-Net face scores a candidate must reach. The paper's P-Net threshold is 0.6; 0.8 halves the candidates
# R-Net rescores on a busy background (its cost) and found every face that 0.6 found in our checks (40-80 px faces,
# sharp, blurred, dark and noisy); R- and O-Net keep the paper's 0.7.
THRESHOLDS = (0.8, 0.7, 0.7)
NMS_LEVEL, NMS_STAGE, NMS_NESTED = 0.5, 0.7, 0.7
NORM_MEAN, NORM_SCALE = 127.5, 1 / 128  # the networks' input: (uint8 value - 127.5) / 128


class FaceWeightsError(ValueError):
    """A shipped weight file that is missing or is not the file the package was released with."""


def weight_bytes(folder: Path = WEIGHTS_DIR) -> dict[str, bytes]:
    """{"pnet": bytes, "rnet": ..., "onet": ...}, each checked against its full sha256 (one-line error if not)."""
    out = {}
    for name, expected in WEIGHTS_SHA256.items():
        path = folder / f"{name}.pt"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FaceWeightsError(
                f"face detector weights {path} cannot be read ({exc.strerror}); reinstall sec2sec-live"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise FaceWeightsError(
                f"face detector weights {path} have sha256 {digest}, not the shipped {name} weights "
                f"({expected}); the file is damaged or replaced: reinstall sec2sec-live"
            )
        out[name] = data
    return out


def detector_identity() -> dict[str, str]:
    """What a feature cache or a session records about the detector: its name and one sha256 over the three
    weight files (the sha256 of the lines `<name> <file sha256>` for pnet, rnet, onet, in that order)."""
    lines = "".join(f"{name} {digest}\n" for name, digest in WEIGHTS_SHA256.items())
    return {"name": DETECTOR_NAME, "weights_sha256": hashlib.sha256(lines.encode()).hexdigest()}


def _face_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax's "face" probability of (N, 2, ...) logits, as sigmoid(face - background): the same value, but an
    elementwise op, so it does not depend on how many threads torch uses (a softmax's reduction may)."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, image: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by torchvision's NMS, run image by image. (`batched_nms` shifts each image's boxes by a
    large offset, which rounds their coordinates differently from image to image, so a frame's faces would
    depend on its place in a batch.)"""
    keep = [(image == b).nonzero().flatten() for b in image.unique().tolist()]
    kept = [rows[nms(boxes[rows], scores[rows], threshold)] for rows in keep]
    return torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)


class PNet(nn.Module):
    """(B, 3, H, W) normalised -> box regression (B, 4, h, w) and face probability (B, h, w), one cell per 12 x 12
    window at stride 2 (h = ceil((H - 2) / 2) - 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, kernel_size=3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, kernel_size=3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, kernel_size=3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), _face_probability(self.conv4_1(x))


class RNet(nn.Module):
    """(K, 3, 24, 24) normalised crops -> box regression (K, 4) and face probability (K,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, kernel_size=3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, kernel_size=3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, kernel_size=2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the weights were converted from a (W, H, C)-ordered flatten: keep that order
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), _face_probability(self.dense5_1(x))


class ONet(nn.Module):
    """(K, 3, 48, 48) normalised crops -> box regression (K, 4), landmarks (K, 10: five x then five y, as
    fractions of the box) and face probability (K,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, kernel_size=3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, kernel_size=3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, kernel_size=3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, kernel_size=2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), _face_probability(self.dense6_1(x))


@dataclass(frozen=True)
class Faces:
    """The faces found in one image, best score first: `boxes` float32 (n, 4) as (x0, y0, x1, y1) in the image's
    pixel coordinates (pixel i spans [i, i + 1)); `scores` float32 (n,); `landmarks` float32 (n, 5, 2) as (x, y)
    of the eye, eye, nose tip, mouth corner, mouth corner, the first of each pair on the image's left."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def pyramid_scales(short_side: int, min_face: float, max_face: float | None = None) -> list[float]:
    """The pyramid's scales for an image whose short side is `short_side`: 12 / min_face, then x 0.709 while the
    level's short side is at least 12 pixels and its faces (12 / scale) are at most `max_face`."""
    if min_face <= 0 or (max_face is not None and max_face < min_face):
        raise ValueError(f"min_face = {min_face}, max_face = {max_face}; need 0 < min_face <= max_face")
    scales, scale = [], CELL / min_face
    while short_side * scale >= CELL and (max_face is None or CELL / scale <= max_face * 1.0001):
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales


def _as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    batch = np.asarray(images) if isinstance(images, np.ndarray) else np.stack(list(images))
    if batch.ndim == 3:
        batch = batch[None]
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (H, W, 3) RGB of one size; got {batch.dtype} {batch.shape}")
    return batch


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """(K, 4) boxes -> squares of side max(w, h) around the same centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Move each edge of (K, 4) boxes by `offsets` (K, 4) times the box's width (x) or height (y)."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _landmarks(boxes: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """O-Net's (K, 10) landmark output (five x, then five y, as fractions of the box) -> (K, 5, 2) pixels."""
    size = boxes[:, 2:] - boxes[:, :2]
    xs = boxes[:, None, 0] + marks[:, :5] * size[:, None, 0]
    ys = boxes[:, None, 1] + marks[:, 5:] * size[:, None, 1]
    return torch.stack([xs, ys], dim=2)


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled down to `width` x `height` as an area filter would, quickly: first by the largest whole
    factor k that keeps it at least that size (OpenCV's area filter over k x k blocks: its fast path; the last
    k - 1 rows and columns at most are left out), then bilinear for the rest (a factor between 1 and 2)."""
    import cv2

    k = min(image.shape[1] // width, image.shape[0] // height)
    if k >= 2:
        h, w = image.shape[0] // k, image.shape[1] // k
        image = cv2.resize(image[: h * k, : w * k], (w, h), interpolation=cv2.INTER_AREA)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _crop(image: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """The square `box` (x0, y0, x1, y1 in image pixels, rounded to whole pixels) as uint8 (size, size, 3), scaled
    by `shrink`; past the image's edge is mid-grey."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    part = image[max(0, y0) : max(0, min(height, y1)), max(0, x0) : max(0, min(width, x1))]
    if part.shape[:2] != (y1 - y0, x1 - x0):
        padded = np.full((y1 - y0, x1 - x0, 3), 128, dtype=np.uint8)
        if part.size:
            top, left = max(0, -y0), max(0, -x0)
            padded[top : top + part.shape[0], left : left + part.shape[1]] = part
        part = padded
    return shrink(part, size, size)


def _drop_nested(boxes: torch.Tensor, scores: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Indices of the boxes kept when a box that lies for more than NMS_NESTED of its area inside a better box
    of the same image is dropped (greedy, best first; few boxes reach this stage)."""
    order = scores.argsort(descending=True)
    b, img = boxes[order], image[order]
    low = torch.maximum(b[:, None, :2], b[None, :, :2])
    high = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=2)
    area = box_area(b)
    nested = (inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6) > NMS_NESTED) & (
        img[:, None] == img[None, :]
    )
    keep: list[int] = []
    for i in range(len(order)):
        if not any(bool(nested[i, k]) for k in keep):
            keep.append(i)
    return order[keep]


class FaceDetector:
    """MTCNN over uint8 RGB images: `detect(images) -> [Faces per image]` (see the module docstring).

    `device`: where the networks run ("cpu", "cuda", a torch.device); the images stay numpy arrays on the CPU
    and are converted where needed. The weights are checked (sha256) and loaded once, here.
    """

    name = DETECTOR_NAME

    def __init__(
        self, device: str | torch.device = "cpu", folder: Path = WEIGHTS_DIR, thresholds: tuple[float, ...] = THRESHOLDS
    ) -> None:
        if len(thresholds) != 3 or not all(0.0 < t < 1.0 for t in thresholds):
            raise ValueError(f"thresholds = {thresholds}; give three face scores between 0 and 1 (P-, R-, O-Net)")
        self.device = torch.device(device)
        self.thresholds = thresholds
        data = weight_bytes(folder)
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            net.load_state_dict(torch.load(io.BytesIO(data[name]), map_location="cpu", weights_only=True))
            net.to(self.device).to(memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def detect(
        self, images: np.ndarray | Sequence[np.ndarray], *, min_face: float = MIN_FACE, max_face: float | None = None
    ) -> list[Faces]:
        """Faces in each of `images` (uint8 (H, W, 3) RGB, one size, or a (B, H, W, 3) array) whose size is between
        `min_face` and about `max_face` pixels (None: up to the image's short side)."""
        batch = _as_batch(images)
        scales = pyramid_scales(min(batch.shape[1:3]), min_face, max_face)
        boxes, image = self._propose(batch, scales)
        if len(boxes):
            boxes, image = self._refine(batch, boxes, image)
        found = self._output(batch, boxes, image) if len(boxes) else None
        if found is None:
            empty = Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
            return [empty for _ in range(len(batch))]
        return found

    @torch.inference_mode()
    def rescore(self, image: np.ndarray, boxes: np.ndarray) -> Faces:
        """O-Net alone on given boxes (n, 4) of one image (e.g. a face's box from the previous frame, to follow it):
        each box squared, rescored, regressed, with its landmarks; in the order given, no threshold, no NMS."""
        batch = _as_batch(image)
        squares = _square(torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device).reshape(-1, 4))
        index = torch.zeros(len(squares), dtype=torch.long, device=self.device)
        reg, marks, prob = self.onet(self._crops(batch, squares, index, 48))
        points = _landmarks(squares, marks)
        return Faces(
            _regress(squares, reg).cpu().numpy().astype(np.float32),
            prob.cpu().numpy().astype(np.float32),
            points.cpu().numpy().astype(np.float32),
        )

    def _levels(self, batch: np.ndarray, scales: list[float]) -> list[tuple[torch.Tensor, float, float]]:
        """The pyramid: (level (B, 3, h, w) normalised, x scale, y scale) per scale; each level made from the one
        before (level 0 from the image) by `shrink` on uint8 pixels."""
        height, width = batch.shape[1:3]
        out, previous = [], list(batch)
        for s in scales:
            h, w = max(CELL, round(height * s)), max(CELL, round(width * s))
            previous = [shrink(img, w, h) for img in previous]
            level = torch.from_numpy(np.stack(previous)).to(self.device).permute(0, 3, 1, 2).float()
            out.append(((level - NORM_MEAN) * NORM_SCALE, w / width, h / height))
        return out

    def _propose(self, batch: np.ndarray, scales: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1 (P-Net over the pyramid): square candidate boxes (K, 4) in image pixels and their image index."""
        empty = torch.zeros(0, 4, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        if not scales:
            return empty
        boxes, scores, offsets, image = [], [], [], []
        for level, sx, sy in self._levels(batch, scales):
            reg, prob = self.pnet(level.contiguous(memory_format=torch.channels_last))
            hit = prob >= self.thresholds[0]
            where = hit.nonzero()  # (k, 3): image, row, column
            if not len(where):
                continue
            x0, y0 = (where[:, 2] * STRIDE).float(), (where[:, 1] * STRIDE).float()
            b = torch.stack([x0 / sx, y0 / sy, (x0 + CELL) / sx, (y0 + CELL) / sy], dim=1)
            s, r = prob[hit], reg.permute(0, 2, 3, 1)[hit]
            keep = _nms(b, s, where[:, 0], NMS_LEVEL)
            boxes.append(b[keep])
            scores.append(s[keep])
            offsets.append(r[keep])
            image.append(where[keep, 0])
        if not boxes:
            return empty
        b, s, r, i = (torch.cat(x) for x in (boxes, scores, offsets, image))
        keep = _nms(b, s, i, NMS_STAGE)
        return _square(_regress(b[keep], r[keep])), i[keep]

    def _crops(self, batch: np.ndarray, boxes: torch.Tensor, image: torch.Tensor, size: int) -> torch.Tensor:
        """(K, 3, size, size) normalised crops of `boxes` (rounded to whole pixels) from their images; what lies past
        an image's edge is mid-grey (0 after normalisation)."""
        rows = torch.cat([image[:, None].float(), boxes], dim=1).cpu().numpy()
        out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
        for k, row in enumerate(rows):
            out[k] = _crop(batch[int(row[0])], row[1:], size)
        crops = torch.from_numpy(out).to(self.device).permute(0, 3, 1, 2).float()
        return ((crops - NORM_MEAN) * NORM_SCALE).contiguous(memory_format=torch.channels_last)

    def _refine(self, batch: np.ndarray, boxes: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2 (R-Net): the candidates that pass, regressed and squared."""
        reg, prob = self.rnet(self._crops(batch, boxes, image, 24))
        ok = prob >= self.thresholds[1]
        boxes, image, reg, prob = boxes[ok], image[ok], reg[ok], prob[ok]
        keep = _nms(boxes, prob, image, NMS_STAGE)
        return _square(_regress(boxes[keep], reg[keep])), image[keep]

    def _output(self, batch: np.ndarray, boxes: torch.Tensor, image: torch.Tensor) -> list[Faces]:
        """Stage 3 (O-Net): final boxes, scores and landmarks, per image of the batch."""
        reg, marks, prob = self.onet(self._crops(batch, boxes, image, 48))
        ok = prob >= self.thresholds[2]
        boxes, image, reg, marks, prob = boxes[ok], image[ok], reg[ok], marks[ok], prob[ok]
        points = _landmarks(boxes, marks)
        boxes = _regress(boxes, reg)
        keep = _nms(boxes, prob, image, NMS_STAGE)
        keep = keep[_drop_nested(boxes[keep], prob[keep], image[keep])]
        boxes, image, points, prob = boxes[keep].cpu(), image[keep].cpu(), points[keep].cpu(), prob[keep].cpu()
        out = []
        for b in range(len(batch)):
            rows = (image == b).nonzero().flatten()
            rows = rows[prob[rows].argsort(descending=True)]
            out.append(
                Faces(
                    boxes[rows].numpy().astype(np.float32),
                    prob[rows].numpy().astype(np.float32),
                    points[rows].numpy().astype(np.float32),
                )
            )
        return out
