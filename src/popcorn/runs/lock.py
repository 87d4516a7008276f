"""One writer per folder: a lock file (``.lock``) that holds its writer's process id.

``fcntl.flock`` ties the lock to an open file, so the kernel drops it the moment its process
ends, even by SIGKILL: a lock file left behind by a dead process is simply locked by the next
one, and the pid inside only names the holder in messages. The holder deletes the file as it
lets go, so finished folders hold no lock file; a waiter that then wins the deleted file sees
that the name now points elsewhere (or nowhere) and tries again, so two processes never hold
two files of the same name.

Locks are reentrant within a thread, so code that holds a folder's lock may call code that
takes it again; other threads of the same process wait like other processes do.

A folder can come from anyone (a shared store, an unpacked archive), so the lock file is opened
without following a link and is written only once it is known to be a regular file with no other
name: a planted ``.lock`` (a link to a file worth keeping, a FIFO, a folder, a hard link) is a
one-line error asking to remove it, never a file truncated elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from popcorn.errors import PopcornError

LOCK_FILE = ".lock"
WAIT_SECONDS = 1800.0
"""How long a writer waits for another one by default: longer than a slow local render."""
_POLL_SECONDS = 0.1
_BUSY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
# No link followed, and no wait on a FIFO or a device that someone named ``.lock``.
_OPEN_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | os.O_CLOEXEC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
)
_PID_BYTES = 32
_log = logging.getLogger(__name__)


class LockedError(PopcornError):
    """Another live process holds the lock (``pid``, when it could be read)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass
class _Held:
    path: Path
    fd: int
    thread: int
    depth: int = 1


_held: dict[Path, _Held] = {}
_held_lock = threading.Lock()


def holder(lock_file: Path) -> int | None:
    """The pid written in ``lock_file`` by its holder, if any (it may have ended since)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(lock_file, flags)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = os.read(fd, _PID_BYTES).decode("ascii").strip()
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and len(text) < 20 else None


@contextmanager
def folder_lock(
    folder: Path,
    what: str,
    *,
    wait: float = WAIT_SECONDS,
    error: type[PopcornError] = PopcornError,
    stop: threading.Event | None = None,
    on_acquire: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold ``folder``'s lock for the block, waiting up to ``wait`` seconds for another holder.

    ``what`` names the folder in messages (e.g. "run folder '/x'"). A lock file that cannot be
    created (a read-only or full disk) or that is not a regular file of its own (a link, a FIFO,
    a folder) raises ``error``; a lock still held after ``wait`` seconds (or once ``stop`` is
    set) raises :class:`LockedError` naming the holder's pid. ``on_acquire`` runs once the lock
    is won (not when this thread takes it again): no other writer is in the folder then.
    """
    path = Path(os.path.abspath(folder / LOCK_FILE))
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(path)
        if held is not None and held.thread == me:
            held.depth += 1
    if held is None or held.thread != me:
        held = _Held(path, _acquire(path, what, wait, error, stop), me)
        if on_acquire is not None:
            try:
                on_acquire()
            except BaseException:
                _release(held)
                raise
        with _held_lock:
            _held[path] = held
    try:
        yield
    finally:
        with _held_lock:
            held.depth -= 1
            last = held.depth == 0
            if last:
                del _held[path]
        if last:
            _release(held)


def _acquire(
    path: Path, what: str, wait: float, error: type[PopcornError], stop: threading.Event | None
) -> int:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        fd = _open(path, what, error)
        try:
            while not _try_lock(fd, path, what, error):
                by = _by(path)
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    waited = f" (waited {wait:.0f} s)" if wait > 0 else ""
                    raise LockedError(f"the {what} is in use by {by}{waited}", holder(path))
                if not announced:
                    _log.warning(
                        "the %s is in use by %s; waiting for it (up to %.0f s)", what, by, wait
                    )
                    announced = True
                time.sleep(_POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        if _still_named(fd, path):
            break
        os.close(fd)  # its holder deleted this file as it let go: lock the one there now
    try:
        # Checked again on the locked file: it may have been swapped since it was opened.
        _check_own(fd, path, what, error)
    except BaseException:
        os.close(fd)
        raise
    try:
        # Only for messages, so whoever waits can name the holder; a full disk that refuses
        # these few bytes is reported by the writes that follow.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass
    return fd


def _open(path: Path, what: str, error: type[PopcornError]) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as err:
        kind = _kind(path)
        if kind is not None:
            raise error(_not_regular(path, what, kind)) from None
        raise error(
            f"cannot write the {what} (its lock file): {err.strerror or err} (make it "
            "writable or free some space, then run the command again)"
        ) from None
    try:
        _check_own(fd, path, what, error)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_own(fd: int, path: Path, what: str, error: type[PopcornError]) -> None:
    """Refuse a lock file that is not a regular file, or that has another name too: writing
    the pid into it would change a file someone keeps elsewhere."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise error(_not_regular(path, what, _describe(info.st_mode)))
    if info.st_nlink > 1:
        raise error(_not_regular(path, what, f"a hard link with {info.st_nlink} names"))


def _kind(path: Path) -> str | None:
    """What ``path`` is when it is there but is not a regular file; None otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _describe(mode)


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _not_regular(path: Path, what: str, kind: str) -> str:
    return (
        f"the lock file of the {what} is {kind}, not a regular file: {str(path)!r} was not "
        "written (remove it, then run the command again)"
    )


def _try_lock(fd: int, path: Path, what: str, error: type[PopcornError]) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in _BUSY:
            return False
        raise error(f"cannot lock the {what}: {err.strerror or err}") from None
    return True


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a link to it does not)."""
    try:
        named = os.lstat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _by(path: Path) -> str:
    pid = holder(path)
    if pid == os.getpid():
        return "another thread of this process"
    return f"process {pid}" if pid else "another process"


def _release(held: _Held) -> None:
    try:
        # Deleted while still locked, so no one can have locked this file under its name; a
        # name that now points elsewhere (swapped in meanwhile) is not ours to delete.
        if _still_named(held.fd, held.path):
            held.path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(held.fd)  # closing drops the flock
