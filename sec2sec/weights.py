"""Pretrained encoder weights: torchvision's weight files in the torch hub cache, checked before use.

Each architecture has one file of torchvision's (`HUB`): its URL, its size and full sha256 (`KNOWN`: the
name's 8 hex digits are a 32-bit check only), and its place in the torch hub cache,
`$TORCH_HOME/hub/checkpoints/<file name of the URL>`. A cached file is read into memory once, hashed, and
loaded from those same bytes only when the whole sha256 matches. A missing or damaged file is downloaded again
(with a progress bar on stderr) into a temporary name in the same folder, checked, then renamed, so an
interrupted or concurrent download never leaves half a file under the final name. Downloads use https only
(redirects included), stop at the known size, and end after `DEADLINE_S` whatever the server does; every
network failure becomes the documented warning (`auto`) or error (`pretrained`).

Nothing here fails silently: weights that cannot be had under `weights = "pretrained"` are an error naming the
file and the way out; under `weights = "auto"` a warning, and the model records `pretrained = False` so
checkpoints and every output carry the fact. `sec2sec weights` lists, downloads and verifies the files.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import sys
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, WeightsEnum
from torchvision.models.video import R2Plus1D_18_Weights

if TYPE_CHECKING:
    from rich.progress import Progress

BLOCK = 1 << 20  # bytes per read when hashing or copying
TIMEOUT_S = 30.0  # per socket operation of a download: an unreachable host fails instead of hanging
DEADLINE_S = 900.0  # a whole file: 126 MB at 140 kB/s; a server that drips bytes fails instead of stalling start-up
# Plain http is refused, except to hosts named here; only tests put 127.0.0.1 here (nothing a user gives reaches it).
_PLAIN_HTTP_HOSTS: tuple[str, ...] = ()
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's HASH_REGEX, with at least 8 digits

OFFLINE_ENV = "SEC2SEC_OFFLINE"  # "1": the hub cache only, never a download


class WeightsError(ValueError):
    """Pretrained weights that were asked for and could not be loaded."""


class DownloadError(WeightsError):
    """A weight file that could not be downloaded or installed; `reason` says why in a few words."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PretrainedWeightsMissing(UserWarning):
    """`weights = "auto"` found no verified weights and built the encoder with random weights."""


ENUMS: dict[str, WeightsEnum] = {
    "r2plus1d_18": R2Plus1D_18_Weights.KINETICS400_V1,
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
}

# Full sha256 and size in bytes of torchvision's files (published by torchvision as the name prefix only; the
# full values, from the downloaded files, agree across several independent projects that pin them).
KNOWN: dict[str, tuple[str, int]] = {
    "r2plus1d_18": ("91a641e6c2ab531d1aca5f4321b4d802ec5c3babc15df855cdb6e39c6a1107c8", 126_162_996),
    "resnet18": ("f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46_830_571),
}

USED_BY = {
    "r2plus1d_18": "video encoder r2plus1d_18",
    "resnet18": "audio encoder, video encoder resnet18_2d",
}


@dataclass(frozen=True)
class HubFile:
    """One pretrained weight file: where it comes from, where it goes, its full sha256 and size in bytes."""

    arch: str
    label: str  # the torchvision weight enum, for people: "ResNet18_Weights.IMAGENET1K_V1"
    url: str
    sha256: str
    size: int
    used_by: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256) or self.size < 1:
            raise WeightsError(f"{self.arch}: sha256 must be 64 hex digits and size >= 1 byte")
        if not self.sha256.startswith(self.sha256_prefix):
            raise WeightsError(f"{self.name}: its name says sha256 {self.sha256_prefix}..., the table {self.sha256}")

    @property
    def name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def sha256_prefix(self) -> str:
        match = HASH_IN_NAME.search(self.name)
        if match is None:
            raise WeightsError(f"weight file name {self.name} carries no sha256 prefix (-<8+ hex digits>.)")
        return match.group(1)

    @property
    def path(self) -> Path:
        """$TORCH_HOME/hub/checkpoints/<name>, where torchvision itself would look (read at each call)."""
        return cache_dir() / self.name


def cache_dir() -> Path:
    """torch.hub's folder of weight files, $TORCH_HOME/hub/checkpoints (TORCH_HOME is read at each call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


HUB: dict[str, HubFile] = {
    arch: HubFile(arch, f"{type(enum).__name__}.{enum.name}", enum.url, *KNOWN[arch], USED_BY.get(arch, ""))
    for arch, enum in ENUMS.items()
}


def hub_file(arch: str) -> HubFile:
    try:
        return HUB[arch]
    except KeyError:
        raise WeightsError(f"no pretrained weight file is known for {arch!r}; known: {', '.join(HUB)}") from None


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 1 MB blocks (the 120 MB R(2+1)D file takes ~0.1 s from the page cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


# Verification is not cached (no size+mtime sidecar). Measured on this 2-core machine: hashing the 120 MB
# R(2+1)D file takes ~0.10 s (torch.load of it ~0.12 s, loading it into the model ~0.38 s; ResNet-18: 0.05 s of
# 0.17 s), and a size+mtime match proves nothing about the bytes (bit rot, an in-place rewrite, `touch -r`, a
# copy that keeps times), so a sidecar would buy ~0.1 s per encoder at the price of the guarantee.
def verified_bytes(hub: HubFile) -> tuple[bytes | None, str | None]:
    """(the cached file's bytes, None) when its size and full sha256 match; else (None, what is wrong). The
    file is read once: what was hashed is what gets loaded (no second open by path)."""
    path = hub.path
    if not path.is_file():
        return None, "missing"
    try:
        with open(path, "rb") as f:
            data = f.read(hub.size + 1)
    except OSError as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc.strerror or exc})"
    if len(data) != hub.size:
        got = f"more than {hub.size}" if len(data) > hub.size else str(len(data))
        return None, f"damaged ({got} bytes, expected {hub.size})"
    digest = hashlib.sha256(data).hexdigest()
    if digest != hub.sha256:
        return None, f"damaged (sha256 {digest[:16]}..., expected {hub.sha256[:16]}...)"
    return data, None


def file_problem(hub: HubFile) -> str | None:
    """None when the cached file exists with its known size and sha256; else what is wrong, in a few words."""
    return verified_bytes(hub)[1]


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed URL (https), so a download never continues in the clear."""

    def redirect_request(
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> Request | None:
        _check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    loopback_test = parsed.scheme == "http" and parsed.hostname == "127.0.0.1" and "127.0.0.1" in _PLAIN_HTTP_HOSTS
    if parsed.scheme == "https" or loopback_test:
        return
    raise URLError(f"refusing {parsed.scheme or 'a relative'} URL {url}: weight files are fetched over https only")


def urlopen(url: str, timeout: float) -> Any:
    """GET `url` over https (redirects too, each checked), with `timeout` per socket operation."""
    _check_url(url)
    opener = urllib.request.build_opener(_HttpsOnlyRedirects)
    return opener.open(Request(url, headers={"User-Agent": "torch.hub"}), timeout=timeout)


def _open_source(hub: HubFile, source: Path | None) -> tuple[BinaryIO, int | None]:
    """(stream, size in bytes or None): the file brought by hand, or a download of hub.url."""
    if source is not None:
        return open(source, "rb"), source.stat().st_size
    response = urlopen(hub.url, timeout=min(TIMEOUT_S, DEADLINE_S))
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def _progress(enabled: bool, total: int | None, name: str) -> Progress | None:
    """A rich progress bar on stderr (imported only when a download happens), or None."""
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
    )
    progress.add_task(name, total=total)
    return progress


def _copy(stream: BinaryIO, out: BinaryIO, hub: HubFile, digest: hashlib._Hash, bar: Progress | None) -> None:
    """Stream -> out, hashing on the way; at most `hub.size` bytes, within `DEADLINE_S` (checked after every
    read, and each read returns as soon as some bytes came, so a server that drips is caught)."""
    deadline, copied = time.monotonic() + DEADLINE_S, 0
    read = getattr(stream, "read1", stream.read)
    while block := read(BLOCK):
        copied += len(block)
        if copied > hub.size:
            raise ValueError(f"more than the {hub.size} bytes {hub.name} has")
        out.write(block)
        digest.update(block)
        if bar is not None:
            bar.advance(bar.task_ids[0], len(block))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{copied} of {hub.size} bytes after {DEADLINE_S:g} s (the deadline per file)")
    if copied != hub.size:
        raise ValueError(f"{copied} of {hub.size} bytes arrived (the transfer ended early)")


def fetch(hub: HubFile, *, source: Path | None = None, progress: bool = True) -> Path:
    """Put `hub`'s file at `hub.path`: downloaded from its URL, or copied from `source` (a copy brought by hand).

    The bytes go to a temporary file in the same folder and are hashed on the way; only a file of the known
    size and sha256 is renamed (atomically) to the final name. DownloadError (one line) when that fails, for
    any network error (refused, reset, truncated, timed out, redirected to http, too long).
    """
    dest = hub.path
    origin = str(source) if source is not None else hub.url
    fix = f"`sec2sec weights download {hub.arch} --from FILE` installs a copy of {hub.url} brought by hand"
    tmp: Path | None = None
    try:
        if source is not None and not source.is_file():
            raise FileNotFoundError(f"{source} does not exist")
        dest.parent.mkdir(parents=True, exist_ok=True)
        stream, total = _open_source(hub, source)
        with stream:
            if total is not None and total != hub.size:
                said = "the server announces" if source is None else "the file has"
                raise ValueError(f"{said} {total} bytes; {hub.name} has {hub.size}")
            # a fresh name per download, in the same folder (so the rename is atomic), with the usual permissions
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
            digest = hashlib.sha256()
            bar = _progress(progress, total, dest.name)
            with open(tmp, "xb") as out:
                if bar is not None:
                    bar.start()
                try:
                    _copy(stream, out, hub, digest, bar)
                finally:
                    if bar is not None:
                        bar.stop()
                out.flush()
                os.fsync(out.fileno())
        if digest.hexdigest() != hub.sha256:
            reason = f"its sha256 is {digest.hexdigest()}, but {dest.name} must have {hub.sha256}"
            if source is not None:
                raise DownloadError(f"{origin}: {reason}; it is not torchvision's {hub.label} file ({hub.url})", reason)
            raise DownloadError(f"{origin}: {reason}; the download is damaged or not {hub.label}; {fix}", reason)
        os.replace(tmp, dest)
        tmp = None
        return dest
    except DownloadError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts: OSErrors
        detail = exc.reason if isinstance(exc, URLError) and not isinstance(exc, HTTPError) else exc
        reason = f"{type(exc).__name__}: {detail}".splitlines()[0]
        verb = "copying" if source is not None else "downloading"
        raise DownloadError(f"{verb} {origin} to {dest} failed ({reason}); {fix}", reason) from None
    finally:
        if tmp is not None:  # failed or interrupted (KeyboardInterrupt too): no half file is left behind
            tmp.unlink(missing_ok=True)


def install(hub: HubFile, source: Path, *, progress: bool = False) -> Path:
    """Copy a weight file brought by hand into the cache; refused (naming both hashes) unless it matches the name."""
    source = source.expanduser()
    if not source.is_file():
        raise WeightsError(f"{source} does not exist; give the path of a copy of {hub.url}")
    return fetch(hub, source=source, progress=progress)


def _read_state_dict(source: Path | BinaryIO, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `source` (a file, or the verified bytes of `path`), named `path` in errors."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is reported the same way
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatched keys"
        raise WeightsError(f"weights from {source} do not fit {type(model).__name__}: {first}") from None


def load_pretrained(model: nn.Module, arch: str, mode: str, path: str = "", download: bool = True) -> bool:
    """Fill torchvision model `model` (architecture `arch`) with pretrained weights; True if it was.

    mode: "none" (random), "auto" or "pretrained": the cached file once its sha256 is verified, else (missing
    or damaged) torchvision's download, checked the same way (`download=False`: the cache only). When neither
    works, "auto" warns and returns False; "pretrained" raises WeightsError. `path` overrides mode with a local
    file, loaded as it is. SEC2SEC_OFFLINE=1 in the environment turns downloads off (labs without a network,
    and the test suite, which reaches no host but 127.0.0.1).
    """
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise WeightsError(f'weights file {file} does not exist; fix weights_path or set weights_path = ""')
        _load_into(model, _read_state_dict(file, file), str(file))
        return True
    if mode == "none":
        return False
    hub = hub_file(arch)
    file = hub.path
    data, problem = verified_bytes(hub)
    download = download and os.environ.get(OFFLINE_ENV, "") not in ("1", "true", "yes")
    if problem is not None and download:
        try:
            fetch(hub, progress=True)
        except DownloadError as exc:
            problem += f", and downloading {hub.url} failed ({exc.reason})"
        else:
            data, problem = verified_bytes(hub)
    elif problem is not None:
        problem += " (downloads are off)"
    if data is not None:
        _load_into(model, _read_state_dict(io.BytesIO(data), file), str(file))
        return True
    fix = (
        f"run `sec2sec weights download {arch}` where the network is reachable (or `--from FILE` with a copy of "
        f"{hub.url}), set weights_path to a local copy"
    )
    if mode == "auto":
        warnings.warn(
            f"no verified pretrained {arch} weights at {file}: {problem}; using RANDOM encoder weights (outputs "
            f'are flagged pretrained=false). Fix: {fix}, or set weights = "none" to silence this',
            PretrainedWeightsMissing,
            stacklevel=2,
        )
        return False
    raise WeightsError(
        f'no verified pretrained {arch} weights at {file}: {problem}. Fix: {fix}, or set weights = "none" to '
        f"run without them"
    )
