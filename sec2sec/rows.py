"""The columns of the monitor's CSV: a row's own columns around the model's outputs. The recorder
(`monitor/recorders.py`) writes them and the session plot (`sec2sec/offline/plot.py`) reads them, so they live
here, where both can import them (sec2sec never imports monitor).

A row is `window, start_s, end_s, <one column per model output>, attribution, video_ok, audio_ok, frames,
audio_coverage, latency_ms, dropped_total, frames_dropped, samples_lost, samples_restamped`."""

from __future__ import annotations

LEADING_COLUMNS = ("window", "start_s", "end_s")
TRAILING_COLUMNS = (
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
)
LOSS_COLUMNS = ("frames_dropped", "samples_lost", "samples_restamped")  # what each window lost at the edges
ROW_COLUMNS = (*LEADING_COLUMNS, *TRAILING_COLUMNS)  # every column that is not a model output
