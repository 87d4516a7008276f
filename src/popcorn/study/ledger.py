"""The job ledger: one SQLite database (WAL mode) per study, one row per job.

A job moves through the stages ``script -> media -> score -> done``; ``stage`` is the next one
to do and ``status`` says whether it is ``pending``, ``running`` or ``failed`` (``done`` when
the job is finished). Each stage's outcome is committed in one transaction after its artifacts
were written atomically, so a study killed at any moment (even SIGKILL) resumes from the
ledger: a job caught ``running`` goes back to ``pending`` at the same stage, and the stage's
own cache (the run store for scripts, the media keys for clips) makes redoing it free.
See docs/design/study-ledger.md.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError, UsageError
from popcorn.study.grid import Job

STAGES = ("script", "media", "score", "done")
_MIGRATIONS = [
    """
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        query_set TEXT NOT NULL,
        query TEXT NOT NULL,
        tags TEXT NOT NULL,
        llm TEXT NOT NULL,
        mode TEXT NOT NULL,
        refs INTEGER NOT NULL,
        categories INTEGER NOT NULL,
        video TEXT NOT NULL,
        cover TEXT NOT NULL,
        seed INTEGER NOT NULL,
        stage TEXT NOT NULL DEFAULT 'script',
        status TEXT NOT NULL DEFAULT 'pending',
        failed_stage TEXT,
        error TEXT,
        run_dir TEXT,
        title TEXT,
        score REAL,
        text_only REAL,
        preview INTEGER,
        score_by TEXT,
        timings TEXT NOT NULL DEFAULT '{}',
        updated_at TEXT NOT NULL
    );
    CREATE INDEX jobs_stage ON jobs (stage, status);
    """,
    # 2: best-of-N jobs (candidates > 1).
    "ALTER TABLE jobs ADD COLUMN candidates INTEGER NOT NULL DEFAULT 1",
    # 3: the profile a job runs under (jobs before profiles ran Popcorn's own conditions); the
    # folder holding a job's clip and cover when its run is shared by several generator pairs;
    # the machine-readable reason a job failed (e.g. no_json), for the report's counts.
    """
    ALTER TABLE jobs ADD COLUMN profile TEXT NOT NULL DEFAULT 'popcorn';
    ALTER TABLE jobs ADD COLUMN media_dir TEXT;
    ALTER TABLE jobs ADD COLUMN reason TEXT
    """,
]
_FIX = (
    "move it away and run 'popcorn study run' again to start a new ledger (the run store keeps "
    "finished scripts and media, so they are not made again)"
)
_NO_SPACE = ("SQLITE_FULL", "SQLITE_IOERR")
_READ_ONLY = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


@cache
def _columns() -> frozenset[str]:
    """Every column the migrations make: a ledger lacking one is not one this popcorn wrote."""
    with closing(sqlite3.connect(":memory:")) as db:
        for script in _MIGRATIONS:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
        return frozenset(str(row[1]) for row in db.execute("PRAGMA table_info(jobs)"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Row:
    """A ledger row as plain data."""

    data: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.data[name]


class Ledger:
    """Only the process that runs the study writes; readers (``study status``) may look on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(
                f"cannot create the study folder {str(path.parent)!r}: {err.strerror or err} "
                "(make its parent writable, then run the command again)"
            ) from None
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as err:
            raise UsageError(f"cannot open the study ledger {str(path)!r}: {err}") from None
        try:
            self.db.row_factory = sqlite3.Row
            version = self._refuse_foreign()  # before anything writes to the file
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(version)
            self._check_schema()
        except PopcornError:
            self.db.close()
            raise
        except sqlite3.Error as err:
            self.db.close()
            raise UsageError(self._problem("open", err)) from None

    def close(self) -> None:
        self.db.close()

    def _refuse_foreign(self) -> int:
        """The ledger's schema version, once it is known to be a ledger (or empty): a database
        of something else is refused before it is changed in any way."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        tables = self._tables()
        if version == 0 and tables:
            raise UsageError(
                f"{str(self.path)!r} is not a popcorn study ledger (a database with other "
                f"tables and no ledger version): {_FIX}"
            )
        if version > 0 and "jobs" not in tables:
            raise UsageError(
                f"{str(self.path)!r} is not a popcorn study ledger (no table 'jobs'): it was "
                f"damaged or made by something else; {_FIX}"
            )
        if version > len(_MIGRATIONS):
            raise UsageError(f"{str(self.path)!r} was written by a newer popcorn: upgrade")
        return version

    def _migrate(self, version: int) -> None:
        for number, script in enumerate(_MIGRATIONS[version:], version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def _tables(self) -> set[str]:
        rows = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return {str(row[0]) for row in rows}

    def _check_schema(self) -> None:
        """Refuse a ledger whose ``jobs`` table lacks columns this popcorn writes (one edited,
        or a database of something else that happens to carry our version number)."""
        found = {str(row[1]) for row in self.db.execute("PRAGMA table_info(jobs)")}
        missing = sorted(_columns() - found)
        if missing:
            what = "no table 'jobs'" if not found else f"no column {', '.join(missing[:5])}"
            raise UsageError(
                f"{str(self.path)!r} is not a popcorn study ledger ({what}): it was damaged or "
                f"made by something else; {_FIX}"
            )

    def _problem(self, doing: str, err: sqlite3.Error) -> str:
        """The one-line reason ``err`` stopped the ledger from being ``doing`` (open, write),
        with the fix that suits it: space only for a full disk."""
        name = getattr(err, "sqlite_errorname", "") or ""
        where = f"cannot {doing} the study ledger {str(self.path)!r}: {err}"
        if name.startswith(_NO_SPACE):
            return (
                f"{where} (free some space and run 'popcorn study run' again: finished jobs "
                "are kept)"
            )
        if name.startswith(_READ_ONLY):
            return f"{where} (make it and its folder writable, then run the command again)"
        if name.startswith(_BUSY):
            return (
                f"{where} (another process holds it: wait for it to finish, then run the "
                "command again)"
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return f"{where} (it is not a popcorn study ledger, or it is damaged: {_FIX})"
        return f"{where} (its tables are not the ones this popcorn writes: {_FIX})"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One all-or-nothing change; a ledger that cannot be written (a full disk, a locked
        file, a schema that is not ours) is a one-line error saying which and what to do, and
        the last committed state stays as it was."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as err:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise PopcornError(self._problem("write", err)) from None

    # --- writing ------------------------------------------------------------------------------

    def add(self, jobs: Iterable[Job]) -> int:
        """Insert jobs not yet in the ledger; returns how many were new."""
        before = self.count()
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO jobs (key, query_set, query, tags, llm, mode, refs, "
                "categories, video, cover, seed, candidates, profile, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        j.key,
                        j.query_set,
                        j.query,
                        json.dumps(dict(j.tags)),
                        j.llm,
                        j.mode.name,
                        j.mode.refs,
                        j.mode.categories,
                        j.video,
                        j.cover,
                        j.seed,
                        j.candidates,
                        j.profile,
                        _now(),
                    )
                    for j in jobs
                ],
            )
        return self.count() - before

    def recover(self) -> int:
        """Jobs left ``running`` by a process that died go back to ``pending``."""
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE jobs SET status='pending', updated_at=? WHERE status='running'", (_now(),)
            )
        return cursor.rowcount

    def retry_failed(self) -> int:
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE jobs SET status='pending', error=NULL, failed_stage=NULL, reason=NULL, "
                "updated_at=? WHERE status='failed'",
                (_now(),),
            )
        return cursor.rowcount

    def rescore(self, keys: list[str], scorer: str | None) -> int:
        """Finished jobs scored by another predictor (or none) go back to the score stage."""
        if scorer is None:
            return 0
        changed = 0
        with self.transaction():
            for key in keys:
                cursor = self.db.execute(
                    "UPDATE jobs SET stage='score', status='pending', updated_at=? WHERE key=? "
                    "AND stage='done' AND status='done' AND video!='none' "
                    "AND (score_by IS NULL OR score_by!=?)",
                    (_now(), key, scorer),
                )
                changed += cursor.rowcount
        return changed

    def start(self, keys: list[str]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE jobs SET status='running', updated_at=? WHERE key=?",
                [(_now(), k) for k in keys],
            )

    def finish(self, key: str, stage: str, fields: dict[str, Any], seconds: float) -> None:
        """Record ``stage`` as done for ``key`` with its results, and move to the next stage."""
        row = self.get(key)
        timings = {**json.loads(row["timings"]), stage: round(seconds, 4)}
        following = STAGES[STAGES.index(stage) + 1]
        status = "done" if following == "done" else "pending"
        columns = {**fields, "stage": following, "status": status, "timings": json.dumps(timings)}
        self._update(key, columns)

    def skip_to(self, key: str, stage: str) -> None:
        self._update(key, {"stage": stage, "status": "done" if stage == "done" else "pending"})

    def fail(self, key: str, stage: str, error: str, reason: str = "") -> None:
        """Record that ``stage`` failed for ``key``; ``reason`` is a short tag (e.g. the parse
        failure's ``no_json``) that the report counts failures by."""
        self._update(
            key,
            {
                "status": "failed",
                "failed_stage": stage,
                "error": error[:2000],
                "reason": reason[:100] or None,
            },
        )

    def _update(self, key: str, columns: dict[str, Any]) -> None:
        columns = {**columns, "updated_at": _now()}
        assignments = ", ".join(f"{name}=?" for name in columns)
        with self.transaction():
            self.db.execute(f"UPDATE jobs SET {assignments} WHERE key=?", (*columns.values(), key))

    # --- reading ------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def get(self, key: str) -> Row:
        found = self.db.execute("SELECT * FROM jobs WHERE key=?", (key,)).fetchone()
        if found is None:
            raise KeyError(key)
        return Row(dict(found))

    def rows(self, keys: Iterable[str] | None = None) -> list[Row]:
        everything = [Row(dict(r)) for r in self.db.execute("SELECT * FROM jobs ORDER BY rowid")]
        if keys is None:
            return everything
        wanted = set(keys)
        return [r for r in everything if r["key"] in wanted]

    def ready(self, stage: str, keys: Iterable[str]) -> list[Row]:
        """Jobs of ``keys`` whose next stage is ``stage`` and that are pending."""
        return [r for r in self.rows(keys) if r["stage"] == stage and r["status"] == "pending"]
