"""How a run ended, as a value: what ended it (`EndReason`) and its one-line message (`RunEnd`).

`Pipeline.run()` returns a `RunEnd`; every report of it is derived here, in one place: the exit code
(`exit_code`), the closing lines on stderr (`closing_lines`), what the sidecar's summary and the ZeroMQ summary
say (`report`: `ended_by` and `message`), and the Python API's exception (`exception`: `RunFailed`). The reason
alone decides the exit code; a message is words for a person, so rewording one cannot change an exit code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from monitor.queues import first_line


class EndReason(enum.Enum):
    """What ended a run; the value is the word the closing line and the summaries use."""

    END = "end"  # the input ended (a file at its end)
    DURATION = "duration"  # --duration (the window limit) was reached
    STOPPED = "stopped"  # asked to stop: a Python loop left, `stop()` from another thread
    INTERRUPTED = "interrupted"  # SIGINT (Ctrl-C)
    TERMINATED = "terminated"  # SIGTERM
    ERROR = "error"  # a source, the model or an output failed; the message names it


EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143
EXIT_CODES = {
    EndReason.END: EXIT_OK,
    EndReason.DURATION: EXIT_OK,
    EndReason.STOPPED: EXIT_OK,
    EndReason.INTERRUPTED: EXIT_INTERRUPTED,
    EndReason.TERMINATED: EXIT_TERMINATED,
    EndReason.ERROR: EXIT_FAILED,
}
CLEAN = (EndReason.END, EndReason.DURATION, EndReason.STOPPED)  # ends that asked for nothing to be reported


class RunFailed(RuntimeError):
    """A live run ended with an error (a source, the model or an output failed); the message names it."""


class Terminated(BaseException):
    """SIGTERM arrived before the pipeline was running (opening, loading, warm-up): abort with exit 143."""


@dataclass(frozen=True)
class RunEnd:
    """What ended a run and its message: for an error, what failed (one line, never empty); otherwise a warning
    that came with the end ("" for none), e.g. a recorder that could not close after Ctrl-C."""

    reason: EndReason
    message: str = ""

    def __post_init__(self) -> None:
        if self.reason is EndReason.ERROR and not self.message:
            raise ValueError("a run that ended by an error needs a message naming what failed")

    @classmethod
    def error(cls, message: str) -> RunEnd:
        return cls(EndReason.ERROR, message)

    @classmethod
    def cut_short(cls, exc: BaseException) -> RunEnd:
        """How a run that an exception cut short ended: Ctrl-C, SIGTERM (`Terminated`), or an error naming it."""
        if isinstance(exc, KeyboardInterrupt):
            return cls(EndReason.INTERRUPTED)
        if isinstance(exc, Terminated):
            return cls(EndReason.TERMINATED)
        return cls.error(first_line(exc))

    @property
    def failed(self) -> bool:
        return self.reason is EndReason.ERROR

    @property
    def exit_code(self) -> int:
        """0 for a clean end, 130 Ctrl-C, 143 SIGTERM, 1 an error: from the reason alone."""
        return EXIT_CODES[self.reason]

    def report(self) -> dict[str, str | None]:
        """What the sidecar's and the ZeroMQ summary say of the end: `ended_by` (the reason's word) and
        `message` (None when there is none)."""
        return {"ended_by": self.reason.value, "message": self.message or None}

    def closing_lines(self, totals: str) -> list[str]:
        """The lines a run ends with on stderr: `totals` (windows, drops, latency) and the reason's word, then the
        error (exit 1) or the warning that came with the end."""
        lines = [f"{totals}; ended by {self.reason.value}"]
        if self.message:
            lines.append(f"{'error' if self.failed else 'warning'}: {self.message}")
        return lines

    def exception(self) -> RunFailed | None:
        """What the Python API raises after a run's last estimate: RunFailed naming the failure, or None."""
        return RunFailed(self.message) if self.failed else None

    def after_close_failure(self, problem: str) -> RunEnd:
        """The end once a sink could not close (`problem`, one line: a full disk while writing the summary): a
        clean end becomes that error; an end by a signal keeps its reason (and exit code) with the problem as
        its warning; an error, or an end that has a warning already, stays as it was."""
        if self.reason in CLEAN:
            return RunEnd.error(problem)
        if self.failed or self.message:
            return self
        return RunEnd(self.reason, problem)


NORMAL_END = RunEnd(EndReason.END)  # what closing a sink without saying how the run ended means
