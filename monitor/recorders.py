"""Recorders: every Estimate as one line on disk, flushed as soon as it is written.

`CsvRecorder` writes one row per window plus a JSON sidecar (`talk.csv` -> `talk.csv.json`) that says how the
numbers were made (whatever the caller passes: config, checkpoint hash, source, ...), which columns the CSV has,
and, after `close()`, a summary of the run. `JsonlRecorder` writes one JSON object per window.

Both open their file at construction and overwrite an existing file of that name. Each line goes to the
operating system in one `write` call right after it is made, so a process that is killed (even with SIGKILL)
keeps every completed line and never leaves half of one; a write that fails part-way (a full disk) is cut back
to the last whole line before the error is raised. There is no fsync per line, so a power cut may lose the last
few. The sidecar is replaced atomically (temporary file + `os.replace`), so it is always either the old or the
new version, never half of one, and it gets the CSV's permissions. The CSV's columns and the sidecar's name
come from `monitor/session_csv.py`, which also reads a recorded session back; the checks a run makes on its
output paths before it opens any are in `monitor/output_paths.py`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.output_paths import check_output_path, unwritable
from monitor.session_csv import LEADING_COLUMNS, LOSS_COLUMNS, TRAILING_COLUMNS, sidecar_path
from monitor.snapshot import percentile

if TYPE_CHECKING:
    from sec2sec.stream import Estimate


def latency_ms(estimate: Estimate) -> float | None:
    """The estimate's latency (window close -> estimate) in milliseconds; None when the pipeline did not set it."""
    return None if estimate.latency_ns is None else estimate.latency_ns / 1e6


def check_output_names(output_names: Sequence[str], reserved: Sequence[str] = ()) -> tuple[str, ...]:
    """At least one output, no duplicates, no clash with the recorder's own columns."""
    names = tuple(output_names)
    if not names:
        raise ValueError("output_names is empty; a recorder needs the model's output names, e.g. ('valence',)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"output names {duplicates} appear more than once; each output needs its own name")
    clashes = sorted(set(names) & set(reserved))
    if clashes:
        raise ValueError(f"output names {clashes} clash with the recorder's own columns; rename those outputs")
    return names


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line (quoted where a cell needs it, e.g. an output name with a comma), ending in a newline."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def write_json_atomic(path: Path, content: dict[str, Any], mode: int = 0o644) -> None:
    """Write `content` as JSON to `path` via a temporary file in the same directory and `os.replace`;
    the file gets permission bits `mode` (mkstemp alone would make it private)."""
    text = json.dumps(content, indent=2, allow_nan=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class _LineRecorder:
    """An open file written one whole line per `write` call under a lock; `close()` is idempotent."""

    kind = "recorder"

    def __init__(self, path: str | Path, output_names: Sequence[str], reserved: Sequence[str] = ()) -> None:
        self.output_names = check_output_names(output_names, reserved)
        self.path = check_output_path(path)
        self.name = f"{self.kind} {self.path}"
        self.windows = 0
        self._lock = threading.Lock()
        self._closed = False
        self._size = 0  # bytes of whole lines on disk
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise ValueError(unwritable(self.path, exc)) from None
        self.mode = stat.S_IMODE(os.fstat(self._fd).st_mode)  # the file's permission bits; the sidecar's too

    def _append(self, text: str) -> None:
        """Write `text` (whole lines) to the OS; after a partial write (a full disk) cut the file back to the
        last whole line, then raise the OSError."""
        data, done = text.encode("utf-8"), 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            if done:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                    os.lseek(self._fd, self._size, os.SEEK_SET)
            raise
        self._size += len(data)

    @property
    def closed(self) -> bool:
        """True once close() has run."""
        return self._closed

    def outputs_of(self, estimate: Estimate) -> list[float]:
        """The estimate's outputs in this recorder's order; a missing output is an error that names it."""
        missing = [name for name in self.output_names if name not in estimate.outputs]
        if missing:
            raise ValueError(
                f"window {estimate.index} has no output {missing}; it has {list(estimate.outputs)}, "
                f"the recorder was opened for {list(self.output_names)}"
            )
        return [float(estimate.outputs[name]) for name in self.output_names]

    def _write_line(self, line: str) -> None:
        """Append one line and flush it to the OS (caller holds the lock)."""
        if self._closed:
            raise ValueError(f"recorder for {str(self.path)!r} is closed; open a new one to record more")
        self._append(line)
        self.windows += 1

    def _close_file(self) -> bool:
        """Close the file; True the first time, False when it was already closed (caller holds the lock)."""
        if self._closed:
            return False
        self._closed = True
        os.close(self._fd)
        return True


class CsvRecorder(_LineRecorder):
    """One CSV row per window:
    `window,start_s,end_s,<outputs...>,attribution,video_ok,audio_ok,frames,audio_coverage,latency_ms,dropped_total,`
    `frames_dropped,samples_lost,samples_restamped` (docs/reliability.md says what each means)
    plus a JSON sidecar `<path>.json` = the caller's `sidecar` dict + "columns" + "summary" (null until `close()`;
    a sidecar whose summary is null means the run did not close cleanly). `input_report`, when given, is called
    at close and its dict is stored as the summary's "input" (e.g. damaged packets a replay skipped);
    `outputs_report` likewise as "outputs" (what the live outputs sent and dropped)."""

    kind = "csv recorder"

    def __init__(
        self,
        path: str | Path,
        output_names: Sequence[str],
        sidecar: dict[str, Any],
        input_report: Callable[[], dict[str, Any]] | None = None,
        outputs_report: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._input_report = input_report
        self._outputs_report = outputs_report
        reserved = (*LEADING_COLUMNS, *TRAILING_COLUMNS)
        names = check_output_names(output_names, reserved)
        clashes = sorted({"columns", "summary"} & set(sidecar))
        if clashes:
            raise ValueError(f"sidecar keys {clashes} are written by the recorder; use other names")
        self.columns = (*LEADING_COLUMNS, *names, *TRAILING_COLUMNS)
        self._sidecar: dict[str, Any] = {**sidecar, "columns": list(self.columns), "summary": None}
        try:
            json.dumps(self._sidecar, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"sidecar must be plain JSON (str, numbers, bools, lists, dicts): {error}") from error
        check_output_path(sidecar_path(path))  # before the CSV is opened (and an old one truncated)
        super().__init__(path, names, reserved)
        self.sidecar_path = sidecar_path(self.path)
        self._latencies_ms: list[float] = []
        self._dropped_total = 0
        self._missing = 0
        self._lost = dict.fromkeys(LOSS_COLUMNS, 0)
        self._first_window: int | None = None
        self._last_window: int | None = None
        try:
            self._append(csv_line(self.columns))
            write_json_atomic(self.sidecar_path, self._sidecar, self.mode)
        except OSError as exc:
            self._close_file()
            raise ValueError(unwritable(self.path, exc)) from None
        except BaseException:
            self._close_file()
            raise

    def row(self, estimate: Estimate) -> list[str]:
        """The CSV cells of one estimate, formatted (outputs 6 decimals, times 3, latency in ms with 1)."""
        latency = latency_ms(estimate)
        return [
            str(estimate.index),
            f"{estimate.start_s:.3f}",
            f"{estimate.end_s:.3f}",
            *(f"{value:.6f}" for value in self.outputs_of(estimate)),
            ";".join(f"{weight:.4f}" for weight in estimate.attribution),
            str(int(estimate.video_ok)),
            str(int(estimate.audio_ok)),
            str(estimate.frames_seen),
            f"{estimate.audio_coverage:.3f}",
            "" if latency is None else f"{latency:.1f}",
            str(estimate.dropped_total),
            *(str(getattr(estimate, column)) for column in LOSS_COLUMNS),
        ]

    def write(self, estimate: Estimate) -> None:
        """Append one row and flush it (a killed process keeps every completed row)."""
        line = csv_line(self.row(estimate))
        with self._lock:
            self._write_line(line)
            self._track(estimate)

    def _track(self, estimate: Estimate) -> None:
        """Remember what the summary needs (caller holds the lock)."""
        latency = latency_ms(estimate)
        if latency is not None:
            self._latencies_ms.append(latency)
        self._dropped_total = max(self._dropped_total, estimate.dropped_total)
        self._missing += estimate.gap
        for column in LOSS_COLUMNS:
            self._lost[column] += getattr(estimate, column)
        if self._first_window is None:
            self._first_window = estimate.index
        self._last_window = estimate.index

    def summary(self, ended_by: str) -> dict[str, Any]:
        """What the sidecar's "summary" holds: counts, window range, latency percentiles (ms), the input the rows
        lost (sums of the loss columns), how the run ended, and the caller's input report."""
        p50, p99 = percentile(self._latencies_ms, 50), percentile(self._latencies_ms, 99)
        return {
            "windows": self.windows,
            "first_window": self._first_window,
            "last_window": self._last_window,
            "windows_missing": self._missing,
            "dropped_total": self._dropped_total,
            **self._lost,
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
            "ended_by": ended_by,
            **({"input": self._input_report()} if self._input_report is not None else {}),
            **({"outputs": self._outputs_report()} if self._outputs_report is not None else {}),
        }

    def close(self, ended_by: str = "end") -> None:
        """Flush and close the CSV, then rewrite the sidecar with a summary. Idempotent: later calls do nothing."""
        with self._lock:
            if not self._close_file():
                return
            self._sidecar = {**self._sidecar, "summary": self.summary(ended_by)}
            write_json_atomic(self.sidecar_path, self._sidecar, self.mode)

    def __enter__(self) -> CsvRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close("end" if exc_type is None else f"error: {exc_type.__name__}")


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None


def json_record(estimate: Estimate, values: Sequence[float], output_names: Sequence[str]) -> dict[str, Any]:
    """The JSON object of one estimate (JSON lines, the ZeroMQ feed): every Estimate field plus start_s, end_s
    and latency_ms; `values` are its outputs in `output_names`' order; NaN or infinite numbers become null."""
    outputs = dict(zip(output_names, values, strict=True))
    latency = latency_ms(estimate)
    return {
        "index": estimate.index,
        "start_s": estimate.start_s,
        "end_s": estimate.end_s,
        "outputs": {name: _finite(value) for name, value in outputs.items()},
        "attribution": [_finite(float(weight)) for weight in estimate.attribution],
        "video_ok": bool(estimate.video_ok),
        "audio_ok": bool(estimate.audio_ok),
        "frames_seen": estimate.frames_seen,
        "audio_coverage": _finite(float(estimate.audio_coverage)),
        "compute_ns": estimate.compute_ns,
        "gap": estimate.gap,
        "latency_ns": estimate.latency_ns,
        "latency_ms": None if latency is None else round(latency, 3),
        "dropped_total": estimate.dropped_total,
        **{column: getattr(estimate, column) for column in LOSS_COLUMNS},
    }


class JsonlRecorder(_LineRecorder):
    """One JSON object per window per line, with every Estimate field plus start_s, end_s and latency_ms
    (outputs as an object in output order, attribution as a list; NaN or infinite numbers become null)."""

    kind = "jsonl recorder"

    def __init__(self, path: str | Path, output_names: Sequence[str]) -> None:
        super().__init__(path, output_names)

    def record(self, estimate: Estimate) -> dict[str, Any]:
        """The JSON object written for one estimate."""
        return json_record(estimate, self.outputs_of(estimate), self.output_names)

    def write(self, estimate: Estimate) -> None:
        """Append one line and flush it."""
        line = json.dumps(self.record(estimate), allow_nan=False) + "\n"
        with self._lock:
            self._write_line(line)

    def close(self, ended_by: str = "end") -> None:
        """Flush and close; idempotent. `ended_by` is accepted for symmetry with CsvRecorder and not written."""
        with self._lock:
            self._close_file()

    def __enter__(self) -> JsonlRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close()
