"""Importers of the reference corpus from user files: MicroLens-100k's raw files, the pre-joined
table (CSV, JSONL or parquet) or the table from the dataset hub, each returning a
:class:`~popcorn.retrieval.corpus.Corpus` and an
:class:`~popcorn.retrieval.corpus.ImportReport` that lists every line not kept, by reason; and
:func:`keep_only`, which narrows an import to listed ids (``corpus import --only-ids``).

What a corpus is, how it is stored and read back, and the limits on what popcorn reads from a
user's file are in :mod:`popcorn.retrieval.corpus`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from popcorn.errors import MissingDependencyError, UsageError
from popcorn.retrieval.corpus import (
    MAX_COUNT,
    MAX_TABLE_BYTES,
    Corpus,
    ImportReport,
    Video,
    csv_records,
    open_input,
    read_input,
)
from popcorn.safety import one_line

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
