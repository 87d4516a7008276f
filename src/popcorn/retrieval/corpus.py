"""The reference corpus: real micro-videos with their popularity, imported from user files.

Importers read MicroLens-100k's raw files, the pre-joined table (CSV, JSONL or parquet), or the
table from the dataset hub, and report every line they did not keep, by reason. The corpus is
stored as ``videos.jsonl`` plus ``corpus.json`` in the corpus folder; its version is a hash of
its content, so an index built on another version is detected.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from popcorn._io import atomic_write_json, atomic_write_text
from popcorn.errors import MissingDependencyError, UsageError

SCHEMA_VERSION = 1
DEFAULT_CORPUS_DIR = Path("popcorn-corpus")

MICROLENS_FILES = {
    "likes": "MicroLens-100k_likes_and_views.txt",
    "titles": "MicroLens-100k_title_en.csv",
    "comments": "MicroLens-100k_comment_en.txt",
    "categories": "tags_to_summary.csv",
}
_CAPTION_CANDIDATES = ("MicroLens-100k_caption_en.txt", "MicroLens-100k_captions_en.txt")


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
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "import": report.to_dict(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "videos.jsonl", text)
        # corpus.json last: a reader that finds it finds the matching videos.jsonl.
        atomic_write_json(folder / "corpus.json", self.meta)

    @classmethod
    def load(cls, folder: Path | str) -> Corpus:
        folder = Path(folder)
        meta_file = folder / "corpus.json"
        if not meta_file.is_file():
            raise UsageError(
                f"no corpus in {str(folder)!r}: import one with 'popcorn corpus import "
                "microlens DIR' (or 'table FILE', 'hf DATASET_ID')"
            )
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("schema_version", 0) > SCHEMA_VERSION:
            raise UsageError(f"the corpus in {str(folder)!r} was written by a newer popcorn")
        videos = [
            Video(**json.loads(line))
            for line in (folder / "videos.jsonl").read_text(encoding="utf-8").splitlines()
            if line
        ]
        return cls(videos, meta)


# --- MicroLens raw files --------------------------------------------------------------------


def import_microlens(
    folder: Path | str, captions: Path | str | None = None
) -> tuple[Corpus, ImportReport]:
    """Join MicroLens-100k's raw files; every line not kept is counted under a reason."""
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
        if len(fields) != 3 or not _is_int(fields[1]) or not _is_int(fields[2]):
            report.skip("likes/views: malformed line", where)
        elif fields[0] in popularity:
            report.skip("likes/views: duplicate id", where)
        else:
            popularity[fields[0]] = (int(fields[1]), int(fields[2]))
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
    report.kept = len(videos)
    return Corpus(videos), report


def _find_captions(folder: Path) -> Path | None:
    for name in _CAPTION_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*caption*"))
    return found[0] if found else None


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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise UsageError(f"cannot read {str(path)!r}: {err.strerror}") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for n, row in enumerate(csv.reader(_read_text(path).splitlines()), 1):
        if row:
            yield n, row


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            yield n, line.split("\t")


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


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
        count = _int(get["comment_count"])
        if count is None or count < 0:
            report.skip("bad comment_count", where)
            continue
        if vid in seen:
            report.skip("duplicate id", where)
            continue
        seen.add(vid)
        videos.append(
            Video(
                vid,
                _text(get["title"]),
                _text(get["category"]),
                count,
                cover_desc=_text(get["cover_desc"]),
                caption=_text(get["caption"]),
                likes=_int(get["likes"]),
                views=_int(get["views"]),
            )
        )
    report.kept = len(videos)
    return Corpus(videos), report


def import_table(path: Path | str) -> tuple[Corpus, ImportReport]:
    """Read the pre-joined table from a .parquet, .csv or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"table file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows: Iterable[Mapping[str, Any]] = list(csv.DictReader(_read_text(path).splitlines()))
    elif suffix in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path))
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependencyError("pyarrow", "data", "Reading parquet") from None
        rows = pq.read_table(path).to_pylist()
    else:
        raise UsageError(f"{path.name}: expected a .parquet, .csv or .jsonl table")
    return import_rows(rows, f"table:{path}")


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
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{path.name} line {n}: not JSON") from None
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


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
