"""Prompt enhancement (PE) as the generator uses it: settings, references for a query, and the
check that the answer is original.

A process loads each corpus once: every :class:`Enhancer` on a corpus folder, whatever its N,
K and pool, shares one loaded corpus, index and retriever (:func:`shared_retriever`), so a web
app or a study holding one generator per setting does not hold one copy of the index per
setting. Enhancers with different pools share the index, not the pool (each pool is computed
once per loaded index and kept by the retriever).

The pool decides which videos may be shown to the LLM at all. With ``pool="test-split"`` (the
paper profile) only the videos of the scoring predictor's held-out test split qualify, as in the
study: none of them is in the predictor's retrieval bank, so a script that echoes a reference
cannot retrieve that reference's label into its own score. :func:`reference_pool_ids` gives the
pool's ids for a check against a predictor's bank.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.errors import ScriptParseError, UsageError
from popcorn.predictor.folder import META_FILE, PredictorFolder, is_trained
from popcorn.profiles import POPCORN
from popcorn.residency import MODELS
from popcorn.retrieval.corpus import DEFAULT_CORPUS_DIR, Corpus
from popcorn.retrieval.search import (
    ROUTINGS,
    Pool,
    References,
    Retriever,
    Routing,
    ids_digest,
    in_pool,
)
from popcorn.safety import one_line
from popcorn.script import Script, similar

if TYPE_CHECKING:
    from popcorn.config import Settings

PoolKind = Literal["test-split", "corpus"]
POOL_KINDS: tuple[PoolKind, ...] = ("test-split", "corpus")


@dataclass(frozen=True)
class PESettings:
    """The study's PE knobs, N references (0-150 studied) from the K nearest categories (1-4),
    and what the profile decides: the reference pool, whether references need all five fields,
    and how queries are routed. Defaults are the ``popcorn`` profile's."""

    refs: int = 10
    categories: int = 1
    corpus: Path = DEFAULT_CORPUS_DIR
    embedder: str | None = None
    """Check the index was built with this embedder; None accepts the index's own."""
    pool: PoolKind = POPCORN.pe_pool
    """``test-split``: only videos of the predictor's held-out test split; ``corpus``: all."""
    predictor: Path | None = None
    """The predictor folder whose ``predictor.json`` holds the split (for ``test-split``)."""
    complete: bool = POPCORN.complete_references
    """Only videos with title, cover description, caption, category and comments."""
    routing: Routing = POPCORN.routing
    """``name``: by the category's name (the study); ``content``: by what it holds too."""

    def __post_init__(self) -> None:
        from popcorn.config import PESettingsModel, int_limits

        for name in ("refs", "categories"):
            low, high = int_limits(PESettingsModel, name)
            if not low <= getattr(self, name) <= high:
                raise UsageError(
                    f"--{name} must be between {low} and {high}, not {getattr(self, name)}"
                )
        if self.pool not in POOL_KINDS:
            raise UsageError(f"pool must be {' or '.join(POOL_KINDS)}, not {self.pool!r}")
        if self.routing not in ROUTINGS:
            raise UsageError(f"routing must be {' or '.join(ROUTINGS)}, not {self.routing!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PESettings:
        """PE as ``settings`` ask for it: N, K, the corpus and embedder from ``[pe]``, the pool,
        completeness and routing from the profile, the split from ``[predictor] path``."""
        profile = settings.profile
        return cls(
            refs=settings.pe.refs,
            categories=settings.pe.categories,
            corpus=settings.pe.corpus,
            embedder=settings.pe.embedder,
            pool=profile.pe_pool,
            predictor=settings.predictor.path,
            complete=profile.complete_references,
            routing=profile.routing,
        )


def predictor_test_split(predictor: Path | None) -> frozenset[str]:
    """The ids of the held-out test split of the predictor in ``predictor``, less any id its
    training or validation split also holds (those are in its retrieval bank).

    A missing folder or ``predictor.json`` is a one-line :class:`UsageError` naming the fix.
    """
    fix = (
        "train one with 'popcorn predictor train --predictor DIR' and give --predictor DIR "
        "(or [predictor] path), or use --profile popcorn to draw from the whole corpus"
    )
    if predictor is None:
        raise UsageError(f"the test-split reference pool needs a predictor folder: {fix}")
    if not is_trained(predictor):
        where = one_line(str(predictor))
        raise UsageError(
            f"the test-split reference pool needs the predictor's split, but {where!r} holds "
            f"no trained predictor ({META_FILE}): {fix}"
        )
    return PredictorFolder.read(predictor).split.held_out


def allowed_ids(settings: PESettings) -> frozenset[str] | None:
    """The ids the pool's kind admits: the predictor's test split, or None (every id)."""
    return predictor_test_split(settings.predictor) if settings.pool == "test-split" else None


def reference_pool_ids(settings: Settings) -> set[str]:
    """The ids of every video that PE under ``settings`` may show to the LLM as a reference,
    whatever N and K (the pool is fixed before routing). Reads the corpus, not its index.

    A study compares these with the scoring predictor's bank (training + validation ids) to
    refuse a leak. Raises :class:`UsageError` (one line) when the pool cannot be known: no
    corpus, or a test-split pool without a trained predictor.
    """
    pe = PESettings.from_settings(settings)
    allowed = allowed_ids(pe)
    corpus = Corpus.load(pe.corpus)
    keep = in_pool(corpus.videos, allowed, pe.complete)
    return {v.video_id for v, ok in zip(corpus.videos, keep, strict=True) if ok}


MAX_LOADED_CORPORA = 4
"""Corpora kept loaded per process, most recently used first; older ones are let go."""

_stamps: dict[str, tuple[object, ...]] = {}
"""The stamp of each corpus whose retriever is held, to let a stale one go."""
_stamps_lock = threading.Lock()
_STAMPED = (
    "corpus.json",
    "videos.jsonl",
    "index/index.json",
    "index/videos.npy",
    "index/categories.npy",
)


def _stamp(folder: Path) -> tuple[object, ...]:
    """What changes when the corpus is re-imported or its index rebuilt (files are replaced
    by renames, so the inode changes even when size and time do not)."""
    stamp: list[object] = []
    for name in _STAMPED:
        try:
            info = os.stat(folder / name)
        except OSError:
            stamp.append(None)
        else:
            stamp.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def shared_retriever(corpus: Path | str, embedder: str | None = None) -> Retriever:
    """The process's retriever over the index of ``corpus``: loaded on first use, loaded again
    when the corpus or its index changed on disk, and shared by every caller in between."""
    from popcorn.retrieval.index import check_embedder, load_index

    key = os.path.realpath(corpus)
    stamp = _stamp(Path(key))  # taken first: a rebuild during the load is seen next time
    with _stamps_lock:
        stale = _stamps.get(key)
        _stamps[key] = stamp
    if stale is not None and stale != stamp:
        MODELS.drop("retriever", (key, stale))
    retriever = MODELS.get(
        "retriever",
        (key, stamp),
        lambda: Retriever(load_index(corpus)),
        keep=MAX_LOADED_CORPORA,
    )
    check_embedder(retriever.index.meta, embedder, corpus)
    return retriever


def open_pool(settings: PESettings) -> tuple[Retriever, Pool]:
    """The corpus's shared retriever and the pool ``settings`` name, computed once per loaded
    index; an empty pool is a one-line :class:`UsageError` saying why."""
    allowed = allowed_ids(settings)  # before loading the index: a missing split fails fast
    retriever = shared_retriever(settings.corpus, settings.embedder)
    pool = retriever.pool(allowed, settings.complete)
    if pool.size == 0:
        # Tell apart "no id in common" from "no video complete enough": the fixes differ.
        in_split = allowed is not None and retriever.pool(allowed, False).size > 0
        raise UsageError(_empty_pool(settings, allowed is not None and not in_split))
    return retriever, pool


class Enhancer:
    """Answers references for queries (thread-safe) from the corpus's shared retriever, within
    the pool its settings name (computed once, when it is built)."""

    def __init__(self, settings: PESettings) -> None:
        self.settings = settings
        self.retriever: Retriever | None = None
        self.pool: Pool | None = None
        self._pool_ids: str | None = None
        if settings.refs > 0:
            self.retriever, self.pool = open_pool(settings)
            if settings.pool == "test-split":
                videos = self.retriever.index.corpus.videos
                self._pool_ids = ids_digest(videos[i].video_id for i in self.pool.rows)

    def identity(self) -> dict[str, Any]:
        """What changes PE's output: part of every PE run's job key."""
        s = self.settings
        base: dict[str, Any] = {"refs": s.refs, "categories": s.categories}
        if self.retriever is not None:
            base.update(self.retriever.index.identity())
            base.update(pool=s.pool, complete=s.complete, routing=s.routing)
            if self._pool_ids is not None:
                base["pool_ids"] = self._pool_ids
        return base

    def references(self, query: str) -> References:
        if self.retriever is None:
            return References(query, 0, [], [])
        return self.retriever.search(
            query,
            self.settings.refs,
            self.settings.categories,
            pool=self.pool,
            routing=self.settings.routing,
        )


def _empty_pool(settings: PESettings, no_split_ids: bool) -> str:
    """Why no video of the corpus can be a reference, and what to do."""
    corpus = one_line(str(settings.corpus))
    if no_split_ids:
        return (
            f"no video of the corpus in {corpus!r} is in the test split of the predictor in "
            f"{one_line(str(settings.predictor))!r}: import the corpus the predictor was "
            "trained on, or train the predictor on this corpus"
        )
    return (
        f"no video of the corpus in {corpus!r}"
        + (" that is in the predictor's test split" if settings.pool == "test-split" else "")
        + " has all five fields (title, cover description, caption, category, a comment): "
        "import the captions and LLaVA cover captions with 'popcorn corpus import microlens "
        "DIR --captions FILE --cover-captions FILE'"
    )


def check_original(script: Script, references: References) -> None:
    """Reject a script whose title is one of the references' (PE asks for no copying)."""
    for ref in references.items:
        if similar(script.title, ref.title):
            raise ScriptParseError(
                "copied_reference",
                f"the title copies reference {ref.rank} ({ref.title!r}) instead of a new idea",
            )
