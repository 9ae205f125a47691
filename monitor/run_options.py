"""What a run is asked to do: its options (the CLI's `argparse.Namespace` or the API's `Options`, with the
same field names) and the checks that refuse contradictory ones."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sec2sec.precision import precision_name

if TYPE_CHECKING:
    from sec2sec.model import Sec2Sec

PATH_FIELDS = ("replay", "checkpoint", "config", "csv", "jsonl")  # recorded in the sidecar as text


@dataclass(frozen=True)
class LoadedModel:
    """A model from `load_model()`: the network, whether it was trained, and what the sidecar records of it
    (checkpoint path and sha256, or none for an untrained model built from a config)."""

    model: Sec2Sec
    trained: bool
    info: dict[str, Any]

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the model's outputs, in order (e.g. ("valence", "arousal"))."""
        return tuple(self.model.config.heads.outputs)


@dataclass(frozen=True)
class Options:
    """One run, with the CLI's option names (`--no-mic` is `no_mic`); defaults as the CLI's."""

    camera: int | str | None = None
    mic: str | None = None
    no_mic: bool = False
    no_camera: bool = False
    replay: str | Path | None = None
    clock: str = "realtime"
    speed: float = 1.0
    checkpoint: str | Path | None = None
    config: str | Path | None = None
    device: str = "auto"
    horizon: int | None = None
    precision: str = "auto"  # the encoders' arithmetic: auto, float32 or bfloat16 (sec2sec.precision)
    threads: int = 0
    csv: str | Path | None = None
    jsonl: str | Path | None = None
    no_ui: bool = False
    duration: float | None = None
    lsl: str | None = None
    zmq: str | None = None
    model: LoadedModel | None = None  # API only: a model from load_model(), reused instead of loading again


RunArgs = Options | argparse.Namespace  # the CLI passes its parsed arguments, which carry the same names


def check_args(args: RunArgs) -> None:
    """Refuse contradictory or out-of-range options with a one-line reason."""
    if args.replay is not None:
        if args.camera is not None or args.mic is not None or args.no_camera:
            raise ValueError("--replay takes video and audio from the file; drop --camera, --mic and --no-camera")
    elif args.camera is None and args.mic is None and not args.no_camera:
        raise ValueError("give an input: --camera N (live), --mic N or --no-camera (microphone only), --replay FILE")
    if args.camera is not None and args.no_camera:
        raise ValueError("--camera and --no-camera contradict each other; give one")
    if args.no_camera and args.no_mic:
        raise ValueError("--no-camera and --no-mic leave nothing to record; drop one")
    if args.no_mic and args.mic is not None:
        raise ValueError("--no-mic and --mic contradict each other; give one")
    if args.camera is not None and not str(args.camera).isdigit() and Path(str(args.camera)).is_file():
        raise ValueError(f"--camera {args.camera} is a file; replay files with --replay {args.camera}")
    if args.speed <= 0:
        raise ValueError(f"--speed {args.speed} must be > 0 (1.0 is real time)")
    if args.duration is not None and args.duration <= 0:
        raise ValueError(f"--duration {args.duration} must be > 0 seconds")
    if args.horizon is not None and args.horizon < 0:
        raise ValueError(f"--horizon {args.horizon} must be 0 (carry state forever) or a number of seconds")
    if args.threads < 0:
        raise ValueError(f"--threads {args.threads} must be >= 0 (0: one per core)")
    precision_name(args.precision)
