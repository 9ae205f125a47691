"""A network camera on 127.0.0.1: an HTTP server sending a multipart MJPEG stream at real pace (as ffmpeg's or
an IP camera's /feed does), each frame a solid grey whose level says which frame it is and so when the
server produced it."""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np

FPS = 20
LEVEL_STEP = 2  # frame n is grey level (n * LEVEL_STEP) % 256: 128 distinct levels, 6.4 s at 20 fps


class _Feed(http.server.BaseHTTPRequestHandler):
    server: MjpegServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        srv, n = self.server, 0
        started = time.monotonic()
        srv.started.append(time.monotonic_ns())
        try:
            while not srv.stopping.is_set():
                level = (n * LEVEL_STEP) % 256
                ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), level, np.uint8))
                assert ok
                data = jpeg.tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                n += 1
                pause = started + n / FPS - time.monotonic()
                if pause > 0:
                    srv.stopping.wait(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass


class MjpegServer(http.server.ThreadingHTTPServer):
    """`with MjpegServer() as s:` serves http://127.0.0.1:<port>/feed until the block ends; `started` holds the
    monotonic time at which each connection's frame 0 was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Feed)
        self.stopping = threading.Event()
        self.started: list[int] = []
        self._thread = threading.Thread(target=self.serve_forever, name="mjpeg-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/feed"

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)
