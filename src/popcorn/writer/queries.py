"""The queries the script stage takes: one checked (:func:`validate_query`), or a batch read
from a file: plain text (one a line), CSV or JSONL with a ``prompt`` column.

A file that is wrong as a whole is refused whole, with one line: missing, not a regular file
(``/dev/zero``, a pipe), over :data:`MAX_QUERIES_BYTES`, binary or UTF-16, a CSV without a
``prompt`` column, or a CSV quote left open that reads the rows after it into one query.

A row that is wrong on its own is refused alone, so that it takes nothing else down: a
JSONL line that is not JSON (or nested past any use), a prompt that is not text (``null``,
``12``, an object), an empty or too long query, or one that is not valid UTF-8 text. Such
rows are listed, with their line, in :attr:`QueryList.refused`, and the others are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from popcorn.errors import UsageError
from popcorn.retrieval.corpus import csv_records, read_input

MAX_QUERY_CHARS = 2000


def validate_query(query: object) -> str:
    """The query, its whitespace folded; ``UsageError`` if it is not text, is empty or too
    long, or is not valid Unicode text (a lone surrogate: ``\\xff`` in a command line, which
    Python keeps as an escape, or half of a pair escaped in JSON). Such text could be written
    to no manifest and shown on no terminal, so it is refused here, before anything runs."""
    if not isinstance(query, str):
        raise UsageError(f"the query is {_kind(query)}, not text")
    cleaned = " ".join(query.split())
    if not cleaned:
        raise UsageError(
            "the query is empty: describe the video you want, e.g. 'A cat learning to skateboard'"
        )
    if len(cleaned) > MAX_QUERY_CHARS:
        raise UsageError(
            f"the query has {len(cleaned):,} characters; the limit is {MAX_QUERY_CHARS:,}"
        )
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(
            f"the query is not valid text: character {err.start + 1} is a byte that is not "
            "UTF-8 or half of a surrogate pair; write the query in UTF-8"
        ) from None
    return cleaned


def printable_query(query: object, limit: int = 80) -> str:
    """``query`` as one safe line to show or record, whatever it holds: lone surrogates
    escaped (they cannot be encoded), control characters dropped, cut to ``limit``."""
    from popcorn.safety import one_line

    if not isinstance(query, str):
        return f"<{_kind(query)}>"
    text = one_line(query.encode("utf-8", "backslashreplace").decode("utf-8"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class QueryItem:
    """One query of a batch, with labels carried into its manifest (e.g. ``type``)."""

    query: str
    tags: dict[str, str] = field(default_factory=dict)


_QUERY_COLUMNS = ("prompt", "query")
MAX_QUERIES_BYTES = 64 * 2**20
STDIN = "-"
"""The name that reads queries (or one query) from standard input."""
"""The largest queries file read: a million queries at their longest fit in far less."""
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class RefusedQuery:
    """A row that was not read as a query: its line, what it held, and why."""

    line: int
    query: str
    """What the row held, as a safe line to show (see :func:`printable_query`)."""
    reason: str
    """One line naming the file and the line, e.g. ``q.jsonl line 3: the query is null, ...``."""

    def __str__(self) -> str:
        return self.reason


class QueryList(list[QueryItem]):
    """The queries of a file, in order; :attr:`refused` holds the rows that were refused."""

    def __init__(self, items: Iterable[QueryItem] = (), refused: Iterable[RefusedQuery] = ()):
        super().__init__(items)
        self.refused: list[RefusedQuery] = list(refused)


@dataclass(frozen=True)
class _Row:
    line: int
    query: object
    tags: dict[str, str]
    problem: str | None = None
    """Why the row cannot be a query, found while parsing it (None: check the query)."""


def read_queries(path: Path | str) -> QueryList:
    """All queries in ``path``; other CSV/JSONL columns (e.g. ``type``) become tags.

    Rows that cannot be queries are left out and listed in the result's ``refused``; a file
    where no row is a query is a :class:`UsageError` naming the first refused row.
    """
    if str(path) == STDIN:
        data = read_stdin(MAX_QUERIES_BYTES, "--queries -")
        # A pipe has no suffix to say its format: JSON lines start with an object.
        name, suffix = "standard input", ".jsonl" if data.lstrip()[:1] == b"{" else ""
    else:
        path = Path(path)
        name = printable_query(path.name, 200)
        data = read_input(path, "queries file", MAX_QUERIES_BYTES)
        suffix = path.suffix.lower()
    if b"\x00" in data or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError(
            f"queries file {printable_query(str(path), 200)!r} is not UTF-8 text (binary, or "
            "UTF-16?): save it as UTF-8"
        )
    # Undecodable bytes become lone surrogates: only the rows holding them are refused.
    text = data.decode("utf-8-sig", errors="surrogateescape")

    if suffix == ".csv":
        rows = _from_csv(text, name)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _from_jsonl(text)
    else:
        rows = (
            _Row(n, line.strip(), {})
            for n, line in enumerate(_LINE_BREAK.split(text), 1)
            if line.strip() and not line.lstrip().startswith("#")
        )
    out = QueryList()
    for row in rows:
        try:
            if row.problem is not None:
                raise UsageError(row.problem)
            query = validate_query(row.query)
            _check_tags(row.tags)
        except UsageError as err:
            reason = f"{name} line {row.line}: {err}"
            out.refused.append(RefusedQuery(row.line, printable_query(row.query), reason))
            continue
        out.append(QueryItem(query, row.tags))
    if not out:
        if out.refused:
            first = out.refused[0].reason.removeprefix(f"{name} ")
            more = len(out.refused) - 1
            also = f" ({more:,} more rows refused)" if more else ""
            raise UsageError(f"no usable queries in {name}: {first}{also}")
        raise UsageError(f"no queries in {printable_query(str(path), 200)!r}")
    return out


def read_stdin(limit: int, what: str) -> bytes:
    """Standard input, at most ``limit`` bytes; a terminal or a larger input is refused (a
    reader would wait for typing, or read without end)."""
    import sys

    stream = sys.stdin
    if stream is None or stream.isatty():
        raise UsageError(f"{what} reads standard input: pipe it in (echo 'an idea' | popcorn ...)")
    data = stream.buffer.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"standard input holds over {limit // 2**20} MiB: {what} reads less")
    return data


def _check_tags(tags: dict[str, str]) -> None:
    for key, value in tags.items():
        try:
            key.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            column = printable_query(key, 40)
            raise UsageError(
                f"the column {column!r} is not valid text (a byte that is not UTF-8 or half "
                "of a surrogate pair)"
            ) from None


def _query_column(columns: Iterable[str]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    return next((lowered[name] for name in _QUERY_COLUMNS if name in lowered), None)


def _tags(row: dict[str, object], column: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in row.items() if k != column and k and v not in (None, "")}


def _from_csv(text: str, name: str) -> Iterator[_Row]:
    header: list[str] | None = None
    column: str | None = None
    for start, end, fields in csv_records(text, name):
        if end > start:
            # Queries are one line each: a record over several lines is an unclosed quote
            # that read the rows after it into this one, which would run as one query.
            raise UsageError(
                f"{name} line {start}: a quoted field runs on to line {end}, so the rows in "
                "between were read as one; queries are one line each: close the quote"
            )
        if header is None:
            header = fields
            column = _query_column(header)
            if column is None:
                found = ", ".join(printable_query(c, 200) for c in header) or "none"
                raise UsageError(f"{name} has no 'prompt' column (columns: {found})")
            continue
        row: dict[str, object] = dict(zip(header, fields, strict=False))
        query = row.get(column or "") or ""
        if isinstance(query, str) and query.strip():
            yield _Row(start, query, _tags(row, column or ""))


def _from_jsonl(text: str) -> Iterator[_Row]:
    for n, line in enumerate(_LINE_BREAK.split(text), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            yield _Row(n, "", {}, f"not JSON ({err.msg})")
            continue
        except RecursionError:
            yield _Row(n, "", {}, "JSON nested too deeply to be a query")
            continue
        if isinstance(value, str):
            yield _Row(n, value, {})
        elif not isinstance(value, dict):
            yield _Row(n, value, {}, "expected an object with a 'prompt' key, or a string")
        else:
            column = _query_column(value)
            if column is None:
                keys = ", ".join(printable_query(k, 40) for k in value) or "none"
                yield _Row(n, "", {}, f"no 'prompt' key (keys: {keys})")
            else:
                yield _Row(n, value[column], _tags(value, column))
