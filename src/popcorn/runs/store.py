"""Run folders: ``<out>/<slug>-<key prefix>/`` with a versioned ``manifest.json``.

Layout of a run folder (see docs/design/run-store.md)::

    manifest.json     what ran, with what, how long, how it ended (RunManifest)
    script.json       the final script (title, cover_prompt, video_prompt, flags)
    transcript.json   every attempt: messages sent, raw output, parse outcome, usage

Later stages add their own files (references, media, scores) and record them in
``manifest.files`` and ``manifest.stages``. Every file is written atomically, and a process
that writes a folder holds its lock (``.lock``, see :mod:`popcorn.runs.lock`) so that two
processes never mix their work in one folder. Reading needs no lock and writes nothing, so a
finished run can be served from a read-only store.

A store is read as untrusted: a folder that cannot be read, a manifest that is garbage (binary,
nested too deep to parse, huge, a FIFO) is a one-line :class:`RunStoreError` naming it, and
listing the store (:meth:`RunStore.scan`) skips such a folder with a note instead of failing for
all the others. Nothing is written through a run folder that is a symbolic link.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popcorn._io import atomic_write_bytes, atomic_write_json, read_json, remove_stale_temps
from popcorn.errors import RunStoreError
from popcorn.runs.keys import folder_name
from popcorn.runs.lock import WAIT_SECONDS, folder_lock
from popcorn.script import Script

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_LIMIT = 16 * 2**20
"""The largest manifest read: a real one is a few kilobytes."""
_TRACKED_PACKAGES = ("popcorn-video", "llama-cpp-python", "transformers", "torch", "httpx")

Status = Literal["running", "done", "failed"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in _TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


class RunManifest(BaseModel):
    """What one run did. Serialised as ``manifest.json``; ``schema_version`` guards readers."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    key: str
    query: str
    mode: str
    status: Status = "running"
    created_at: str = Field(default_factory=now)
    updated_at: str = Field(default_factory=now)
    llm: dict[str, Any] = Field(default_factory=dict)
    decoding: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    prompt_version: str = ""
    profile: str = "popcorn"
    """The profile whose conditions the run followed (``paper`` or ``popcorn``)."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Free labels carried from the input, e.g. the query type (abstract / concrete)."""
    versions: dict[str, str] = Field(default_factory=package_versions)
    timings: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int] = Field(default_factory=dict)
    attempts: int = 0
    error: dict[str, str] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """Role -> file name inside the run folder, e.g. ``{"script": "script.json"}``."""
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-stage records added by later stages (references, media, scores, ...)."""


class Run:
    """One run folder. Methods write atomically and keep the manifest in step."""

    def __init__(self, path: Path, manifest: RunManifest) -> None:
        self.path = path
        self.manifest = manifest
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Run:
        """The run in folder ``path``; anything wrong with it (no manifest, an unreadable or
        garbage one, one from a newer popcorn) is a one-line :class:`RunStoreError`."""
        path = Path(path)
        file = path / MANIFEST
        try:
            data = read_json(file, MANIFEST_LIMIT, follow=False)
        except (FileNotFoundError, NotADirectoryError):
            raise RunStoreError(f"{str(path)!r} is not a run folder (no {MANIFEST})") from None
        except (OSError, ValueError) as err:
            raise RunStoreError(
                f"cannot read the run folder {str(path)!r}: {MANIFEST}: {_reason(err)} "
                "(repair the folder or delete it)"
            ) from None
        found = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(found, int) or isinstance(found, bool) or found > SCHEMA_VERSION:
            raise RunStoreError(
                f"{str(file)!r} has schema version {_short(found)}; this popcorn reads up to "
                f"{SCHEMA_VERSION}: upgrade popcorn"
            )
        try:
            manifest = RunManifest.model_validate(data)
        except ValidationError as err:
            message = err.errors()[0]["msg"]
            raise RunStoreError(f"{str(file)!r} is not a valid manifest: {message}") from None
        except RecursionError:
            raise RunStoreError(
                f"{str(file)!r} is not a valid manifest: nested too deeply"
            ) from None
        return cls(path, manifest)

    @property
    def status(self) -> Status:
        return self.manifest.status

    def lock(
        self, wait: float = WAIT_SECONDS, stop: threading.Event | None = None
    ) -> AbstractContextManager[None]:
        """Hold this folder's lock while writing it; waits up to ``wait`` s for another writer.

        Reload the run (:meth:`load`) once the lock is held: the holder before may have
        changed it.
        """
        return lock_folder(self.path, wait, stop)

    def save(self, **changes: Any) -> None:
        """Apply ``changes`` to the manifest and write it."""
        with self._lock:
            for name, value in changes.items():
                setattr(self.manifest, name, value)
            self.manifest.updated_at = now()
            data = self.manifest.model_dump(mode="json")
            self._write(MANIFEST, lambda: atomic_write_json(self.path / MANIFEST, data))

    def write_json(self, role: str, name: str, obj: Any) -> Path:
        target = self._file(name)
        self._write(name, lambda: atomic_write_json(target, obj))
        self._record(role, name)
        return target

    def write_bytes(self, role: str, name: str, data: bytes) -> Path:
        target = self._file(name)
        self._write(name, lambda: atomic_write_bytes(target, data))
        self._record(role, name)
        return target

    def _write(self, name: str, write: Callable[[], None]) -> None:
        _refuse_link(self.path)
        try:
            write()
        except OSError as err:
            message = (
                f"cannot write {name} in the run folder {str(self.path)!r}: "
                f"{err.strerror or err} (make the folder writable or free some space, then run "
                "the command again)"
            )
            raise RunStoreError(message + self._after_failed_write(name, err)) from None

    def _after_failed_write(self, name: str, err: OSError) -> str:
        """Mark a running run failed once one of its files cannot be written (a full disk), so
        it does not stay ``running`` for ever; what to add to the message."""
        if name == MANIFEST:
            if self.manifest.status == "running":
                return "; the run stays marked running and is redone on the next run"
            return ""
        if self.manifest.status != "running":
            return ""
        reason = "disk_full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "write"
        failure = {"reason": reason, "message": f"cannot write {name}: {err.strerror or err}"}
        try:
            with self._lock:
                self.manifest.status = "failed"
                self.manifest.error = failure
                self.manifest.updated_at = now()
                data = self.manifest.model_dump(mode="json")
            atomic_write_json(self.path / MANIFEST, data)
        except OSError:
            return "; the run stays marked running (its manifest could not be written either)"
        return ""

    def read_json(self, name: str) -> Any:
        return read_json(self._file(name), follow=False)

    def script(self) -> Script | None:
        name = self.manifest.files.get("script")
        if not name or not (self.path / name).is_file():
            return None
        return Script.from_dict(self.read_json(name)["script"])

    def _file(self, name: str) -> Path:
        if "/" in name or "\\" in name or name.startswith("."):
            raise RunStoreError(f"invalid file name {name!r} inside a run folder")
        return self.path / name

    def _record(self, role: str, name: str) -> None:
        with self._lock:
            self.manifest.files[role] = name


class RunStore:
    """All runs under one root folder (``--out``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()

    def path_for(self, query: str, key: str) -> Path:
        return self.root / folder_name(query, key)

    def get(self, query: str, key: str) -> Run | None:
        """The run for this job key, if its folder has a readable manifest."""
        path = self.path_for(query, key)
        if not (path / MANIFEST).is_file():
            return None
        try:
            run = Run.load(path)
        except RunStoreError:
            return None
        return run if run.manifest.key == key else None

    def lock(
        self,
        query: str,
        key: str,
        wait: float = WAIT_SECONDS,
        stop: threading.Event | None = None,
    ) -> AbstractContextManager[None]:
        """Create the folder for ``key`` if needed and hold its lock (see :meth:`Run.lock`)."""
        path = self.path_for(query, key)
        _make_folder(path)
        return lock_folder(path, wait, stop)

    def start(self, manifest: RunManifest) -> Run:
        """Create (or take over) the folder for ``manifest.key`` and mark it running.

        Call it holding the folder's :meth:`lock`, so no other process writes there meanwhile.
        """
        path = self.path_for(manifest.query, manifest.key)
        _make_folder(path)
        run = Run(path, manifest)
        run.save(status="running")
        return run

    def __iter__(self) -> Iterator[Run]:
        """The runs that can be read, oldest first (:meth:`scan` also says what was skipped)."""
        yield from self.scan()[0]

    def scan(self) -> tuple[list[Run], list[str]]:
        """The runs that can be read, oldest first, and one note for each folder skipped because
        it could not be read (naming it and why). Folders without a manifest (not runs, or one
        just being created) and hidden entries are passed over in silence."""
        runs, skipped = self.scan_folders()
        return runs, [note for _, note in skipped]

    def scan_folders(self) -> tuple[list[Run], list[tuple[Path, str]]]:
        """:meth:`scan` with the path of each skipped folder beside its note."""
        runs: list[Run] = []
        skipped: list[tuple[Path, str]] = []
        try:
            children = sorted(os.scandir(self.root), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return runs, skipped
        except OSError as err:
            raise RunStoreError(
                f"cannot read the run store {str(self.root)!r}: {err.strerror or err} (make it "
                "readable or choose another --out)"
            ) from None
        for entry in children:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            problem = _not_a_run(entry)
            if problem == "":
                continue
            if problem is not None:
                skipped.append((path, f"skipped {str(path)!r}: {problem}"))
                continue
            try:
                runs.append(Run.load(path))
            except RunStoreError as err:
                skipped.append((path, f"skipped a damaged run: {err}"))
        return sorted(runs, key=lambda r: r.manifest.created_at), skipped


@contextmanager
def lock_folder(
    path: Path, wait: float = WAIT_SECONDS, stop: threading.Event | None = None
) -> Iterator[None]:
    """The lock of the run folder ``path``; its errors are :class:`RunStoreError`.

    Whoever wins it is the folder's only writer, so it first deletes the temporary files that
    a killed writer left behind (a half-encoded ``.clip.*.mp4``).
    """
    path = Path(path)
    _refuse_link(path)
    with folder_lock(
        path,
        f"run folder {str(path)!r}",
        wait=wait,
        error=RunStoreError,
        stop=stop,
        on_acquire=lambda: _clean(path),
    ):
        yield


def _clean(path: Path) -> None:
    import logging

    removed = remove_stale_temps(path)
    if removed:
        logging.getLogger(__name__).info(
            "removed %d temporary file(s) a stopped writer left in %s", len(removed), path
        )


def _make_folder(path: Path) -> None:
    _refuse_link(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunStoreError(
            f"cannot create the run folder {str(path)!r}: {err.strerror or err} (make "
            f"{str(path.parent)!r} writable or choose another --out)"
        ) from None
    _refuse_link(path)  # made a link by someone else meanwhile


def _refuse_link(path: Path) -> None:
    """Writing through a run folder that is a link would write wherever it points."""
    if path.is_symlink():
        raise RunStoreError(
            f"the run folder {str(path)!r} is a symbolic link: popcorn writes only into real "
            "folders of the run store (remove the link, then run the command again)"
        )


def _not_a_run(entry: os.DirEntry[str]) -> str | None:
    """Why the store entry ``entry`` is skipped with a note, "" to pass it over silently, or
    None when it looks like a run folder to load."""
    try:
        if entry.is_symlink():
            if os.path.lexists(os.path.join(entry.path, MANIFEST)):
                return "it is a symbolic link, not a run folder (remove the link)"
            return ""
        if not entry.is_dir(follow_symlinks=False):
            return ""
        os.lstat(os.path.join(entry.path, MANIFEST))
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as err:
        return f"cannot read it: {err.strerror or err} (repair the folder or delete it)"
    return None


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
