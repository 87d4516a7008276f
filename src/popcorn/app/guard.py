"""What crosses the app's boundary is checked here: which Host names it answers (against DNS
rebinding), which files of the run store it serves (regular files only, never through a link,
and no hard link to a file from elsewhere), and what error text it sends (no credentials, no
absolute server paths)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from popcorn.safety import one_line, redact

Window = tuple[float, float]
"""From when to when a run wrote its files (its manifest's ``created_at`` and ``updated_at``, as
POSIX times)."""

_ANY_ADDRESS = {"0.0.0.0", "::", ""}
# Clocks and file systems round times: a file written in the run's first or last moment may
# carry a time a little outside the manifest's.
_WINDOW_SLACK = 2.0
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A path that starts a word: not the tail of a URL (``http://h/x``) or of another path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def allowed_hosts(bound: str) -> frozenset[str] | None:
    """The Host names to answer when listening on ``bound``; None means any (``0.0.0.0``)."""
    host = bound.strip().strip("[]").lower()
    if host in _ANY_ADDRESS:
        return None
    names = {host}
    if host == "localhost" or _is_loopback(host):
        names.update(_LOOPBACK_NAMES)
    return frozenset(names)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: ``example.org:8765`` -> ``example.org``, ``[::1]:80`` ->
    ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def public_text(text: object, paths: Iterable[Path]) -> str:
    """``text`` fit to send to a browser: one line, credentials redacted, the server's own
    folders (``paths``: the run store first) and any other absolute path cut to the last part."""
    value = redact(one_line(text))
    # Longest first, so a corpus inside the run store is not cut at the store's prefix.
    roots = sorted({str(p) for p in paths if str(p) not in ("", "/")}, key=len, reverse=True)
    for root in roots:
        value = value.replace(root + os.sep, "").replace(root, Path(root).name)
    return _ABSOLUTE_PATH.sub(r"\1", value)


def run_folder(store: Path, name: str) -> Path | None:
    """The run folder ``name`` directly inside ``store``, or None when it is missing, is a link
    or has no regular ``manifest.json``."""
    folder = store / name
    try:
        if folder.is_symlink() or not folder.is_dir():
            return None
        if folder.resolve().parent != store.resolve():
            return None
    except OSError:
        return None
    return folder if _inside(folder, "manifest.json") is not None else None


def regular_file(folder: Path, name: str, written: Window | None = None) -> Path | None:
    """``folder/name`` when it is a regular file (not a link) directly inside ``folder`` that
    the run wrote: its only name, or one whose last change falls within ``written``.

    A hard link is the same file under a second name, so a name planted in a run folder could
    serve any file of the same file system; a file the run wrote itself and someone linked
    elsewhere afterwards (a kept copy) is still the run's.
    """
    path = _inside(folder, name)
    if path is None:
        return None
    try:
        info = path.lstat()
    except OSError:
        return None
    return path if servable(info, written) else None


def servable(info: os.stat_result, written: Window | None) -> bool:
    """Whether a file with status ``info`` is the run's own (see :func:`regular_file`)."""
    if not stat.S_ISREG(info.st_mode):
        return False
    if info.st_nlink <= 1:
        return True
    if written is None:
        return False
    return written[0] - _WINDOW_SLACK <= info.st_mtime <= written[1] + _WINDOW_SLACK


def _inside(folder: Path, name: str) -> Path | None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    path = folder / name
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        if path.resolve().parent != folder.resolve():
            return None
    except OSError:
        return None
    return path


def read_regular(path: Path, written: Window | None = None) -> bytes:
    """The bytes of ``path``, refusing a link or another name swapped in since it was checked
    (``O_NOFOLLOW``, then :func:`servable` on what was opened)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not servable(os.fstat(handle.fileno()), written):
            raise OSError(f"{path.name} is not a file of this run")
        return handle.read()
