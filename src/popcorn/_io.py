"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError


class WriteError(PopcornError, OSError):
    """A file could not be written: a read-only folder, a full disk, no permission.

    Still an ``OSError`` (``errno`` and ``strerror`` kept) for code that handles those, and a
    :class:`PopcornError`, so the CLI prints it as one line instead of an internal error.
    """

    def __init__(self, path: Path, err: OSError) -> None:
        OSError.__init__(self, err.errno, err.strerror or str(err), str(path))
        self.message = (
            f"cannot write {str(path)!r}: {err.strerror or err} (make {str(path.parent)!r} "
            "writable or free some space, then run the command again)"
        )

    def __str__(self) -> str:
        return self.message


_file_mode: int | None = None


def file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask). ``mkstemp`` makes its
    files 0o600, which would keep a run store from whoever else is meant to read it."""
    global _file_mode
    if _file_mode is None:
        mask = None
        try:  # read, not set: setting the umask to look at it races with other threads
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
        except (OSError, ValueError):
            pass
        if mask is None:
            mask = os.umask(0o022)
            os.umask(mask)
        _file_mode = 0o666 & ~mask
    return _file_mode


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    Raises :class:`WriteError` when the folder cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # Whatever happened (full disk, Ctrl-C), the final name keeps its previous content.
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(path, err) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)
