"""The reference corpus: real micro-videos with their popularity, imported from user files.

The importers (:mod:`popcorn.retrieval.importers`) read MicroLens-100k's raw files, the
pre-joined table or the dataset hub, and report every line they did not keep, by reason; this
module holds what they build (:class:`Video`, :class:`Corpus`, :class:`ImportReport`) and the
careful reading of a user's files they share. The corpus is stored as ``videos.jsonl`` plus
``corpus.json`` in the corpus folder; its version is a hash of its content, so an index built
on another version is detected, and so is a ``videos.jsonl`` damaged or cut short since:
loading checks every file and says how to rebuild a damaged one.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from popcorn._io import atomic_write_json, atomic_write_text
from popcorn.errors import UsageError
from popcorn.safety import one_line

SCHEMA_VERSION = 1
DEFAULT_CORPUS_DIR = Path("popcorn-corpus")

# corpus.json and index.json hold counts and category names: far below this, unless damaged.
MAX_META_BYTES = 16 * 2**20
MAX_TABLE_BYTES = 2 * 2**30
"""The largest file an import reads (a table, or one of MicroLens' raw files); it is held in
memory whole, and MicroLens' largest file is far below this."""
MAX_CSV_FIELD = 16 * 2**20
"""The longest CSV field read (the csv module's own limit, 128 KiB, is below a long caption)."""
MAX_COUNT = 2**53
"""Counts (comments, likes, views) are below this: JSON numbers past it lose precision, and
retrieval holds counts as 64-bit integers."""


class DamagedCorpusError(UsageError):
    """A corpus or index file is missing, cut short, or not what popcorn wrote; the message
    names the command that rebuilds it."""


def open_stored(path: Path, damaged: Callable[[str], Exception]) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file, refusing links and special files.

    The corpus folder only ever holds files popcorn wrote, so a link or a FIFO there is damage
    (and following one could read another file or block forever). ``damaged(why)`` builds the
    error raised when the file is missing or not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    # No following links, and no blocking on a FIFO before fstat can refuse it.
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise damaged(f"{path.name} is missing") from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK) or path.is_symlink():
            raise damaged(f"{path.name} is a link, not a file popcorn wrote") from None
        raise UsageError(f"cannot read {str(path)!r}: {err.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise damaged(f"{path.name} is not a regular file")
    return os.fdopen(fd, "rb")


def read_stored(path: Path, damaged: Callable[[str], Exception], limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_stored`), at most ``limit``."""
    with open_stored(path, damaged) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise damaged(f"{path.name} is {size:,} bytes, far more than popcorn writes")
        try:
            return f.read() if limit is None else f.read(limit + 1)
        except OSError as err:
            raise UsageError(f"cannot read {str(path)!r}: {err.strerror}") from None


def read_input(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a file the user gave (``what`` names it in messages), at most ``limit``.

    Links are followed (the user named the file), but only a regular file is read: a device
    such as /dev/zero or a pipe could be read forever. Every failure is a one-line
    :class:`UsageError`.
    """
    with open_input(path, what, limit) as f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise UsageError(f"cannot read {what} {_shown_path(path)!r}: {err.strerror}") from None
    if len(data) > limit:  # it grew while being read
        raise _too_big(path, what, limit)
    return data


def open_input(path: Path, what: str, limit: int) -> BinaryIO:
    """Open a file the user gave for reading, refusing what :func:`read_input` refuses."""
    where = _shown_path(path)
    # No blocking on a FIFO before fstat can refuse it, and no controlling terminal taken.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {where!r}") from None
    except OSError as err:
        raise UsageError(f"cannot read {what} {where!r}: {err.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = UsageError(f"{what} {where!r} is a folder, not a file")
    elif not stat.S_ISREG(info.st_mode):
        problem = UsageError(
            f"{what} {where!r} is not a regular file (a device, pipe or socket): give a file"
        )
    elif info.st_size > limit:
        problem = _too_big(path, what, limit)
    if problem is not None:
        os.close(fd)
        raise problem
    return os.fdopen(fd, "rb")


def _too_big(path: Path, what: str, limit: int) -> UsageError:
    return UsageError(
        f"{what} {_shown_path(path)!r} is larger than {_size(limit)}, the most popcorn reads: "
        "split it"
    )


def _shown_path(path: Path) -> str:
    """``path`` as one line to show: a name holding bytes that are not UTF-8 (kept by Python as
    lone surrogates, which no terminal or file can take) has them escaped."""
    return one_line(str(path).encode("utf-8", "backslashreplace").decode("utf-8"))


def _size(n: int) -> str:
    return f"{n // 2**30} GiB" if n % 2**30 == 0 else f"{n // 2**20} MiB"


def csv_records(text: str, name: str) -> Iterator[tuple[int, int, list[str]]]:
    """``(first line, last line, fields)`` of each record of the CSV ``text``; blank lines give
    no record. A field longer than :data:`MAX_CSV_FIELD`, or a quote still open at the end of
    the file, is a one-line :class:`UsageError` naming ``name`` and the line.

    A record that spans lines holds a quoted field with line breaks in it: the caller decides
    whether that can be meant (a caption) or is an unclosed quote that swallowed the rows
    after it (a query).
    """
    if csv.field_size_limit() < MAX_CSV_FIELD:
        csv.field_size_limit(MAX_CSV_FIELD)
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    end = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if "field limit" in str(err):
                why = (
                    f"a field is longer than {_size(MAX_CSV_FIELD)} (a quote left open that "
                    "runs on through the lines after it?)"
                )
            else:
                why = f"not valid CSV ({one_line(err)})"
            raise UsageError(f"{name} line {end + 1}: {why}") from None
        start, end = end + 1, reader.line_num
        if not fields:
            continue
        if end == len(lines) and end > start and "".join(lines[start - 1 :]).count('"') % 2:
            # The csv module keeps a quoted field open to the end of the file without a word.
            raise UsageError(
                f"{name} line {start}: a quote opened on this line is never closed, so every "
                f"line after it, to line {end}, was read into one field: close the quote"
            )
        yield start, end, fields


def read_json_object(path: Path, damaged: Callable[[str], Exception]) -> dict[str, Any]:
    """The JSON object stored in ``path`` (a small metadata file)."""
    try:
        obj = json.loads(read_stored(path, damaged, MAX_META_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise damaged(f"{path.name} is not valid JSON (cut short?)") from None
    if not isinstance(obj, dict):
        raise damaged(f"{path.name} does not hold a JSON object")
    return obj


def check_fields(
    obj: dict[str, Any], types: Mapping[str, type | tuple[type, ...]], where: str
) -> str | None:
    """Why ``obj`` lacks a field of ``types`` or holds one of the wrong type (None if it is fine).

    ``bool`` is not accepted for ``int``: JSON ``true`` is not a count.
    """
    for key, kind in types.items():
        if key not in obj:
            return f"{where} has no {key!r}"
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            return f"{where} has a malformed {key!r}"
    return None


def corpus_damaged(folder: Path, why: str) -> DamagedCorpusError:
    """The error for a damaged corpus: what is wrong and the commands that rebuild it."""
    where = one_line(str(folder))
    return DamagedCorpusError(
        f"the corpus in {where!r} is damaged: {why}; re-import it with 'popcorn corpus import "
        f"microlens DIR --corpus {where}' (or 'table FILE', 'hf DATASET_ID'), then run "
        f"'popcorn corpus index --corpus {where}'"
    )


@dataclass(frozen=True)
class Video:
    """One reference micro-video. ``comment_count`` is the study's popularity measure."""

    video_id: str
    title: str
    category: str
    comment_count: int
    cover_desc: str = ""
    caption: str = ""
    likes: int | None = None
    views: int | None = None

    def text(self) -> str:
        """What retrieval embeds: title, cover description and caption."""
        return ". ".join(p for p in (self.title, self.cover_desc, self.caption) if p)


@dataclass
class ImportReport:
    """What an import kept and, by reason, what it did not."""

    source: str
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < 3:
            seen.append(where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "examples": self.examples,
            "notes": self.notes,
        }


@dataclass
class Corpus:
    videos: list[Video]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", ""))

    def categories(self) -> list[str]:
        return sorted({v.category for v in self.videos})

    def save(self, folder: Path | str, report: ImportReport) -> None:
        folder = Path(folder)
        text = "".join(json.dumps(asdict(v), ensure_ascii=False) + "\n" for v in self.videos)
        version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        self.meta = {
            "schema_version": SCHEMA_VERSION,
            "version": version,
            "videos": len(self.videos),
            "categories": self.categories(),
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "import": report.to_dict(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "videos.jsonl", text)
        # corpus.json last: a reader that finds it finds the matching videos.jsonl.
        atomic_write_json(folder / "corpus.json", self.meta)

    @classmethod
    def load(cls, folder: Path | str) -> Corpus:
        """Read the corpus in ``folder``; a damaged file is a :class:`DamagedCorpusError`."""
        folder = Path(folder)
        meta_file = folder / "corpus.json"
        if not os.path.lexists(meta_file):
            raise UsageError(
                f"no corpus in {str(folder)!r}: import one with 'popcorn corpus import "
                "microlens DIR' (or 'table FILE', 'hf DATASET_ID')"
            )

        def damaged(why: str) -> DamagedCorpusError:
            return corpus_damaged(folder, why)

        meta = read_json_object(meta_file, damaged)
        schema = meta.get("schema_version")
        if isinstance(schema, int) and schema > SCHEMA_VERSION:
            raise UsageError(f"the corpus in {str(folder)!r} was written by a newer popcorn")
        problem = check_fields(meta, _META_FIELDS, "corpus.json") or check_fields(
            meta["import"], {"source": str}, "corpus.json's import"
        )
        if problem:
            raise damaged(problem)
        data = read_stored(folder / "videos.jsonl", damaged)
        # The version is the hash of videos.jsonl as saved: any change since shows here.
        if hashlib.sha256(data).hexdigest()[:16] != meta["version"]:
            raise damaged("videos.jsonl does not match corpus.json (changed or cut short)")
        videos = _parse_videos(data, damaged)
        if (
            len(videos) != meta["videos"]
            or sorted({v.category for v in videos}) != meta["categories"]
        ):
            raise damaged("corpus.json does not describe videos.jsonl")
        return cls(videos, meta)


_META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "version": str,
    "videos": int,
    "categories": list,
    "import": dict,
}
_VIDEO_FIELDS: dict[str, type | tuple[type, ...]] = {
    "video_id": str,
    "title": str,
    "category": str,
    "comment_count": int,
    "cover_desc": str,
    "caption": str,
    "likes": (int, type(None)),
    "views": (int, type(None)),
}


def _parse_videos(data: bytes, damaged: Callable[[str], Exception]) -> list[Video]:
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise damaged("videos.jsonl is not UTF-8 text") from None
    videos: list[Video] = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        where = f"videos.jsonl line {n}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise damaged(f"{where} is not JSON") from None
        if not _is_video(row):
            problem = isinstance(row, dict) and (
                check_fields(row, _VIDEO_FIELDS, where) or _count_problem(row, where)
            )
            raise damaged(problem or f"{where} is not a video popcorn wrote")
        videos.append(Video(**row))
    return videos


def _is_video(row: Any) -> bool:
    """Whether ``row`` holds exactly a :class:`Video`'s fields with their types.

    Spelled out rather than looped over ``_VIDEO_FIELDS``: it runs once per video on every
    load. ``type(...) is int`` also refuses JSON ``true``.
    """
    return (
        type(row) is dict
        and row.keys() == _VIDEO_FIELDS.keys()
        and type(row["video_id"]) is str
        and type(row["title"]) is str
        and type(row["category"]) is str
        and type(row["cover_desc"]) is str
        and type(row["caption"]) is str
        and type(row["comment_count"]) is int
        and 0 <= row["comment_count"] < MAX_COUNT
        and (row["likes"] is None or (type(row["likes"]) is int and 0 <= row["likes"] < MAX_COUNT))
        and (row["views"] is None or (type(row["views"]) is int and 0 <= row["views"] < MAX_COUNT))
    )


def _count_problem(row: dict[str, Any], where: str) -> str | None:
    """Which count of ``row`` is out of range (an older popcorn imported any integer)."""
    for key in ("comment_count", "likes", "views"):
        value = row.get(key)
        if type(value) is int and not 0 <= value < MAX_COUNT:
            shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}..."
            return f"{where} has a {key} of {shown}, not a count from 0 to 2^53"
    return None
