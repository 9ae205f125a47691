"""Pretrained weight files as a model hub client keeps them: verified before use, downloaded atomically.

No network: the hub table is pointed at small files whose names carry their real sha256 prefix, served from a
local folder through `file://` URLs (urllib opens them as it opens https), or at a patched `urlopen`.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from sec2sec import weights
from sec2sec.cli import main
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


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """One small weight file ("tiny", a Linear(4, 3)) served from tmp_path/server; TORCH_HOME in tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in nn.Linear(4, 3).state_dict().items()}
    source = _named_by_hash(state, tmp_path / "server", "tiny")
    entry = HubFile("tiny", "Tiny_Weights.TEST_V1", source.as_uri(), "test encoder")
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
    assert audio.path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match="carries no sha256 prefix"):
        _ = HubFile("x", "X", "https://example.org/x.pth").sha256_prefix


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
    assert digest in str(err.value) and hub.entry.sha256_prefix in str(err.value)
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


def test_an_encoder_loads_the_verified_resnet18_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real encoder path: a full ResNet-18 state dict, named by its hash, from a file:// "server"."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = resnet18().state_dict()
    state["layer4.1.conv2.weight"] = torch.full_like(state["layer4.1.conv2.weight"], 0.125)
    source = _named_by_hash(state, tmp_path / "server", "resnet18")
    monkeypatch.setitem(weights.HUB, "resnet18", HubFile("resnet18", "ResNet18_Weights.TEST", source.as_uri()))
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
    assert code == 2 and hashlib.sha256(copy.read_bytes()).hexdigest() in line and hub.entry.sha256_prefix in line
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
