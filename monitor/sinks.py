"""What the pipeline needs of an output edge (the CSV and JSONL recorders, `--no-ui`'s printer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sec2sec.stream import Estimate


class Sink(Protocol):
    """Receives every estimate on the worker thread; closed once at the end. An optional `name` attribute
    names it in error messages."""

    def write(self, estimate: Estimate) -> None: ...

    def close(self, ended_by: str = "end") -> None: ...


class SinkFailed(Exception):
    """A sink raised while writing an estimate; the message names the sink and the window."""


def sink_name(sink: Sink) -> str:
    return str(getattr(sink, "name", type(sink).__name__))
