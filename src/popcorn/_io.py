"""Atomic file writes: a reader sees the old file or the new one, never half of one; and
bounded reads of files that anyone may have planted."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
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


READ_LIMIT = 64 * 2**20
"""The most bytes :func:`read_json` reads by default: far above any file Popcorn writes, far
below what would exhaust memory once parsed."""

# The temporary names of atomic_write_bytes (".NAME.XXXXXXXX.tmp") and of the media writers
# (".STEM.XXXXXXXX.mp4" / ".png"): mkstemp's eight random characters between two dots.
_TEMP_NAME = re.compile(r"\.[^/]+\.[a-z0-9_]{8}\.(?:tmp|mp4|png)")


def read_bytes(path: Path, limit: int = READ_LIMIT, *, follow: bool = True) -> bytes:
    """The bytes of the regular file ``path``, refusing anything else: a FIFO or a device (which
    would block or never end), a file over ``limit`` bytes, and with ``follow=False`` a symbolic
    link. Raises ``OSError`` when it cannot be opened, ``ValueError`` for what it refuses."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow and os.path.islink(path):
            raise ValueError("it is a symbolic link, not a file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"it is {info.st_size} bytes, more than the {limit} read")
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise ValueError(f"it is more than the {limit} bytes read")
    return data


def read_json(path: Path, limit: int = READ_LIMIT, *, follow: bool = True) -> Any:
    """The JSON in ``path`` (see :func:`read_bytes`). Whatever is wrong with the file (bytes
    that are not UTF-8, nesting too deep to parse, too big, not a file) is a ``ValueError`` or
    an ``OSError`` with a one-line message."""
    text = read_bytes(path, limit, follow=follow).decode("utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its JSON is nested too deeply to read") from None


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of the temporary names Popcorn's atomic writers use."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: Path) -> list[str]:
    """Delete the temporary files a killed writer left in ``folder``; returns their names.

    Call it only while holding the folder's lock: then no writer of ours is at work there.
    Only regular files with our temporary names go, and a link is never followed.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue  # not ours to fight over: the next write reports a real problem
    return removed
