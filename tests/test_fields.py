"""One name for each fact of an estimate (monitor/fields.py): the record that every output carries, the CSV's
cells, the LSL channels, the checks on output names, and the table in docs/outputs.md."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from monitor.fields import (
    FIELDS,
    LOSS_FIELDS,
    LSL_CHANNELS,
    OUTPUT,
    check_output_names,
    columns,
    csv_cells,
    field,
    lsl_channels,
    record_of,
)
from monitor.losses import Losses
from sec2sec.stream import Estimate

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("valence", "arousal")
ESTIMATE = Estimate(
    window=7,
    outputs={"arousal": 0.75, "valence": float("nan")},
    attribution=(0.25, 0.75),
    video_ok=True,
    audio_ok=False,
    frames=25,
    audio_coverage=0.0,
    compute_ns=401_234_567,
    gap=2,
    latency_ns=None,
    dropped_total=3,
    frames_dropped=1,
    samples_lost=160,
    samples_restamped=0,
)


def test_the_record_has_every_field_in_the_csv_order_with_the_estimates_names() -> None:
    record = record_of(ESTIMATE, NAMES)
    assert (
        list(record)
        == list(columns(NAMES))
        == [
            "window",
            "start_s",
            "end_s",
            "valence",
            "arousal",
            "attribution",
            "video_ok",
            "audio_ok",
            "frames",
            "audio_coverage",
            "latency_ms",
            "dropped_total",
            "frames_dropped",
            "samples_lost",
            "samples_restamped",
            "gap",
            "compute_ms",
        ]
    )
    shared = [name for name in record if hasattr(ESTIMATE, name)]  # every field the Estimate carries itself
    assert set(record) - set(shared) == {"valence", "arousal", "latency_ms", "compute_ms"}  # outputs, ns as ms
    for name in shared:
        expected = getattr(ESTIMATE, name)
        assert record[name] == (list(expected) if name == "attribution" else expected), name
    assert (record["valence"], record["arousal"]) == (None, 0.75)  # NaN is null in JSON
    assert (record["latency_ms"], record["compute_ms"]) == (None, 401.235)
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_the_csv_row_is_the_record_written_as_text() -> None:
    assert csv_cells(record_of(ESTIMATE, NAMES), NAMES) == [
        "7",
        "7.000",
        "8.000",
        "",  # a value that is not finite: an empty cell, as null in JSON
        "0.750000",
        "0.2500;0.7500",
        "1",
        "0",
        "25",
        "0.000",
        "",
        "3",
        "1",
        "160",
        "0",
        "2",
        "401.2",
    ]


def test_an_estimate_without_an_output_is_named() -> None:
    with pytest.raises(ValueError, match=r"window 7 has no output \['joy'\]"):
        record_of(ESTIMATE, ("valence", "joy"))


def test_output_names_must_leave_every_key_distinct() -> None:
    assert check_output_names(["openness", "joy"]) == ("openness", "joy")
    with pytest.raises(ValueError, match=r"\['window'\] clash with the record's own fields"):
        check_output_names(["valence", "window"])
    with pytest.raises(ValueError, match="more than once"):
        check_output_names(["valence", "valence"])
    with pytest.raises(ValueError, match="empty"):
        check_output_names([])


def test_lsl_channels_are_named_and_measured_as_the_fields() -> None:
    channels = lsl_channels(NAMES)
    assert [label for label, _ in channels] == ["valence", "arousal", "video_ok", "audio_ok", "gap", "window"]
    assert [f.unit for _, f in channels] == ["0-1", "0-1", "flag", "flag", "windows", "index"]
    with pytest.raises(KeyError, match="no field is named 'index'"):
        field("index")


def test_the_loss_fields_are_the_ledgers() -> None:
    """The CSV's loss columns, the summary's sums (`Losses`) and the fields name the same three counts."""
    assert tuple(f.name for f in dataclasses.fields(Losses)) == LOSS_FIELDS
    assert all(field(name) for name in LOSS_FIELDS)


def test_docs_outputs_lists_the_fields() -> None:
    """docs/outputs.md's table is FIELDS: the same names in the same order, units and meanings, LSL marks."""
    text = (ROOT / "docs" / "outputs.md").read_text()
    table = text[text.index("<!-- fields:") : text.index("<!-- end of fields -->")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    written = [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]
    expected = [
        (
            f"`{f.name.replace(OUTPUT, '<output>')}`",
            f.unit,
            f.meaning,
            "yes" if f.name in LSL_CHANNELS else "",
        )
        for f in FIELDS
    ]
    assert written == expected
    assert not re.search(r"`(index|frames_seen|compute_ns)`", table)
