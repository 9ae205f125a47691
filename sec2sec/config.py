"""Frozen configuration dataclasses; each TOML section of a config file maps 1:1 onto one of them.

Every default the paper leaves open is chosen here, with the reason beside it. The package ships named config
files (`configs/<name>.toml`, e.g. `first_impressions`); every command's `--config` takes such a name or
the path of a TOML file, and without `--config` uses the built-in defaults (equal to the shipped `default`).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

NANOS_PER_SECOND = 1_000_000_000
# The shipped <name>.toml files: package data in an installed wheel; in a source tree sec2sec/configs is a link
# to the repository's configs/ folder (which the layout keeps at the top), so both name the same files.
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"

TASKS = ("binary", "regression")
TEMPORAL_KINDS = ("lstm", "attention_lstm", "gru_transformer", "none")
FUSION_MODES = ("co", "self", "concat")  # SA-CA (the model), SA-SA, or late fusion of pooled tokens
MODALITIES = ("both", "video", "audio")
VIDEO_ENCODERS = ("r2plus1d_18", "resnet18_2d")
WEIGHT_CHOICES = ("auto", "pretrained", "none")
DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("bce", "mse", "l1")
SUPERVISION = ("second", "clip")
FRAMINGS = ("frame", "face")  # what the video encoder sees: the whole frame's centre, or the subject's face


def _check_choice(section: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"[{section}] {key} = {value!r} is not allowed; use one of {', '.join(allowed)}")


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def video_map_shape(frames: int, crop: int, encoder: str) -> tuple[int, int, int]:
    """(T', H', W') of the video encoder's layer4 map for m = `frames` frames of crop x crop pixels.

    R(2+1)D-18 halves time in layers 2-4 and space in the stem and layers 2-4 (each a stride-2 convolution
    padded to ceil); the per-frame ResNet-18 keeps every frame and halves space five times. Checked against
    the real encoders in tests/test_model.py.
    """
    if encoder == "r2plus1d_18":
        return _ceil_div(frames, 8), _ceil_div(crop, 16), _ceil_div(crop, 16)
    return frames, _ceil_div(crop, 32), _ceil_div(crop, 32)


def audio_map_shape(image_size: tuple[int, int]) -> tuple[int, int]:
    """(F', T') of the audio ResNet-18's layer4 map for an MFCC image resized to `image_size` (32x smaller)."""
    return _ceil_div(image_size[0], 32), _ceil_div(image_size[1], 32)


def _check_grid(section: str, grid: tuple[int, ...], cells: tuple[int, ...], made_by: str) -> None:
    """A token grid finer than the layer4 map on any axis would pool some cells twice (duplicate tokens)."""
    if any(g > c for g, c in zip(grid, cells, strict=True)):
        shape = ", ".join(str(c) for c in (512, *cells))
        allowed = " x ".join(f"1..{c}" for c in cells)
        raise ValueError(
            f"[{section}] token_grid = {list(grid)} is finer than the encoder's layer4 map: {made_by} gives a "
            f"({shape}) map, so a grid of {allowed} cells is allowed (a finer grid only duplicates tokens)"
        )


def _check_range(section: str, key: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"[{section}] {key} = {value!r} is out of range; it must be >= {low}{upper}")


@dataclass(frozen=True)
class AudioConfig:
    """Audio front end: one window of mono audio -> (3, n_mfcc, frames) MFCC/delta/delta-delta image.

    16 kHz keeps all speech energy and makes a 10 ms hop an integer (160 samples); 64 MFCCs over 128 mel
    bands with a 25 ms window give a (3, 64, 101) image per second. The image is resized to `image_size`
    before the ResNet so its layer4 map has enough cells to attend over (112 x 224 -> 4 x 7 cells).
    """

    sample_rate: int = 16_000
    n_mfcc: int = 64
    n_mels: int = 128
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    delta_win: int = 9
    image_size: tuple[int, int] = (112, 224)
    token_grid: tuple[int, int] = (
        4,
        4,
    )  # (frequency, time) cells after adaptive pooling of layer4
    weights: str = "auto"  # auto: ImageNet if cached, else random with a warning; or "pretrained", "none"
    weights_path: str = ""  # an explicit local weight file; overrides `weights`

    def __post_init__(self) -> None:
        _check_range("model.audio", "sample_rate", self.sample_rate, 4000, 192_000)
        _check_range("model.audio", "n_mels", self.n_mels, 8)
        _check_range("model.audio", "n_mfcc", self.n_mfcc, 4, self.n_mels)
        _check_range("model.audio", "win_length", self.win_length, 16, self.n_fft)
        _check_range("model.audio", "hop_length", self.hop_length, 1, self.win_length)
        _check_range("model.audio", "delta_win", self.delta_win, 3)
        if self.delta_win % 2 == 0:
            raise ValueError(f"[model.audio] delta_win = {self.delta_win} must be odd (3, 5, 7, 9, ...)")
        _check_pair("model.audio", "image_size", self.image_size, 32)
        _check_pair("model.audio", "token_grid", self.token_grid, 1)
        _check_grid(
            "model.audio",
            self.token_grid,
            audio_map_shape(self.image_size),
            f"resnet18 on an MFCC image of {self.image_size[0]}x{self.image_size[1]}",
        )
        _check_choice("model.audio", "weights", self.weights, WEIGHT_CHOICES)

    @property
    def map_shape(self) -> tuple[int, int]:
        """(F', T') of the encoder's layer4 map for this image size."""
        return audio_map_shape(self.image_size)

    @property
    def frames_per_window(self) -> int:
        """MFCC frames in one second (centered STFT): sample_rate // hop_length + 1."""
        return self.sample_rate // self.hop_length + 1


@dataclass(frozen=True)
class VideoConfig:
    """Video front end and encoder.

    The paper samples m frames per second without fixing m; 8 is our default because the R(2+1)D-18 cost
    is linear in m and 8 frames (~280 ms on 2 cores) keeps the monitor real-time where 16 (~600 ms) does
    not leave room for capture and UI. Frames are resized (short side 128) and center-cropped to 112,
    as in torchvision's Kinetics recipe.

    `framing` (see sec2sec/framing.py) says what those frames show. "frame" (default): the whole frame, short
    side scaled to `resize`, the centre `crop` kept: the paper's input on LIRIS-ACCEDE (film excerpts) and First
    Impressions. "face": a `resize` x `resize` square around the subject's face, turned so the eyes are level,
    whose centre `crop` x `crop` (what the encoder sees) holds the face plus `face_margin` of its size on each
    side; the ABAW5 model's input, and what a live affect tool of one person needs. A window in which the
    subject's face was found in fewer than `face_min_found` of its m frames has no video (a missing modality, as
    a camera that stalled), so the model never reads a second of background as a face.
    """

    frames_per_window: int = 8
    resize: int = 128
    crop: int = 112
    encoder: str = "r2plus1d_18"
    # (time, height, width) cells after pooling layer4; at m = 8 R(2+1)D-18's map is (512, 1, 7, 7): one time
    # slice, so a grid with 2 time cells would duplicate every token. 3 x 3 spatial cells keep 9 real tokens.
    token_grid: tuple[int, int, int] = (1, 3, 3)
    weights: str = "auto"
    weights_path: str = ""
    framing: str = "frame"
    # 0.25: the encoder's crop x crop view is 1.5 face sizes wide, so the face fills two thirds of it (brows,
    # eyes, nose and mouth fall in the same cells of a 3 x 3 token grid in every frame) and a face that moves
    # before the follower catches up (a tenth of its size in a fast head turn) stays inside the view.
    face_margin: float = 0.25
    # 0.5: a window has video only when most of the frames the encoder sees hold the subject's face; the follower
    # holds the face through short misses (a blink, motion blur), so a second with the face in view reaches 1.0.
    face_min_found: float = 0.5

    def __post_init__(self) -> None:
        _check_range("model.video", "frames_per_window", self.frames_per_window, 1, 64)
        _check_range("model.video", "crop", self.crop, 32)
        _check_range("model.video", "resize", self.resize, self.crop)
        _check_choice("model.video", "encoder", self.encoder, VIDEO_ENCODERS)
        _check_choice("model.video", "framing", self.framing, FRAMINGS)
        _check_range("model.video", "face_margin", self.face_margin, 0.0, 1.0)
        _check_range("model.video", "face_min_found", self.face_min_found, 0.0, 1.0)
        if len(self.token_grid) != 3 or min(self.token_grid) < 1:
            raise ValueError(f"[model.video] token_grid = {self.token_grid!r} must be three integers >= 1")
        _check_choice("model.video", "weights", self.weights, WEIGHT_CHOICES)
        _check_grid(
            "model.video",
            self.token_grid,
            self.map_shape,
            f"{self.encoder} on {self.frames_per_window} frames of {self.crop}x{self.crop}",
        )

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """(T', H', W') of the encoder's layer4 map for this m and crop."""
        return video_map_shape(self.frames_per_window, self.crop, self.encoder)


@dataclass(frozen=True)
class FusionConfig:
    """Co-attention block over encoder tokens (SA-CA), self-attention only (SA-SA), or the late-fusion
    baseline "concat": each modality's projected tokens mean-pooled, concatenated, then an MLP (no attention;
    `heads` and `depth` unused)."""

    mode: str = "co"
    modalities: str = "both"
    width: int = 256
    heads: int = 4
    depth: int = 1
    ff_width: int = 512
    dropout: float = 0.1
    feature_width: int = 256  # width of the fused per-second feature F_i

    def __post_init__(self) -> None:
        _check_choice("model.fusion", "mode", self.mode, FUSION_MODES)
        _check_choice("model.fusion", "modalities", self.modalities, MODALITIES)
        _check_range("model.fusion", "width", self.width, 8)
        _check_range("model.fusion", "heads", self.heads, 1)
        if self.width % self.heads:
            raise ValueError(f"[model.fusion] width = {self.width} must be divisible by heads = {self.heads}")
        _check_range("model.fusion", "depth", self.depth, 1, 12)
        _check_range("model.fusion", "ff_width", self.ff_width, 8)
        _check_range("model.fusion", "dropout", self.dropout, 0.0, 0.9)
        _check_range("model.fusion", "feature_width", self.feature_width, 8)


@dataclass(frozen=True)
class TemporalConfig:
    """Temporal model over the fused per-second features F_1..F_n."""

    kind: str = "lstm"
    hidden: int = 128
    layers: int = 1
    attention_width: int = 64  # additive attention (attention_lstm)
    transformer_layers: int = 2  # gru_transformer
    transformer_heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check_choice("model.temporal", "kind", self.kind, TEMPORAL_KINDS)
        _check_range("model.temporal", "hidden", self.hidden, 4)
        _check_range("model.temporal", "layers", self.layers, 1, 8)
        _check_range("model.temporal", "attention_width", self.attention_width, 4)
        _check_range("model.temporal", "transformer_layers", self.transformer_layers, 1, 12)
        _check_range("model.temporal", "transformer_heads", self.transformer_heads, 1)
        if self.hidden % self.transformer_heads:
            raise ValueError(
                f"[model.temporal] hidden = {self.hidden} must be divisible by "
                f"transformer_heads = {self.transformer_heads}"
            )
        _check_range("model.temporal", "dropout", self.dropout, 0.0, 0.9)


@dataclass(frozen=True)
class HeadsConfig:
    """Named sigmoid outputs: binary classes (LIRIS-ACCEDE) or [0, 1] regression (First Impressions)."""

    task: str = "binary"
    outputs: tuple[str, ...] = ("valence", "arousal")

    def __post_init__(self) -> None:
        _check_choice("model.heads", "task", self.task, TASKS)
        if not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise ValueError(
                f"[model.heads] outputs = {list(self.outputs)!r} must be a non-empty list of distinct names"
            )
        for name in self.outputs:
            if not name.isidentifier():
                raise ValueError(f"[model.heads] output name {name!r} must be a plain identifier (letters, digits, _)")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored inside every checkpoint.

    `clip_seconds` is the training clip length: the streaming horizon H defaults to it (LIRIS-ACCEDE clips
    are 8-12 s, First Impressions 15 s).
    """

    audio: AudioConfig = field(default_factory=AudioConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    clip_seconds: int = 10

    def __post_init__(self) -> None:
        _check_range("model", "clip_seconds", self.clip_seconds, 1, 600)

    @property
    def uses_video(self) -> bool:
        return self.fusion.modalities in ("both", "video")

    @property
    def uses_audio(self) -> bool:
        return self.fusion.modalities in ("both", "audio")


@dataclass(frozen=True)
class TrainConfig:
    """Training on cached encoder features (see `sec2sec train`)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-2
    patience: int = 5
    grad_clip: float = 1.0
    seed: int = 0
    loss: str = "bce"  # bce for binary outputs; mse or l1 for traits
    label_threshold: str = "median"  # LIRIS binary labels: "median" of the learning set, or a number
    # probability that a training window (both streams present) loses its video, its audio or both (split
    # 0.4 / 0.4 / 0.2), as --no-mic, a stalled camera or a dropped second do live; only two-modality models
    modality_dropout: float = 0.3
    # clips with per-second labels (a trace): "second" supervises every second's output (what the monitor
    # shows each second), "clip" only the clip's output against the trace's mean (clips without a trace: both)
    supervision: str = "second"

    def __post_init__(self) -> None:
        _check_range("train", "epochs", self.epochs, 1)
        _check_range("train", "batch_size", self.batch_size, 1)
        _check_range("train", "lr", self.lr, 1e-9, 1.0)
        _check_range("train", "weight_decay", self.weight_decay, 0.0)
        _check_range("train", "patience", self.patience, 1)
        _check_range("train", "grad_clip", self.grad_clip, 0.0)
        _check_choice("train", "loss", self.loss, LOSSES)
        _check_range("train", "modality_dropout", self.modality_dropout, 0.0, 0.9)
        _check_choice("train", "supervision", self.supervision, SUPERVISION)
        if self.label_threshold != "median":
            try:
                float(self.label_threshold)
            except ValueError:
                raise ValueError(
                    f'[train] label_threshold = {self.label_threshold!r}; use "median" or a number such as "3.0"'
                ) from None


@dataclass(frozen=True)
class Config:
    """A whole TOML file: the model (stored in checkpoints) and how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_pair(section: str, key: str, value: tuple[int, ...], low: int) -> None:
    if len(value) != 2 or min(value) < low:
        raise ValueError(f"[{section}] {key} = {value!r} must be two integers >= {low}")


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Convert a TOML value to the dataclass field's type, or raise a ValueError naming the key."""
    origin = typing.get_origin(annotation)
    expected = origin or annotation
    if expected is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"[{section}] {key} must be a list, got {value!r}")
        inner = typing.get_args(annotation)[0]
        return tuple(_coerce(section, key, v, inner) for v in value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if expected in (int, float, str, bool) and (type(value) is not expected):
        raise ValueError(f"[{section}] {key} must be {expected.__name__}, got {value!r}")
    return value


D = TypeVar("D", bound="DataclassInstance")


def from_dict(cls: type[D], data: dict[str, Any], section: str) -> D:
    """Build dataclass `cls` from a (nested) dict, refusing unknown keys with the allowed ones listed."""
    if not isinstance(data, dict):
        raise ValueError(f"[{section}] must be a table, got {data!r}")
    where = f"[{section}]" if section else "top level:"
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where} unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{section}.{key}" if section else key)
        else:
            kwargs[key] = _coerce(section, key, value, hint)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain dict (lists for tuples) that `from_dict` turns back into an equal object."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def parse_config(data: dict[str, Any]) -> Config:
    """A TOML document (dict) -> Config. Top-level tables: [model] with sub-tables, and [train]."""
    return from_dict(Config, data, "")


def shipped_config_names() -> list[str]:
    """Names of the config files shipped with the package (`--config NAME` works anywhere)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.toml"))


def config_help(what: str = "") -> str:
    """The `--config` help line every command shares (the shipped names are read when the parser is built)."""
    return (
        f"a shipped config ({', '.join(shipped_config_names())}) or a TOML file{what}; "
        "default: the built-in defaults (the shipped 'default')"
    )


def config_path(spec: str | Path) -> Path:
    """A config given by path (an existing file) or by shipped name (`first_impressions`) -> its file.

    A file wins over a shipped name; a bare name (no folder, no `.toml`) that is not a file is looked up among
    the shipped configs, and an unknown one is refused in one line listing the shipped names."""
    path = Path(spec)
    if path.is_file():
        return path
    text = str(spec)
    if text and path.name == text and path.suffix != ".toml" and (SHIPPED_CONFIGS / f"{text}.toml").is_file():
        return SHIPPED_CONFIGS / f"{text}.toml"
    names = ", ".join(shipped_config_names())
    if path.name != text or path.suffix == ".toml":
        raise ValueError(f"config file {text} does not exist; pass --config a TOML file or a shipped name ({names})")
    raise ValueError(f"no shipped config is named {text!r}; use one of {names}, or pass the path of a TOML file")


def load_config(spec: str | Path | None = None) -> Config:
    """Read and validate a config given by path or shipped name (`config_path`); None: the built-in defaults.
    Errors name the file and the offending key."""
    if spec is None:
        return Config()
    path = config_path(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
