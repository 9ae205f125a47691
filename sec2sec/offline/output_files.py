"""Files the offline commands write for users (`evaluate --out`, `compare`'s tables, `unreadable.tsv`,
`metrics.csv`): checked before the work that fills them, and written whole or not at all.

A file is written to a temporary file in its own folder and renamed over the old one (`os.replace`), so a
crash, a full disk or a reader at the wrong moment sees the old file or the new one, never half of either.
JSON holds no NaN or Infinity (which strict readers refuse): a number that is not finite is written as null,
and the writer says why beside it where it knows (see `evaluate`). sec2sec cannot use the monitor's output
checks (`monitor` imports `sec2sec`, never the other way), so the few checks these files need live here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def unwritable_reason(exc: OSError, verb: str = "write it") -> str:
    """Why an OS error stops a file being written, and the fix, in words (`verb`: what the user does, "write it"
    here; the monitor's recorders say "record")."""
    return {
        errno.ENOSPC: f"the disk is full; free some space or {verb} somewhere else",
        errno.EDQUOT: f"the disk quota is exhausted; free some space or {verb} somewhere else",
        errno.EROFS: f"the file system is read-only; {verb} into a writable folder",
        errno.EACCES: f"permission denied; {verb} into a folder you can write to",
        errno.EPERM: f"permission denied; {verb} into a folder you can write to",
        errno.EISDIR: "it is a folder; give a file name inside it",
    }.get(exc.errno or 0, f"{exc.strerror or exc}; {verb} somewhere else")


def _unwritable(option: str, path: Path, exc: OSError) -> str:
    return f"{option} {path}: cannot be written: {unwritable_reason(exc)}"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_file(path: str | Path, option: str, keep: Sequence[tuple[str, str | Path]] = ()) -> Path:
    """Refuse, before any work (ValueError, one line naming `option`, the path and the fix), a file that cannot
    be written by replacing it: its folder does not exist, it names a folder, it is one of the inputs `keep`
    ((option, path) pairs the run reads), or its folder takes no new file (probed with an empty temporary file,
    removed at once). What `path` holds now is left untouched."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(
            f"{option} {path}: the folder {path.parent} does not exist; create it (mkdir -p {path.parent}) or "
            "write the file somewhere else"
        )
    if path.is_dir():
        raise ValueError(f"{option} {path}: it is a folder; give a file name inside it")
    for other, input_path in keep:
        if _same_file(path, Path(input_path)):
            raise ValueError(f"{option} {path} is the file given as {other}, which it would replace; give another name")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        raise ValueError(_unwritable(option, path, exc)) from None
    os.close(handle)
    Path(probe).unlink(missing_ok=True)
    return path


def json_safe(value: Any) -> Any:
    """`value` with every float that is not finite (NaN, +-inf) replaced by None, through dicts, lists and
    tuples (tuples become lists), numpy scalars made Python numbers; what json.dumps(allow_nan=False) takes."""
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy or torch scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def replace_text(path: str | Path, text: str, option: str = "") -> None:
    """Write `text` (UTF-8) to `path` whole or not at all: a new temporary file in the same folder (mode 0666
    less the umask, as any new file), flushed to the disk, then renamed over `path`; on an error the temporary
    file is removed, `path` is as it was, and an OS error (a full disk) is a ValueError naming `option` and
    `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(_unwritable(option or "output", path, exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_json(path: str | Path, payload: Any, option: str = "") -> None:
    """`payload` as strict JSON (non-finite numbers as null, see `json_safe`), written by `replace_text`."""
    replace_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n", option)
