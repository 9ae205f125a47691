"""Pretrained weight files as a model hub client keeps them: verified before use, downloaded atomically.

No network beyond 127.0.0.1: the hub table is pointed at small files whose names carry their real sha256
prefix, served by a local HTTP server (plain http is allowed there only through the test-only hook
`weights._PLAIN_HTTP_HOSTS`), or at a patched `urlopen`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from sec2sec import weights
from sec2sec.commands import main
from sec2sec.config import AudioConfig
from sec2sec.encoders import AudioEncoder
from sec2sec.weights import DownloadError, HubFile, PretrainedWeightsMissing, WeightsError, load_pretrained


def _named_by_hash(state: dict[str, torch.Tensor], folder: Path, stem: str) -> Path:
    """Save `state` as folder/<stem>-<first 10 hex digits of its sha256>.pth, as torchvision names its files."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "unnamed.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(folder / f"{stem}-{digest[:10]}.pth")


@dataclass
class Hub:
    entry: HubFile
    source: Path  # the "server" copy behind entry.url
    state: dict[str, torch.Tensor]

    @property
    def cached(self) -> Path:
        return self.entry.path

    def partials(self) -> list[Path]:
        folder = self.cached.parent
        return sorted(folder.glob("*.partial")) if folder.is_dir() else []


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the files of `server.folder`, or misbehaves as `server.mode` says."""

    server: _WeightServer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        srv, name = self.server, self.path.lstrip("/")
        srv.requests.append(self.path)
        if srv.mode.startswith("redirect") and not self.path.startswith("/moved/"):
            host = "localhost" if srv.mode == "redirect-http" else "127.0.0.1"  # localhost: not on the test hook
            self.send_response(302)
            self.send_header("Location", f"http://{host}:{srv.server_port}/moved/{name}")
            self.end_headers()
            return
        data = (srv.folder / name.removeprefix("moved/")).read_bytes()
        if srv.mode == "truncate":  # chunked, cut mid-chunk: http.client raises IncompleteRead
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
            self.wfile.flush()
            return
        self.send_response(200)
        if srv.mode not in ("too-much", "drip"):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if srv.mode == "drip":
            for k in range(len(data)):
                self.wfile.write(data[k : k + 1])
                self.wfile.flush()
                time.sleep(0.05)
        elif srv.mode == "too-much":
            self.wfile.write(data + bytes(10 * len(data)))
        else:
            self.wfile.write(data)


class _WeightServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.mode, self.requests = folder, "serve", []


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_WeightServer]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/server, allowed through the test-only plain-http hook."""
    (tmp_path / "server").mkdir()
    srv = _WeightServer(tmp_path / "server")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(weights, "_PLAIN_HTTP_HOSTS", ("127.0.0.1",))
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _entry(source: Path, arch: str, label: str, url: str, used_by: str = "") -> HubFile:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return HubFile(arch, label, url, digest, source.stat().st_size, used_by)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: _WeightServer) -> Hub:
    """One small weight file ("tiny", a Linear(4, 3)) served over http on 127.0.0.1; TORCH_HOME in tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SEC2SEC_OFFLINE", raising=False)  # the suite sets it; these tests download
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in nn.Linear(4, 3).state_dict().items()}
    source = _named_by_hash(state, tmp_path / "server", "tiny")
    url = f"http://127.0.0.1:{server.server_port}/{source.name}"
    entry = _entry(source, "tiny", "Tiny_Weights.TEST_V1", url, "test encoder")
    monkeypatch.setattr(weights, "HUB", {"tiny": entry})
    return Hub(entry, source, state)


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "urlopen", unreachable)


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, same name, another sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def _fresh() -> nn.Linear:
    torch.manual_seed(123)
    return nn.Linear(4, 3)


def _holds(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_the_real_table_names_torchvision_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    video, audio = weights.HUB["r2plus1d_18"], weights.HUB["resnet18"]
    assert (video.label, video.sha256_prefix) == ("R2Plus1D_18_Weights.KINETICS400_V1", "91a641e6")
    assert (audio.label, audio.sha256_prefix) == ("ResNet18_Weights.IMAGENET1K_V1", "f37072fd")
    assert video.sha256 == "91a641e6c2ab531d1aca5f4321b4d802ec5c3babc15df855cdb6e39c6a1107c8"
    assert audio.sha256 == "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
    assert (video.size, audio.size) == (126_162_996, 46_830_571)
    assert all(h.url.startswith("https://download.pytorch.org/models/") for h in weights.HUB.values())
    assert audio.path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match="carries no sha256 prefix"):
        _ = HubFile("x", "X", "https://example.org/x.pth", "0" * 64, 1).sha256_prefix
    with pytest.raises(WeightsError, match=r"its name says sha256 12345678\.\.\."):
        HubFile("x", "X", "https://example.org/x-12345678.pth", "0" * 64, 1)
    assert weights._PLAIN_HTTP_HOSTS == ()  # the test-only hook is off outside these tests' fixtures


def test_sha256_is_streamed_over_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = torch.randint(0, 256, (weights.BLOCK * 2 + 12345,), dtype=torch.uint8).numpy().tobytes()
    path.write_bytes(data)
    assert weights.sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_a_verified_cached_file_is_loaded_without_downloading(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.cached.parent.mkdir(parents=True)
    hub.cached.write_bytes(hub.source.read_bytes())
    _offline(monkeypatch)  # any download attempt would fail the "no warning" check below
    for mode in ("auto", "pretrained"):
        model = _fresh()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_pretrained(model, "tiny", mode) is True
        assert _holds(model, hub.state)
    assert weights.file_problem(hub.entry) is None


def test_a_missing_file_is_downloaded_verified_with_progress(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    model = _fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_pretrained(model, "tiny", "auto") is True
    assert _holds(model, hub.state)
    assert hub.cached.read_bytes() == hub.source.read_bytes() and hub.partials() == []
    assert hub.entry.name in capsys.readouterr().err  # the progress bar, on stderr


def test_a_corrupted_cached_file_is_detected_and_downloaded_again(hub: Hub) -> None:
    hub.cached.parent.mkdir(parents=True)
    hub.cached.write_bytes(hub.source.read_bytes())
    _damage(hub.cached)
    assert weights.file_problem(hub.entry).startswith("damaged (sha256 ")
    model = _fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_pretrained(model, "tiny", "pretrained") is True
    assert _holds(model, hub.state) and hub.cached.read_bytes() == hub.source.read_bytes()


def _cache_as(hub: Hub, cached: str) -> None:
    """Leave the cache "missing" (as it is) or holding a "damaged" copy of the hub's file."""
    if cached == "damaged":
        hub.cached.parent.mkdir(parents=True)
        hub.cached.write_bytes(hub.source.read_bytes())
        _damage(hub.cached)


@pytest.mark.parametrize("cached", ["missing", "damaged"])
def test_offline_auto_warns_and_keeps_random_weights(hub: Hub, monkeypatch: pytest.MonkeyPatch, cached: str) -> None:
    _cache_as(hub, cached)
    _offline(monkeypatch)
    model = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(PretrainedWeightsMissing) as record:
        assert load_pretrained(model, "tiny", "auto") is False
    assert _holds(model, before)  # a damaged file is never loaded
    message = str(record[0].message)
    assert str(hub.cached) in message and "using RANDOM encoder weights" in message and cached in message
    assert "Name or service not known" in message and "sec2sec weights download tiny" in message


@pytest.mark.parametrize("cached", ["missing", "damaged"])
def test_offline_pretrained_is_a_one_line_error(hub: Hub, monkeypatch: pytest.MonkeyPatch, cached: str) -> None:
    _cache_as(hub, cached)
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as err:
        load_pretrained(_fresh(), "tiny", "pretrained")
    message = str(err.value)
    assert "\n" not in message and str(hub.cached) in message and cached in message
    assert "sec2sec weights download tiny" in message and 'weights = "none"' in message


def test_download_false_never_touches_the_network(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download expected")

    monkeypatch.setattr(weights, "urlopen", forbidden)
    with pytest.raises(WeightsError, match="missing \\(downloads are off\\)"):
        load_pretrained(_fresh(), "tiny", "pretrained", download=False)


class _Interrupted:
    """A response that delivers some bytes, checks nothing sits under the final name yet, then fails."""

    def __init__(self, hub: Hub, error: BaseException) -> None:
        self.hub, self.error, self.calls = hub, error, 0
        self.headers = {"Content-Length": str(hub.source.stat().st_size)}

    def read(self, n: int) -> bytes:
        self.calls += 1
        if self.calls == 1:
            return self.hub.source.read_bytes()[:100]
        assert not self.hub.cached.exists() and len(self.hub.partials()) == 1
        raise self.error

    def __enter__(self) -> _Interrupted:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("error", [ConnectionResetError("connection reset by peer"), KeyboardInterrupt()])
def test_an_interrupted_download_leaves_no_file(hub: Hub, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    response = _Interrupted(hub, error)
    monkeypatch.setattr(weights, "urlopen", lambda *a, **k: response)
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            weights.fetch(hub.entry, progress=False)
    else:
        with pytest.warns(PretrainedWeightsMissing, match="connection reset by peer"):
            assert load_pretrained(_fresh(), "tiny", "auto") is False
    assert response.calls == 2 and not hub.cached.exists() and hub.partials() == []


def test_a_download_with_the_wrong_hash_is_refused(hub: Hub) -> None:
    _damage(hub.source)  # the "server" now serves other bytes under the same name
    with pytest.raises(DownloadError) as err:
        weights.fetch(hub.entry, progress=False)
    digest = hashlib.sha256(hub.source.read_bytes()).hexdigest()
    assert digest in str(err.value) and hub.entry.sha256 in str(err.value)
    assert not hub.cached.exists() and hub.partials() == []


def test_concurrent_downloads_each_leave_a_whole_verified_file(hub: Hub) -> None:
    errors: list[BaseException] = []

    def download() -> None:
        try:
            weights.fetch(hub.entry, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=download) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and weights.file_problem(hub.entry) is None and hub.partials() == []


def test_an_encoder_loads_the_verified_resnet18_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: _WeightServer
) -> None:
    """The real encoder path: a full ResNet-18 state dict, named by its hash, from the local server."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SEC2SEC_OFFLINE", raising=False)  # the suite sets it; these tests download
    state = resnet18().state_dict()
    state["layer4.1.conv2.weight"] = torch.full_like(state["layer4.1.conv2.weight"], 0.125)
    source = _named_by_hash(state, server.folder, "resnet18")
    url = f"http://127.0.0.1:{server.server_port}/{source.name}"
    monkeypatch.setitem(weights.HUB, "resnet18", _entry(source, "resnet18", "ResNet18_Weights.TEST", url))
    encoder = AudioEncoder(AudioConfig(weights="pretrained"))
    assert encoder.pretrained is True and torch.all(encoder.trunk[-1][1].conv2.weight == 0.125)
    assert (tmp_path / "torch" / "hub" / "checkpoints" / source.name).is_file()


# `sec2sec weights ...` through the CLI entry point


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["weights", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_list_download_verify(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "list")
    assert code == 0
    for text in ("tiny  (test encoder)", "Tiny_Weights.TEST_V1", hub.entry.url, str(hub.cached), "status  missing"):
        assert text in out
    code, out, _ = _cli(capsys, "verify")
    assert code == 0 and "no weight files present" in out

    code, out, err = _cli(capsys, "download")
    assert code == 0 and f"downloaded and verified: {hub.cached}" in out and hub.entry.name in err
    assert weights.file_problem(hub.entry) is None
    code, out, _ = _cli(capsys, "download", "tiny", "--quiet")
    assert code == 0 and f"already verified: {hub.cached}" in out
    code, out, _ = _cli(capsys, "list")
    assert "status  present, verified" in out
    code, out, _ = _cli(capsys, "verify")
    assert code == 0 and f"verified: {hub.cached}" in out

    _damage(hub.cached)
    code, out, err = _cli(capsys, "verify")
    assert code == 2 and "damaged (sha256 " in out
    assert "1 of 1 weight files failed verification; `sec2sec weights download tiny`" in _error_line(err)
    code, out, _ = _cli(capsys, "download", "--quiet")
    assert code == 0 and "tiny: damaged" in out and weights.file_problem(hub.entry) is None


def test_cli_download_from_a_file_brought_by_hand(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    copy = tmp_path / "usb" / "weights.pth"
    copy.parent.mkdir()
    copy.write_bytes(hub.source.read_bytes())
    code, out, _ = _cli(capsys, "download", "tiny", "--from", str(copy))
    assert code == 0 and f"installed {hub.cached}" in out
    assert hub.cached.read_bytes() == copy.read_bytes() and copy.is_file()

    hub.cached.unlink()
    _damage(copy)
    code, _, err = _cli(capsys, "download", "tiny", "--from", str(copy))
    line = _error_line(err)
    assert code == 2 and hashlib.sha256(copy.read_bytes()).hexdigest() in line and hub.entry.sha256 in line
    assert not hub.cached.exists() and hub.partials() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("download", "tiny", "other", "--from", "x.pth"), "--from installs one file: name exactly one ARCH (tiny)"),
        (("download", "tiny", "--from", "/nonexistent/x.pth"), "/nonexistent/x.pth does not exist"),
        (("download", "resnet50"), "no pretrained weight file is known for 'resnet50'; known: tiny"),
        (("download", "tiny"), "failed (URLError: [Errno -2] Name or service not known); `sec2sec weights download"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    hub: Hub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    _offline(monkeypatch)
    code, _, err = _cli(capsys, *args)
    assert code == 2 and message in _error_line(err)
    assert not hub.cached.exists()


# a server that misbehaves: every failure is the documented warning ("auto") and leaves nothing behind


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("truncate", "IncompleteRead"),
        ("too-much", "more than the"),
        ("redirect-http", "weight files are fetched over https only"),
        ("drip", "(the deadline per file)"),
    ],
)
def test_a_misbehaving_server_gives_the_warning_and_no_file(
    hub: Hub, server: _WeightServer, monkeypatch: pytest.MonkeyPatch, mode: str, reason: str
) -> None:
    server.mode = mode
    monkeypatch.setattr(weights, "DEADLINE_S", 0.5)  # the drip sends 20 bytes a second: ~300 s for this file
    started = time.monotonic()
    with pytest.warns(PretrainedWeightsMissing, match="using RANDOM encoder weights") as record:
        assert load_pretrained(_fresh(), "tiny", "auto") is False
    assert reason in str(record[0].message) and "Traceback" not in str(record[0].message)
    assert time.monotonic() - started < 30  # only a hang exceeds this
    assert not hub.cached.exists() and hub.partials() == []
    if mode == "redirect-http":  # the http URL was refused before any request went there
        assert server.requests == [f"/{hub.entry.name}"]


def test_a_redirect_to_an_allowed_url_is_followed(hub: Hub, server: _WeightServer) -> None:
    server.mode = "redirect"
    assert weights.fetch(hub.entry, progress=False) == hub.cached
    assert server.requests == [f"/{hub.entry.name}", f"/moved/{hub.entry.name}"]


def test_plain_http_is_refused_without_the_test_hook(
    hub: Hub, server: _WeightServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "_PLAIN_HTTP_HOSTS", ())
    with pytest.raises(DownloadError, match=r"refusing http URL .* weight files are fetched over https only"):
        weights.fetch(hub.entry, progress=False)
    assert server.requests == []
    monkeypatch.setattr(weights, "_PLAIN_HTTP_HOSTS", ("127.0.0.1",))
    other = HubFile("x", "X", f"http://localhost:{server.server_port}/{hub.entry.name}", hub.entry.sha256, 1_000)
    with pytest.raises(DownloadError, match="https only"):  # the hook opens 127.0.0.1 alone
        weights.fetch(other, progress=False)


def test_a_size_announced_wrong_is_refused_before_reading(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = HubFile("tiny", "T", hub.entry.url, hub.entry.sha256, hub.entry.size + 1)
    monkeypatch.setattr(weights, "HUB", {"tiny": wrong})
    with pytest.raises(DownloadError, match=f"the server announces {hub.entry.size} bytes; .* has {wrong.size}"):
        weights.fetch(wrong, progress=False)


def test_the_bytes_hashed_are_the_bytes_loaded(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verified file is read once and loaded from memory: no second open by path that could see other
    bytes (a file replaced between the check and the load)."""
    hub.cached.parent.mkdir(parents=True)
    hub.cached.write_bytes(hub.source.read_bytes())
    loaded: list[object] = []
    real_load = torch.load

    def spy(source: object, *args: object, **kwargs: object) -> object:
        loaded.append(source)
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = _fresh()
    assert load_pretrained(model, "tiny", "pretrained") is True and _holds(model, hub.state)
    (source,) = loaded
    assert isinstance(source, io.BytesIO) and source.getvalue() == hub.source.read_bytes()


def test_a_copy_brought_by_hand_of_another_size_is_refused_before_reading(hub: Hub, tmp_path: Path) -> None:
    copy = tmp_path / "usb" / "weights.pth"
    copy.parent.mkdir()
    copy.write_bytes(hub.source.read_bytes() + b"extra")
    with pytest.raises(DownloadError, match=f"the file has {hub.entry.size + 5} bytes; .* has {hub.entry.size}"):
        weights.install(hub.entry, copy)
    assert not hub.cached.exists() and hub.partials() == []


def test_sec2sec_offline_turns_downloads_off(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEC2SEC_OFFLINE=1 (the suite's own setting, and a lab's without a network): the cache only; nothing is
    requested, and the warning says downloads are off."""
    monkeypatch.setenv("SEC2SEC_OFFLINE", "1")
    requests: list[str] = []
    monkeypatch.setattr(weights, "urlopen", lambda url, timeout: requests.append(url))
    with pytest.warns(PretrainedWeightsMissing, match=r"\(downloads are off\)"):
        assert load_pretrained(_fresh(), "tiny", "auto") is False
    assert requests == [] and not hub.cached.exists()
