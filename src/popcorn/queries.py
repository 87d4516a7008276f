"""Read a batch of queries: plain text (one a line), CSV or JSONL with a ``prompt`` column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from popcorn.errors import UsageError
from popcorn.generation import QueryItem, validate_query

_QUERY_COLUMNS = ("prompt", "query")


def read_queries(path: Path | str) -> list[QueryItem]:
    """All queries in ``path``; other CSV/JSONL columns (e.g. ``type``) become tags."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"queries file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise UsageError(f"queries file {str(path)!r} is a folder") from None
    except UnicodeDecodeError:
        raise UsageError(f"queries file {str(path)!r} is not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"cannot read queries file {str(path)!r}: {err.strerror}") from None

    suffix = path.suffix.lower()
    if suffix == ".csv":
        items = _from_csv(text, path)
    elif suffix in (".jsonl", ".ndjson"):
        items = _from_jsonl(text, path)
    else:
        items = [
            (n, line.strip(), {})
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    out: list[QueryItem] = []
    for line, query, tags in items:
        try:
            out.append(QueryItem(validate_query(query), tags))
        except UsageError as err:
            raise UsageError(f"{path.name} line {line}: {err}") from None
    if not out:
        raise UsageError(f"no queries in {str(path)!r}")
    return out


def _query_column(columns: list[str], path: Path) -> str:
    lowered = {c.strip().lower(): c for c in columns}
    for name in _QUERY_COLUMNS:
        if name in lowered:
            return lowered[name]
    raise UsageError(
        f"{path.name} has no 'prompt' column (columns: {', '.join(columns) or 'none'})"
    )


def _tags(row: dict[str, object], column: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in row.items() if k != column and k and v not in (None, "")}


def _from_csv(text: str, path: Path) -> list[tuple[int, str, dict[str, str]]]:
    reader = csv.DictReader(text.splitlines())
    column = _query_column(list(reader.fieldnames or []), path)
    rows = []
    for row in reader:
        query = row.get(column) or ""
        if query.strip():
            rows.append((reader.line_num, query, _tags(dict(row), column)))
    return rows


def _from_jsonl(text: str, path: Path) -> list[tuple[int, str, dict[str, str]]]:
    rows: list[tuple[int, str, dict[str, str]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path.name} line {n}: not JSON ({err.msg})") from None
        if isinstance(value, str):
            rows.append((n, value, {}))
            continue
        if not isinstance(value, dict):
            raise UsageError(f"{path.name} line {n}: expected an object with a 'prompt' key")
        column = _query_column(list(value), path)
        rows.append((n, str(value[column]), _tags(value, column)))
    return rows
