"""A private PulseAudio server playing a known tone, for recording through a real PortAudio device.

Recipe (works as root and as a user, no D-Bus, no systemd, no sound card):
- `pulseaudio --daemonize=no -n --exit-idle-time=-1 --use-pid-file=no --disable-shm=yes --realtime=no
  --high-priority=no --load="module-native-protocol-unix auth-anonymous=1 socket=<tmp>/native"
  --load="module-null-sink sink_name=s2s_test rate=48000 channels=1"` with HOME, XDG_RUNTIME_DIR,
  PULSE_RUNTIME_PATH and PULSE_STATE_PATH in a temporary folder (as root it only warns that it is not meant to be
  run as root);
- `pactl set-default-source s2s_test.monitor`;
- `pacat --playback --device=s2s_test --latency-msec=20 --format=s16le --rate=48000 --channels=1` fed with a
  looping sine on stdin. The low latency matters: with pacat's default (~2 s) the null sink renders in ~2 s
  blocks and its monitor delivers audio in bursts;
- wait until the monitor delivers the tone (`parec`): right after a playback stream connects, the null sink
  still finishes the idle block it started, so for up to ~2 s nothing arrives;
- PULSE_SERVER=unix:<tmp>/native (and PULSE_CLIENTCONFIG with `autospawn = no`) in this process's environment
  (the ALSA `pulse` plugin that PortAudio loads reads them), then re-initialise PortAudio so that its device
  list includes `pulse`.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SINK = "s2s_test"
RATE = 48_000
TONE_HZ = 1_000  # whole cycles per second, so a one-second buffer loops without a click
AMPLITUDE = 0.5
BINARIES = ("pulseaudio", "pactl", "pacat", "parec")


def tone_s16le(seconds: float = 1.0) -> bytes:
    """`seconds` of the test tone as raw mono s16le at RATE."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()


class PulseServer:
    """A PulseAudio daemon with one null sink whose monitor is the default source, fed with the tone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # a unix socket path must stay under ~108 bytes, whatever TMPDIR is: keep it in a short folder of its own
        self._socket_dir = Path(tempfile.mkdtemp(prefix="s2s-pa-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.socket = self._socket_dir / "native"
        self.log = root / "pulseaudio.log"
        for sub in ("home", "runtime", "state"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        client_conf = root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.env = {
            **os.environ,
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "runtime"),
            "PULSE_RUNTIME_PATH": str(root / "runtime"),
            "PULSE_STATE_PATH": str(root / "state"),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_CLIENTCONFIG": str(client_conf),
        }
        self._daemon: subprocess.Popen | None = None
        self._player: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        self._stop = threading.Event()

    def _run(self, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def _fail(self, what: str) -> None:
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.close()
        pytest.fail(f"PulseAudio test server: {what}\n--- pulseaudio log ---\n{log}")

    def start(self) -> None:
        """Start the daemon, make the null sink's monitor the default source, play the tone, wait for it."""
        self._start_daemon()
        result = self._run("pactl", "set-default-source", f"{SINK}.monitor")
        if result.returncode != 0:
            self._fail(f"pactl set-default-source failed: {result.stderr.strip()}")
        self._start_tone()
        self._wait_for_tone()

    def _start_daemon(self) -> None:
        cmd = [
            "pulseaudio",
            "--daemonize=no",
            "-n",  # no default.pa: only the modules below
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disable-shm=yes",
            "--realtime=no",
            "--high-priority=no",
            "--log-target=stderr",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"--load=module-null-sink sink_name={SINK} rate={RATE} channels=1",
        ]
        with self.log.open("wb") as log:
            self._daemon = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                self._fail(f"pulseaudio exited with status {self._daemon.returncode}")
            if self.socket.exists() and self._run("pactl", "info").returncode == 0:
                return
            time.sleep(0.05)
        self._fail("pulseaudio did not answer within 10 s")

    def _start_tone(self) -> None:
        cmd = ["pacat", "--playback", f"--device={SINK}", "--latency-msec=20", "--format=s16le", f"--rate={RATE}"]
        self._player = subprocess.Popen(
            [*cmd, "--channels=1"], env=self.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        self._feeder = threading.Thread(target=self._feed, name="pulse-tone-feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        """Write the tone to pacat's stdin until stopped (the pipe paces us to real time)."""
        second = tone_s16le(1.0)
        pieces = [second[i : i + RATE // 5] for i in range(0, len(second), RATE // 5)]  # 0.1 s each
        try:
            while not self._stop.is_set():
                for piece in pieces:
                    self._player.stdin.write(piece)
                    self._player.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return  # pacat was stopped

    def _wait_for_tone(self, timeout_s: float = 10.0) -> None:
        """Block until the monitor source delivers non-silent audio, then a little more to settle."""
        cmd = ["parec", f"--device={SINK}.monitor", "--latency-msec=10", "--format=s16le", f"--rate={RATE}"]
        probe = subprocess.Popen([*cmd, "--channels=1"], env=self.env, stdout=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        heard_at: float | None = None
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([probe.stdout], [], [], 0.1)
                data = os.read(probe.stdout.fileno(), 8192) if ready else b""
                if (
                    heard_at is None
                    and len(data) >= 2
                    and np.abs(np.frombuffer(data[: len(data) // 2 * 2], "<i2")).max() > 1000
                ):
                    heard_at = time.monotonic()
                if heard_at is not None and time.monotonic() - heard_at > 0.3:
                    return
        finally:
            probe.kill()
            probe.wait()
            probe.stdout.close()
        self._fail(f"the null sink's monitor delivered no tone within {timeout_s:g} s")

    def close(self) -> None:
        """Stop the tone and the daemon; idempotent."""
        self._stop.set()
        for proc in (self._player, self._daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._feeder is not None:
            self._feeder.join(timeout=5)
        if self._player is not None and self._player.stdin is not None:
            try:
                self._player.stdin.close()
            except BrokenPipeError:
                pass
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _refresh_portaudio() -> None:
    """Re-enumerate PortAudio devices (its list is fixed when sounddevice initialises it)."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="module")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A running PulseAudio server playing a TONE_HZ sine into the default source; PortAudio sees `pulse`."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"PulseAudio tools not installed ({', '.join(missing)}): apt-get install pulseaudio pulseaudio-utils"
        )
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    with pytest.MonkeyPatch.context() as mp:
        for key in ("PULSE_SERVER", "PULSE_CLIENTCONFIG", "PULSE_RUNTIME_PATH"):
            mp.setenv(key, server.env[key])
        try:
            server.start()
            _refresh_portaudio()
            yield server
        finally:
            server.close()
            _refresh_portaudio()  # forget the server that is gone (while autospawn is still off)
