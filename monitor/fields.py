"""The fields of an estimate's record: one name for each fact, in every output.

The CSV (`--csv`), the JSON lines (`--jsonl`), the ZeroMQ feed (`--zmq`), the Python API (`record_of`,
`estimate_file`) and the LSL channel labels (`--lsl`) name each fact alike, and `Estimate`'s attributes carry
the same names (`estimate.window` is `record["window"]`). `FIELDS` is the one table of them, in the CSV's
column order. To add a field, add one `Field` here (name, unit, meaning, how to read it off an `Estimate`, how
the CSV writes it): every output then carries it, and the table in docs/outputs.md must list it too (a test
compares the two). A field named with `{output}` stands for one field per model output (`valence`, ...).

`record_of(estimate, outputs)` is the record: a flat dict, one key per field, the model's outputs as top-level
keys (`record["valence"]`), numbers as numbers (NaN and infinity as None: JSON has neither), flags as bools,
`attribution` as a list. A JSON line and a ZeroMQ message are this dict as JSON; a CSV row is this dict with
each value written by its field (`csv_cells`). Light: the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sec2sec.stream import Estimate

FORMAT = "sec2sec-session"  # the sidecar's "format"
# The sidecar's "format_version". 1 (no version in the sidecar): the JSON lines and ZeroMQ messages named
# facts their own way (index, frames_seen, outputs {...}, compute_ns, latency_ns) and the CSV had no gap or
# compute_ms. 2: one name for each fact, the table below (docs/outputs.md says what changed).
FORMAT_VERSION = 2
OUTPUT = "{output}"  # in a field's name: one field per model output, named after it
LSL_CHANNELS = (OUTPUT, "video_ok", "audio_ok", "gap", "window")  # the LSL stream's channels, in order
SIDECAR_KEYS = ("format", "format_version", "columns", "summary")  # what the recorder writes in the sidecar

# What a record holds: numbers, flags, the attribution's list, or None (not measured, or not finite).
Value = bool | int | float | list[float | None] | None


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    return value if math.isfinite(value) else None


def _ms(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else round(nanoseconds / 1e6, 3)


def integer(value: Value) -> str:
    """A count, an index or a flag as a CSV cell (a flag is 1 or 0)."""
    assert isinstance(value, (bool, int)), value
    return str(int(value))


def decimals(places: int) -> Callable[[Value], str]:
    """A number with `places` decimals as a CSV cell; an empty cell for None."""

    def cell(value: Value) -> str:
        assert value is None or isinstance(value, (int, float)), value
        return "" if value is None else f"{value:.{places}f}"

    return cell


def weights(value: Value) -> str:
    """The attribution as a CSV cell: weights with 4 decimals, `;`-separated, oldest second first."""
    assert isinstance(value, list), value
    return ";".join("nan" if weight is None else f"{weight:.4f}" for weight in value)


@dataclass(frozen=True)
class Field:
    """One fact of an estimate: its name in every output, its unit and meaning (docs/outputs.md's table), how
    to read it off an `Estimate` (`value(estimate, output)`, where `output` names the model output of a
    per-output field and is "" otherwise) and how the CSV writes it (`csv(value)`)."""

    name: str
    unit: str
    meaning: str
    value: Callable[[Estimate, str], Value]
    csv: Callable[[Value], str]

    @property
    def per_output(self) -> bool:
        return OUTPUT in self.name

    def names(self, outputs: Sequence[str]) -> tuple[str, ...]:
        """This field's keys for a model with these outputs (one per output for a per-output field)."""
        return tuple(self.name.replace(OUTPUT, output) for output in outputs) if self.per_output else (self.name,)


FIELDS = (
    Field(
        "window",
        "index",
        "the window's index: the second [window, window + 1) s of the run",
        lambda e, _: e.window,
        integer,
    ),
    Field(
        "start_s",
        "s",
        "where the window starts, on the run's clock (a replay: the file's time)",
        lambda e, _: e.start_s,
        decimals(3),
    ),
    Field("end_s", "s", "where the window ends", lambda e, _: e.end_s, decimals(3)),
    Field(
        OUTPUT,
        "0-1",
        "the model's output of that name (valence, arousal, ...), a sigmoid",
        lambda e, o: _finite(float(e.outputs[o])),
        decimals(6),
    ),
    Field(
        "attribution",
        "weights",
        "the attention-LSTM's weight of each second of the horizon, oldest first (empty for other models)",
        lambda e, _: [_finite(float(w)) for w in e.attribution],
        weights,
    ),
    Field("video_ok", "flag", "the window had video", lambda e, _: bool(e.video_ok), integer),
    Field("audio_ok", "flag", "the window had audio", lambda e, _: bool(e.audio_ok), integer),
    Field(
        "frames", "frames", "video frames inside the second (the model sees m of them)", lambda e, _: e.frames, integer
    ),
    Field(
        "audio_coverage",
        "fraction",
        "the part of the second that had audio",
        lambda e, _: _finite(float(e.audio_coverage)),
        decimals(3),
    ),
    Field(
        "latency_ms",
        "ms",
        "from the window's close to its estimate (offline clock: the compute time)",
        lambda e, _: _ms(e.latency_ns),
        decimals(1),
    ),
    Field(
        "dropped_total",
        "windows",
        "windows skipped so far because the model fell behind",
        lambda e, _: e.dropped_total,
        integer,
    ),
    Field(
        "frames_dropped",
        "frames",
        "video frames of this window lost before windowing",
        lambda e, _: e.frames_dropped,
        integer,
    ),
    Field(
        "samples_lost",
        "samples",
        "audio samples (model rate) lost: overflows, queue drops, forward re-stamps",
        lambda e, _: e.samples_lost,
        integer,
    ),
    Field(
        "samples_restamped",
        "samples",
        "audio samples (model rate) by which a re-stamp moved the audio clock",
        lambda e, _: e.samples_restamped,
        integer,
    ),
    Field(
        "gap",
        "windows",
        "windows missing right before this one (dropped, or seconds without input)",
        lambda e, _: e.gap,
        integer,
    ),
    Field("compute_ms", "ms", "the model's compute time for this window", lambda e, _: _ms(e.compute_ns), decimals(1)),
)


def field(name: str) -> Field:
    """The field named `name` (`{output}` for the model's outputs); KeyError for a name that is not one."""
    for candidate in FIELDS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no field is named {name!r}; the fields are {[f.name for f in FIELDS]}")


def columns(outputs: Sequence[str]) -> tuple[str, ...]:
    """Every key of a record (the CSV's header) for a model with these outputs, in order."""
    return tuple(name for f in FIELDS for name in f.names(outputs))


OWN_FIELDS = tuple(f.name for f in FIELDS if not f.per_output)  # every key that is not named after an output
LOSS_FIELDS = ("frames_dropped", "samples_lost", "samples_restamped")  # what a window lost at the edges


def check_output_names(outputs: Sequence[str]) -> tuple[str, ...]:
    """At least one output, no duplicates, and no key of the record named twice (an output called `window`)."""
    names = tuple(outputs)
    if not names:
        raise ValueError("output_names is empty; a record needs the model's output names, e.g. ('valence',)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"output names {duplicates} appear more than once; each output needs its own name")
    keys = columns(names)
    clashes = sorted({key for key in keys if keys.count(key) > 1})
    if clashes:
        raise ValueError(f"output names {clashes} clash with the record's own fields; rename those outputs")
    return names


def record_of(estimate: Estimate, outputs: Sequence[str]) -> dict[str, Value]:
    """One estimate as its record: every field, in the CSV's column order, the model's `outputs` in their order
    (see the module doc). An estimate without one of `outputs` is a ValueError naming it."""
    missing = [name for name in outputs if name not in estimate.outputs]
    if missing:
        raise ValueError(
            f"window {estimate.window} has no output {missing}; it has {list(estimate.outputs)}, "
            f"the record was asked for {list(outputs)}"
        )
    record: dict[str, Value] = {}
    for f in FIELDS:
        for output, key in zip(outputs if f.per_output else ("",), f.names(outputs), strict=True):
            record[key] = f.value(estimate, output)
    return record


def csv_cells(record: dict[str, Value], outputs: Sequence[str]) -> list[str]:
    """A record as the CSV row's cells (outputs with 6 decimals, times 3, milliseconds 1, flags 1 or 0)."""
    return [f.csv(record[key]) for f in FIELDS for key in f.names(outputs)]


def lsl_channels(outputs: Sequence[str]) -> tuple[tuple[str, Field], ...]:
    """The LSL stream's channels as (label, field): the model's outputs, then `video_ok`, `audio_ok`, `gap` and
    `window` (all numbers; a sample is the record's values under these labels)."""
    return tuple((label, field(name)) for name in LSL_CHANNELS for label in field(name).names(outputs))
