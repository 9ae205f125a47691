"""How a run ended, as a value (monitor/run_end.py): the exit code, the closing lines, the summaries' words and
the API's exception all come from one RunEnd, and a message's words never decide the exit code."""

from __future__ import annotations

import pytest

from monitor.run_end import EndReason, RunEnd, RunFailed, Terminated

CODES = {"end": 0, "duration": 0, "stopped": 0, "interrupted": 130, "terminated": 143, "error": 1}
WORDS = ["", "terminated", "interrupted", "error: disk full", "end", "ended by error"]


@pytest.mark.parametrize("reason", list(EndReason))
def test_the_reason_alone_gives_the_exit_code(reason: EndReason) -> None:
    codes = {RunEnd(reason, words or "x").exit_code for words in WORDS if words or reason is not EndReason.ERROR}
    assert codes == {CODES[reason.value]}


def test_an_error_says_what_failed() -> None:
    failed = RunEnd.error("camera: camera 0 failed: OSError: device unplugged")
    assert failed.closing_lines("3 windows, 0 dropped") == [
        "3 windows, 0 dropped; ended by error",
        "error: camera: camera 0 failed: OSError: device unplugged",
    ]
    assert failed.report() == {"ended_by": "error", "message": "camera: camera 0 failed: OSError: device unplugged"}
    exception = failed.exception()
    assert isinstance(exception, RunFailed) and str(exception) == failed.message
    with pytest.raises(ValueError, match="needs a message"):
        RunEnd(EndReason.ERROR)


def test_a_clean_end_and_a_signal() -> None:
    assert RunEnd(EndReason.DURATION).closing_lines("5 windows") == ["5 windows; ended by duration"]
    assert RunEnd(EndReason.DURATION).report() == {"ended_by": "duration", "message": None}
    assert RunEnd(EndReason.STOPPED).exception() is None
    warned = RunEnd(EndReason.TERMINATED, "csv recorder x.csv could not be closed")
    assert warned.closing_lines("2 windows") == [
        "2 windows; ended by terminated",
        "warning: csv recorder x.csv could not be closed",
    ]
    assert warned.exit_code == 143 and warned.exception() is None


def test_a_sink_that_cannot_close() -> None:
    """A clean end becomes the error; a signal keeps its reason and code, the problem is its warning; an error
    (or a signal with a warning already) keeps its own message."""
    problem = "csv recorder x.csv could not be closed: OSError: [Errno 28] No space left on device"
    for clean in (EndReason.END, EndReason.DURATION, EndReason.STOPPED):
        assert RunEnd(clean).after_close_failure(problem) == RunEnd.error(problem)
    assert RunEnd(EndReason.INTERRUPTED).after_close_failure(problem) == RunEnd(EndReason.INTERRUPTED, problem)
    first = RunEnd.error("inference failed at window 3: RuntimeError: boom")
    assert first.after_close_failure(problem) == first
    warned = RunEnd(EndReason.TERMINATED, "an earlier warning")
    assert warned.after_close_failure(problem) == warned


def test_an_exception_that_cut_a_run_short() -> None:
    assert RunEnd.cut_short(KeyboardInterrupt()) == RunEnd(EndReason.INTERRUPTED)
    assert RunEnd.cut_short(Terminated()) == RunEnd(EndReason.TERMINATED)
    assert RunEnd.cut_short(OSError("disk gone\nmore")) == RunEnd.error("OSError: disk gone")
