"""monitor: live capture, replay pacing, the streaming pipeline, recorders, dashboard and the `sec2sec-live` CLI."""
