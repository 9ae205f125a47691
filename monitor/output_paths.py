"""Output paths, checked before a run opens any of them: each must be writable (probed without harming what
it holds: an old session stays intact until the run starts writing), no two outputs may name one file (links
included), and the CSV's sidecar must be replaceable in its folder. Every refusal is one line naming the path
and the fix; `unwritable` words an OS error the same way for the recorders, which hit it while writing."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from monitor.session_csv import sidecar_path


def check_output_path(path: str | Path) -> Path:
    """Refuse a path whose directory does not exist or that names a directory; the message says how to fix it."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise ValueError(
            f"cannot record to {str(path)!r}: directory {str(directory)!r} does not exist; "
            f"create it first (mkdir -p {directory}) or record somewhere else"
        )
    if path.is_dir():
        raise ValueError(f"cannot record to {str(path)!r}: it is a directory; give a file name inside it")
    return path


def unwritable(path: Path, exc: OSError) -> str:
    """One line saying why `path` cannot be written and what to do."""
    reason = {
        errno.ENOSPC: "the disk is full; free some space or record somewhere else",
        errno.EDQUOT: "the disk quota is exhausted; free some space or record somewhere else",
        errno.EROFS: "the file system is read-only; record into a writable folder",
        errno.EACCES: "permission denied; record into a folder you can write to",
        errno.EPERM: "permission denied; record into a folder you can write to",
        errno.EISDIR: "it is a directory; give a file name inside it",
    }.get(exc.errno or 0, f"{exc.strerror or exc}; record somewhere else")
    return f"cannot record to {str(path)!r}: {reason}"


def check_writable(path: str | Path) -> Path:
    """Make sure `path` can be recorded to, without harming what it holds now: an existing file is opened for
    appending (nothing written; for a device such as /dev/full one newline is tried), a new one is created,
    probed with one byte and removed. Raises ValueError (one line) when it cannot; run it before anything
    slow, so bad output paths fail at once."""
    path = check_output_path(path)
    existed = path.exists()
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if existed else os.O_CREAT | os.O_EXCL)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        raise ValueError(unwritable(path, exc)) from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if not existed or stat.S_ISCHR(os.fstat(fd).st_mode):
            os.write(fd, b"\n")
        if regular and existed:
            free = os.statvfs(path.parent)
            if free.f_bavail * free.f_frsize == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as exc:
        raise ValueError(unwritable(path, exc)) from None
    finally:
        os.close(fd)
        if not existed:
            path.unlink(missing_ok=True)
    return path


def check_replaceable(path: str | Path) -> Path:
    """Make sure a file that is written by replacing it (the sidecar: temporary file + `os.replace`) can be:
    not a directory, and its directory takes a new file (probed with a temporary file, removed at once).
    Raises ValueError (one line naming `path`)."""
    path = check_output_path(path)
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        raise ValueError(unwritable(path, exc)) from None
    os.close(handle)
    Path(probe).unlink(missing_ok=True)
    return path


def _same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name one file (the same path after resolving links, or hard links of one file)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Sequence[tuple[str, str | Path | None]], sidecar_of: str = "--csv") -> list[Path]:
    """Probe every path a run will write, before anything slow and before any file is opened for writing:
    `outputs` pairs an option with its path (None: not given); the CSV option `sidecar_of` also writes
    `<path>.json`. Two outputs naming one file are refused; each path is then checked with `check_writable`
    (the sidecar with `check_replaceable`), which leaves what exists untouched. Raises ValueError (one line
    naming the path and the fix); returns the paths checked."""
    planned: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None or path == "":
            continue
        planned.append((f"{option} {path}", Path(path)))
        if option == sidecar_of:
            planned.append((f"the sidecar of {option} {path}", sidecar_path(path)))
    for i, (what, path) in enumerate(planned):
        for other, other_path in planned[:i]:
            if _same_file(path, other_path):
                raise ValueError(
                    f"{what} and {other} are the same file {str(path)!r}; give each output its own file name"
                )
    for what, path in planned:
        (check_replaceable if what.startswith("the sidecar") else check_writable)(path)
    return [path for _, path in planned]
