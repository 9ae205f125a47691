"""Recorders: every Estimate as one line on disk, flushed as soon as it is written.

`CsvRecorder` writes one row per window plus a JSON sidecar (`talk.csv` -> `talk.csv.json`) that says how the
numbers were made (whatever the caller passes: config, checkpoint hash, source, ...), which columns the CSV has,
and, after `close()`, a summary of the run. `JsonlRecorder` writes one JSON object per window.

Both open their file at construction and overwrite an existing file of that name. Each line goes to the
operating system in one `write` call right after it is made, so a process that is killed (even with SIGKILL)
keeps every completed line and never leaves half of one; a write that fails part-way (a full disk) is cut back
to the last whole line before the error is raised. There is no fsync per line, so a power cut may lose the last
few. The sidecar is replaced atomically (temporary file + `os.replace`), so it is always either the old or the
new version, never half of one, and it gets the CSV's permissions. A CSV row and a JSON line are the
estimate's record (`monitor/fields.py`: one name for each fact, in every output); the sidecar's name comes from
`monitor/session_csv.py`, which also reads a recorded session back; the checks a run makes on its output paths
before it opens any are in `monitor/output_paths.py`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.fields import (
    FORMAT,
    FORMAT_VERSION,
    SIDECAR_KEYS,
    Value,
    check_output_names,
    columns,
    csv_cells,
    record_of,
)
from monitor.losses import Losses
from monitor.output_paths import check_output_path, unwritable
from monitor.run_end import NORMAL_END, RunEnd
from monitor.session_csv import sidecar_path
from monitor.snapshot import percentile

if TYPE_CHECKING:
    from sec2sec.stream import Estimate


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

    def __init__(self, path: str | Path, output_names: Sequence[str]) -> None:
        self.output_names = check_output_names(output_names)
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

    def record(self, estimate: Estimate) -> dict[str, Value]:
        """The estimate's record (`monitor/fields.py`) with this recorder's outputs; a missing output is a
        ValueError that names it."""
        return record_of(estimate, self.output_names)

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
    """One CSV row per window, the estimate's record (`monitor/fields.py`: `window,start_s,end_s,<outputs...>,`
    `attribution,video_ok,...`; docs/outputs.md says what each means), plus a JSON sidecar `<path>.json` =
    "format" and "format_version", the caller's `sidecar` dict, "columns" and "summary" (null until `close()`;
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
        names = check_output_names(output_names)
        clashes = sorted(set(SIDECAR_KEYS) & set(sidecar))
        if clashes:
            raise ValueError(f"sidecar keys {clashes} are written by the recorder; use other names")
        self.columns = columns(names)
        self._sidecar: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **sidecar,
            "columns": list(self.columns),
            "summary": None,
        }
        try:
            json.dumps(self._sidecar, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"sidecar must be plain JSON (str, numbers, bools, lists, dicts): {error}") from error
        check_output_path(sidecar_path(path))  # before the CSV is opened (and an old one truncated)
        super().__init__(path, names)
        self.sidecar_path = sidecar_path(self.path)
        self._latencies_ms: list[float] = []
        self._dropped_total = 0
        self._missing = 0
        self._lost = Losses()  # the loss columns, summed
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
        """The CSV cells of one estimate: its record, formatted (outputs 6 decimals, times 3, milliseconds 1)."""
        return csv_cells(self.record(estimate), self.output_names)

    def write(self, estimate: Estimate) -> None:
        """Append one row and flush it (a killed process keeps every completed row)."""
        line = csv_line(self.row(estimate))
        with self._lock:
            self._write_line(line)
            self._track(estimate)

    def _track(self, estimate: Estimate) -> None:
        """Remember what the summary needs (caller holds the lock)."""
        if estimate.latency_ns is not None:
            self._latencies_ms.append(estimate.latency_ns / 1e6)
        self._dropped_total = max(self._dropped_total, estimate.dropped_total)
        self._missing += estimate.gap
        self._lost = self._lost + Losses(estimate.frames_dropped, estimate.samples_lost, estimate.samples_restamped)
        if self._first_window is None:
            self._first_window = estimate.window
        self._last_window = estimate.window

    def summary(self, end: RunEnd) -> dict[str, Any]:
        """What the sidecar's "summary" holds: counts, window range, latency percentiles (ms), the input the rows
        lost (sums of the loss columns), how the run ended (`ended_by`, `message`), and the caller's reports."""
        p50, p99 = percentile(self._latencies_ms, 50), percentile(self._latencies_ms, 99)
        return {
            "windows": self.windows,
            "first_window": self._first_window,
            "last_window": self._last_window,
            "windows_missing": self._missing,
            "dropped_total": self._dropped_total,
            **dataclasses.asdict(self._lost),
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
            **end.report(),
            **({"input": self._input_report()} if self._input_report is not None else {}),
            **({"outputs": self._outputs_report()} if self._outputs_report is not None else {}),
        }

    def close(self, end: RunEnd = NORMAL_END) -> None:
        """Flush and close the CSV, then rewrite the sidecar with a summary. Idempotent: later calls do nothing."""
        with self._lock:
            if not self._close_file():
                return
            self._sidecar = {**self._sidecar, "summary": self.summary(end)}
            write_json_atomic(self.sidecar_path, self._sidecar, self.mode)

    def __enter__(self) -> CsvRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close(NORMAL_END if exc is None else RunEnd.cut_short(exc))


class JsonlRecorder(_LineRecorder):
    """One JSON object per window per line: the estimate's record (`monitor/fields.py`), the fields in the CSV's
    order with the model's outputs as top-level keys, attribution as a list, NaN or infinite numbers as null."""

    kind = "jsonl recorder"

    def __init__(self, path: str | Path, output_names: Sequence[str]) -> None:
        super().__init__(path, output_names)

    def write(self, estimate: Estimate) -> None:
        """Append one line and flush it."""
        line = json.dumps(self.record(estimate), allow_nan=False) + "\n"
        with self._lock:
            self._write_line(line)

    def close(self, end: RunEnd = NORMAL_END) -> None:
        """Flush and close; idempotent. `end` is accepted as every sink's is, and not written."""
        with self._lock:
            self._close_file()

    def __enter__(self) -> JsonlRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close()
