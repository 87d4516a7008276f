"""The reference corpus: real micro-videos with their popularity, imported from user files.

Importers read MicroLens-100k's raw files, the pre-joined table (CSV, JSONL or parquet), or the
table from the dataset hub, and report every line they did not keep, by reason. The corpus is
stored as ``videos.jsonl`` plus ``corpus.json`` in the corpus folder; its version is a hash of
its content, so an index built on another version is detected, and so is a ``videos.jsonl``
damaged or cut short since: loading checks every file and says how to rebuild a damaged one.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from popcorn._io import atomic_write_json, atomic_write_text
from popcorn.errors import MissingDependencyError, UsageError
from popcorn.safety import one_line

SCHEMA_VERSION = 1
DEFAULT_CORPUS_DIR = Path("popcorn-corpus")

MICROLENS_FILES = {
    "likes": "MicroLens-100k_likes_and_views.txt",
    "titles": "MicroLens-100k_title_en.csv",
    "comments": "MicroLens-100k_comment_en.txt",
    "categories": "tags_to_summary.csv",
}
_CAPTION_CANDIDATES = (
    "MicroLens-100k_caption_en.txt",
    "MicroLens-100k_captions_en.txt",
    "Microlens100K_captions_en.csv",  # tab-separated despite its name
)
COVER_CAPTIONS_FILE = "llava-v1.5_caption.txt"
"""The name of MicroLens' LLaVA cover captions in the study's release (comma: id, text)."""
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


# --- MicroLens raw files --------------------------------------------------------------------


def import_microlens(
    folder: Path | str,
    captions: Path | str | None = None,
    cover_captions: Path | str | None = None,
) -> tuple[Corpus, ImportReport]:
    """Join MicroLens-100k's raw files; every line not kept is counted under a reason.

    The English captions (tab: video_id, caption) and the LLaVA cover captions (video_id,
    description; comma or tab) are optional: found in ``folder`` by name unless given.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"MicroLens folder not found: {str(folder)!r}")
    paths = {role: folder / name for role, name in MICROLENS_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise UsageError(f"MicroLens file missing: {str(path)!r}")
    report = ImportReport(source=f"microlens:{folder}")

    titles = _keyed(_csv_rows(paths["titles"]), "titles", report, join_rest=True)
    categories = _keyed(_csv_rows(paths["categories"]), "categories", report)
    popularity: dict[str, tuple[int, int]] = {}
    for n, fields in _tsv_rows(paths["likes"]):
        where = f"{paths['likes'].name}:{n}"
        likes, views = (_count(fields[1]), _count(fields[2])) if len(fields) == 3 else (None, None)
        if likes is None or views is None:
            report.skip("likes/views: malformed line", where)
        elif fields[0] in popularity:
            report.skip("likes/views: duplicate id", where)
        else:
            popularity[fields[0]] = (likes, views)
    comment_counts: Counter[str] = Counter()
    for n, fields in _tsv_rows(paths["comments"]):
        if len(fields) < 3 or not fields[1].strip():
            report.skip("comments: malformed line", f"{paths['comments'].name}:{n}")
        else:
            comment_counts[fields[1].strip()] += 1
    caption_path = Path(captions) if captions else _find_captions(folder)
    caption_of: dict[str, str] = {}
    if caption_path is not None:
        if not caption_path.is_file():
            raise UsageError(f"caption file not found: {str(caption_path)!r}")
        for n, fields in _tsv_rows(caption_path):
            if len(fields) < 2 or not fields[0].strip().isdigit():
                report.skip("captions: malformed line", f"{caption_path.name}:{n}")
            else:
                caption_of.setdefault(fields[0].strip(), "\t".join(fields[1:]).strip())
    else:
        report.notes.append("no caption file found: captions left empty")
    cover_path = Path(cover_captions) if cover_captions else _find_cover_captions(folder)
    cover_of: dict[str, str] = {}
    if cover_path is not None:
        if not cover_path.is_file():
            raise UsageError(f"cover caption file not found: {str(cover_path)!r}")
        cover_of = _keyed(_pair_rows(cover_path), "cover captions", report, join_rest=True)
    else:
        report.notes.append(
            "no cover caption file (LLaVA: video_id, description) found: cover descriptions "
            "left empty; give it with --cover-captions FILE"
        )

    videos: list[Video] = []
    for vid, title in titles.items():
        category = categories.get(vid)
        if not category:
            report.skip("no category", f"video {vid}")
            continue
        likes, views = popularity.get(vid, (None, None))
        videos.append(
            Video(
                vid,
                title,
                category,
                comment_counts.get(vid, 0),
                cover_desc=cover_of.get(vid, ""),
                caption=caption_of.get(vid, ""),
                likes=likes,
                views=views,
            )
        )
    for vid in categories.keys() - titles.keys():
        report.skip("no title", f"video {vid}")
    missing_captions = sum(1 for v in videos if not v.caption)
    if caption_path is not None and missing_captions:
        report.notes.append(f"{missing_captions} videos have no caption")
    missing_covers = sum(1 for v in videos if not v.cover_desc)
    if cover_path is not None and missing_covers:
        report.notes.append(f"{missing_covers} videos have no cover description")
    report.kept = len(videos)
    return Corpus(videos), report


def _find_captions(folder: Path) -> Path | None:
    for name in _CAPTION_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(
        p for p in folder.glob("*caption*") if p.is_file() and not _is_cover_captions(p.name)
    )
    return found[0] if found else None


def _is_cover_captions(name: str) -> bool:
    """Whether a file name says it holds cover captions (LLaVA's, or any "cover caption")."""
    name = name.lower()
    return "llava" in name or ("cover" in name and ("caption" in name or "desc" in name))


def _find_cover_captions(folder: Path) -> Path | None:
    if (folder / COVER_CAPTIONS_FILE).is_file():
        return folder / COVER_CAPTIONS_FILE
    found = sorted(p for p in folder.iterdir() if p.is_file() and _is_cover_captions(p.name))
    return found[0] if found else None


def _pair_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Rows of an id-and-text file written with tabs or with commas (CSV quoting), which one
    told by its first line: MicroLens' LLaVA file is comma-separated, other copies use tabs."""
    text = _read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "\t" in first:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield n, line.split("\t", 1)
    else:
        yield from _csv_rows(path)


def _keyed(
    rows: Iterable[tuple[int, list[str]]], what: str, report: ImportReport, join_rest: bool = False
) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, fields in rows:
        where = f"{what}:{n}"
        if n == 1 and fields and not fields[0].strip().isdigit():
            continue  # a header line
        if (
            len(fields) < 2
            or (len(fields) > 2 and not join_rest)
            or not fields[0].strip().isdigit()
        ):
            report.skip(f"{what}: malformed line", where)
            continue
        value = ",".join(fields[1:]).strip()  # an unquoted comma in a title splits it
        vid = fields[0].strip()
        if not value:
            report.skip(f"{what}: empty value", where)
        elif vid in out:
            report.skip(f"{what}: duplicate id", where)
        else:
            out[vid] = value
    return out


def _read_text(path: Path, what: str = "file") -> str:
    return read_input(path, what, MAX_TABLE_BYTES).decode("utf-8-sig", errors="replace")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for start, _, row in csv_records(_read_text(path), path.name):
        yield start, row


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            yield n, line.split("\t")


_WHOLE = re.compile(r"\+?[0-9]{1,20}", re.ASCII)


def _count(value: Any) -> int | None:
    """``value`` as a count, a whole number from 0 to below :data:`MAX_COUNT`, else None.

    ``12.0`` and ``"12.0"`` are 12 (how spreadsheets and pandas write whole numbers);
    ``true``, ``1.5``, ``-3``, ``nan``, ``1e30`` and ``"1e400"`` (infinite as a float) are not
    counts.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        number = int(value.strip())  # exact: no float rounding of long digit strings
    else:
        try:
            real = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(real) or not real.is_integer() or abs(real) >= MAX_COUNT:
            return None
        number = int(real)
    return number if 0 <= number < MAX_COUNT else None


# --- keeping only some videos ---------------------------------------------------------------


def read_id_list(path: Path | str) -> set[str]:
    """The video ids in ``path``: one a line (the first field where a line has more, so a
    one-column CSV works too); blank lines and ``#`` comments are ignored."""
    path = Path(path)
    ids = set()
    for line in _read_text(path, "id list").splitlines():
        first = line.replace("\t", ",").split(",", 1)[0].strip()
        if first and not first.startswith("#"):
            ids.add(first)
    if not ids:
        raise UsageError(f"{str(path)!r} holds no video ids (expected one id a line)")
    return ids


def keep_only(corpus: Corpus, report: ImportReport, ids: set[str], listed_in: str) -> Corpus:
    """The videos of ``corpus`` whose id is in ``ids``; the others are counted in ``report``
    as not listed, and listed ids that the import did not keep are noted."""
    kept = [v for v in corpus.videos if v.video_id in ids]
    for video in corpus.videos:
        if video.video_id not in ids:
            report.skip(f"not in {listed_in}", f"video {video.video_id}")
    report.notes.append(f"kept only the videos listed in {listed_in}")
    absent = len(ids - {v.video_id for v in kept})
    if absent:
        report.notes.append(f"{absent:,} ids of {listed_in} are not among the imported videos")
    report.kept = len(kept)
    return Corpus(kept, corpus.meta)


# --- the pre-joined table -------------------------------------------------------------------

_COLUMNS = {
    "video_id": ("video_id", "item_id", "id"),
    "title": ("title_en", "title"),
    "category": ("category", "partition"),
    "comment_count": ("comment_count", "comments"),
    "cover_desc": ("cover_desc", "cover_description"),
    "caption": ("caption_en", "caption"),
    "likes": ("likes",),
    "views": ("views",),
}
_REQUIRED = ("video_id", "title", "category", "comment_count")


def import_rows(rows: Iterable[Mapping[str, Any]], source: str) -> tuple[Corpus, ImportReport]:
    """Build a corpus from pre-joined rows (the table's columns, see MISSION.md)."""
    report = ImportReport(source=source)
    videos: list[Video] = []
    seen: set[str] = set()
    bad_popularity: list[str] = []
    columns: dict[str, str | None] | None = None
    for n, row in enumerate(rows, 1):
        if columns is None:
            columns = _map_columns(list(row.keys()), source)
        get = {k: (row.get(c) if c else None) for k, c in columns.items()}
        vid = _text(get["video_id"])
        where = f"row {n}"
        missing = [k for k in ("video_id", "title", "category") if not _text(get[k])]
        if missing:
            report.skip(f"missing {missing[0]}", where)
            continue
        count = _count(get["comment_count"])
        if count is None:
            report.skip("bad comment_count", where)
            continue
        if vid in seen:
            report.skip("duplicate id", where)
            continue
        seen.add(vid)
        likes, views = _count(get["likes"]), _count(get["views"])
        if (likes is None and get["likes"] not in (None, "")) or (
            views is None and get["views"] not in (None, "")
        ):
            bad_popularity.append(where)
        videos.append(
            Video(
                vid,
                _text(get["title"]),
                _text(get["category"]),
                count,
                cover_desc=_text(get["cover_desc"]),
                caption=_text(get["caption"]),
                likes=likes,
                views=views,
            )
        )
    if bad_popularity:
        report.notes.append(
            f"{len(bad_popularity):,} rows have likes or views that are not counts from 0 to "
            f"2^53, left empty (e.g. {', '.join(bad_popularity[:3])})"
        )
    report.kept = len(videos)
    return Corpus(videos), report


def import_table(path: Path | str) -> tuple[Corpus, ImportReport]:
    """Read the pre-joined table from a .parquet, .csv or .jsonl file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".parquet"):
        raise UsageError(f"{one_line(path.name)}: expected a .parquet, .csv or .jsonl table")
    notes: list[str] = []
    if suffix == ".csv":
        rows: Iterable[Mapping[str, Any]] = _table_csv_rows(path, notes)
    elif suffix in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path))
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependencyError("pyarrow", "data", "Reading parquet") from None
        rows = _parquet_rows(pq, path)
    corpus, report = import_rows(rows, f"table:{path}")
    report.notes.extend(notes)
    return corpus, report


def _table_csv_rows(path: Path, notes: list[str]) -> list[dict[str, str | None]]:
    """The rows of a CSV table as the csv module's ``DictReader`` gives them; rows whose quoted
    fields run over several lines are noted (meant in a caption, or an unclosed quote)."""
    header: list[str] | None = None
    rows: list[dict[str, str | None]] = []
    spanning: list[str] = []
    for start, end, fields in csv_records(_read_text(path, "table file"), path.name):
        if header is None:
            header = fields
            continue
        if end > start:
            spanning.append(f"lines {start}-{end}")
        rows.append(
            {name: (fields[i] if i < len(fields) else None) for i, name in enumerate(header)}
        )
    if spanning:
        notes.append(
            f"{len(spanning):,} rows of {one_line(path.name)} have a quoted field over several "
            f"lines ({', '.join(spanning[:3])}): if that is not meant, look for an unclosed quote"
        )
    return rows


def _parquet_rows(pq: Any, path: Path) -> list[dict[str, Any]]:
    with open_input(path, "table file", MAX_TABLE_BYTES) as f:
        try:
            return list(pq.read_table(f).to_pylist())
        except (OSError, ValueError) as err:  # pyarrow's own errors derive from these
            raise UsageError(
                f"{one_line(path.name)} is not a readable parquet table: {one_line(err)}"
            ) from None


def import_hf(dataset_id: str, split: str = "train") -> tuple[Corpus, ImportReport]:
    """Load the pre-joined table from the dataset hub (needs network and ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("datasets", "data", "Importing from the dataset hub") from None
    try:
        data = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise UsageError(
            f"cannot load dataset {dataset_id!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    return import_rows(data, f"hf:{dataset_id}:{split}")


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(_read_text(path, "table file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path.name} line {n}: not JSON") from None
        except RecursionError:
            raise UsageError(f"{path.name} line {n}: JSON nested too deeply to be a row") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path.name} line {n}: expected a JSON object")
        yield row


def _map_columns(names: list[str], source: str) -> dict[str, str | None]:
    lowered = {n.strip().lower(): n for n in names}
    mapped: dict[str, str | None] = {}
    for key, options in _COLUMNS.items():
        mapped[key] = next((lowered[o] for o in options if o in lowered), None)
    missing = [k for k in _REQUIRED if mapped[k] is None]
    if missing:
        wanted = " / ".join(_COLUMNS[missing[0]])
        raise UsageError(
            f"{source}: no column for {missing[0]} (expected {wanted}; found: {', '.join(names)})"
        )
    return mapped


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())
