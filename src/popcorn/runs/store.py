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
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from popcorn._io import atomic_write_bytes, atomic_write_json, read_json
from popcorn.errors import RunStoreError
from popcorn.runs.keys import folder_name
from popcorn.runs.lock import WAIT_SECONDS, folder_lock
from popcorn.script import Script

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
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
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise RunStoreError(f"{str(path)!r} is not a run folder (no {MANIFEST})")
        try:
            data = read_json(file)
        except (OSError, ValueError) as err:
            raise RunStoreError(f"cannot read {str(file)!r}: {err}") from None
        found = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(found, int) or found > SCHEMA_VERSION:
            raise RunStoreError(
                f"{str(file)!r} has schema version {found!r}; this popcorn reads up to "
                f"{SCHEMA_VERSION}: upgrade popcorn"
            )
        try:
            manifest = RunManifest.model_validate(data)
        except ValidationError as err:
            message = err.errors()[0]["msg"]
            raise RunStoreError(f"{str(file)!r} is not a valid manifest: {message}") from None
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
        try:
            write()
        except OSError as err:
            raise RunStoreError(
                f"cannot write {name} in the run folder {str(self.path)!r}: "
                f"{err.strerror or err} (make the folder writable or free some space, then run "
                "the command again)"
            ) from None

    def read_json(self, name: str) -> Any:
        return read_json(self._file(name))

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
        if not self.root.is_dir():
            return
        runs = []
        for child in self.root.iterdir():
            if (child / MANIFEST).is_file():
                try:
                    runs.append(Run.load(child))
                except RunStoreError:
                    continue
        yield from sorted(runs, key=lambda r: r.manifest.created_at)


def lock_folder(
    path: Path, wait: float = WAIT_SECONDS, stop: threading.Event | None = None
) -> AbstractContextManager[None]:
    """The lock of the run folder ``path``; its errors are :class:`RunStoreError`."""
    return folder_lock(path, f"run folder {str(path)!r}", wait=wait, error=RunStoreError, stop=stop)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunStoreError(
            f"cannot create the run folder {str(path)!r}: {err.strerror or err} (make "
            f"{str(path.parent)!r} writable or choose another --out)"
        ) from None
