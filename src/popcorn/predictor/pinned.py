"""A split pinned by id lists, so that which video lands where does not depend on the order of
the feature rows or on which videos happened to decode.

Two files pin one: the study's ``test_id.csv`` (``--test-ids``: one id per line, or a CSV with a
``video_id`` column), which fixes the test part, or a JSON object ``{"train": [...], "val": [...],
"test": [...]}`` (``--split-ids``), which fixes all three. With the test part alone, the other
videos are sorted by id and a ``RandomState(18)`` permutation of them (MMRA's second split seed)
gives the validation part, as large as the test part (MMRA halves its held-out fifth), and the
training part, in that order. Ids a file names that have no labelled features are counted, not
fatal: a reviewer sees how many of the study's videos this copy of the data lacks.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from popcorn._io import read_json
from popcorn.errors import UsageError
from popcorn.predictor.folder import SPLIT_PARTS
from popcorn.safety import one_line

MAX_ID_FILE_BYTES = 64 * 2**20
VAL_SEED = 18
"""MMRA's second split seed, which drew its validation half."""
PinKind = Literal["test-ids", "split-ids"]


@dataclass(frozen=True)
class PinnedIds:
    """The ids a file pins: all three parts, or only ``test``."""

    kind: PinKind
    source: str
    """The file's name, as the predictor's record keeps it."""
    parts: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PinnedSplit:
    """Row indices per part, and what the file named that the features lack."""

    rows: dict[str, np.ndarray]
    missing: int
    """Ids the file names that are not among the labelled videos with features."""
    unassigned: int
    """Videos with features that a full split file puts in no part (left out of training)."""


def read_test_ids(path: Path) -> PinnedIds:
    """The ids of ``path``: one per line, or a CSV whose header has a ``video_id`` column."""
    text = _read_text(path)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"{_where(path)} lists no video ids")
    if "," in lines[0] or lines[0] == "video_id":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or "video_id" not in rows[0]:
            raise UsageError(
                f"{_where(path)} is a CSV without a 'video_id' column: give one id per line "
                "or a CSV with that column"
            )
        ids = [str(row["video_id"]).strip() for row in rows if str(row["video_id"]).strip()]
    else:
        ids = lines
    return PinnedIds("test-ids", path.name, {"test": _unique(ids, path, "test")})


def read_split_ids(path: Path) -> PinnedIds:
    """The JSON object ``{"train": [...], "val": [...], "test": [...]}`` of ``path``."""
    try:
        found = read_json(path, MAX_ID_FILE_BYTES)
    except (OSError, ValueError) as err:
        raise UsageError(f"{_where(path)} cannot be read: {one_line(str(err))}") from None
    if not isinstance(found, dict) or set(found) != set(SPLIT_PARTS):
        raise UsageError(
            f'{_where(path)} must be a JSON object {{"train": [...], "val": [...], "test": '
            "[...]}} of video id lists"
        )
    parts: dict[str, list[str]] = {}
    for name in SPLIT_PARTS:
        ids = found[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise UsageError(f"{_where(path)}: {name!r} must be a list of video id strings")
        parts[name] = _unique([i.strip() for i in ids], path, name)
    seen: dict[str, str] = {}
    for name in SPLIT_PARTS:
        for video in parts[name]:
            if video in seen:
                raise UsageError(
                    f"{_where(path)}: video {video!r} is in both {seen[video]!r} and {name!r}"
                )
            seen[video] = name
    return PinnedIds("split-ids", path.name, parts)


def pinned_split(ids: Sequence[str], pinned: PinnedIds) -> PinnedSplit:
    """Rows of ``ids`` (the labelled feature rows) per part, as ``pinned`` says; the same ids
    give the same split whatever order the rows are in."""
    row_of = {video: row for row, video in enumerate(ids)}
    named = {video for part in pinned.parts.values() for video in part}
    missing = sum(video not in row_of for video in named)
    rows = {
        name: np.array([row_of[v] for v in part if v in row_of], dtype=np.int64)
        for name, part in pinned.parts.items()
    }
    unassigned = 0
    if pinned.kind == "test-ids":
        test = set(pinned.parts["test"])
        rest = np.array(sorted(v for v in row_of if v not in test), dtype=object)
        order = rest[np.random.RandomState(VAL_SEED).permutation(len(rest))]
        n_val = min(len(rows["test"]), max(len(rest) - 1, 0))
        rows["val"] = np.array([row_of[v] for v in order[:n_val]], dtype=np.int64)
        rows["train"] = np.array([row_of[v] for v in order[n_val:]], dtype=np.int64)
    else:
        unassigned = len(row_of) - sum(len(r) for r in rows.values())
    for name in SPLIT_PARTS:
        if len(rows[name]) == 0:
            raise UsageError(
                f"{pinned.source}: the {name} part holds none of the {len(ids)} labelled videos "
                f"with features ({missing} of the file's ids have none): check that the ids "
                "match the corpus's video_id column"
            )
    return PinnedSplit({name: rows[name] for name in SPLIT_PARTS}, missing, unassigned)


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_ID_FILE_BYTES:
            raise UsageError(f"{_where(path)} is over {MAX_ID_FILE_BYTES >> 20} MB")
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{_where(path)} cannot be read: {one_line(str(err))}") from None


def _unique(ids: list[str], path: Path, part: str) -> list[str]:
    if len(set(ids)) != len(ids):
        raise UsageError(f"{_where(path)}: the {part} ids repeat a video")
    return ids


def _where(path: Path) -> str:
    return repr(one_line(str(path)))
