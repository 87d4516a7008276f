"""The study's retrieval over a reference pool.

The pool (:class:`Pool`) is fixed first: the videos that may be shown as references at all (the
whole corpus, or only a predictor's held-out test split, or only videos with all five fields).
Then, per query, as the study does:

1. route the query to its K nearest categories among the pool's (by the category's name, or,
   ``routing="content"``, by its name and what its videos are about);
2. over the routed categories together, rank the pool's videos by comment count: the top 90%
   are popular, the bottom 10% unpopular;
3. keep the N nearest videos to the query, ``int(0.1 N)`` unpopular and the rest popular, the
   nearest of each label, in retrieval order.

Search is exact: every candidate is compared with the query. Vectors are unit length, so
ranking by dot product is ranking by L2 distance (``|q - v|^2 = 2 - 2 q.v``), as the study's
flat L2 index ranks them.

Everything that does not depend on the query (the pool's members per category, their content
centroids) is computed once per pool and loaded index, so a query costs one embedding and a few
small matrix-vector products.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from popcorn.errors import UsageError
from popcorn.retrieval.corpus import Video
from popcorn.retrieval.embedders import Embedder
from popcorn.retrieval.index import Index, rebuild_command
from popcorn.safety import one_line

NAME_WEIGHT = 0.2
"""In content routing, the weight of the category name's similarity; the rest goes to the
similarity with the centroid of the category's videos (see benchmarks/routing.py)."""
_RECENT_QUERIES = 4096
_POOLS_KEPT = 8

Routing = Literal["name", "content"]
ROUTINGS: tuple[Routing, ...] = ("name", "content")


@dataclass(frozen=True)
class Reference:
    rank: int
    video_id: str
    title: str
    cover_desc: str
    caption: str
    category: str
    comment_count: int
    popular: bool
    """In the top 90% of the routed categories' videos by comment count: the study's label,
    relative to those videos, so a video with no comments can carry it (ties at 0)."""
    similarity: float

    @property
    def tier(self) -> str:
        """The label in words that are true of this video: its tier by comment count, and
        "no comments" rather than any word of popularity when it has none."""
        tier = "top 90%" if self.popular else "bottom 10%"
        return f"{tier}, no comments" if self.comment_count == 0 else tier


@dataclass(frozen=True)
class References:
    """What PE puts in front of the LLM for one query, and how it was chosen."""

    query: str
    requested: int
    categories: list[tuple[str, float]]
    items: list[Reference]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "requested": self.requested,
            "categories": [{"name": n, "similarity": round(s, 4)} for n, s in self.categories],
            "references": [asdict(r) | {"similarity": round(r.similarity, 4)} for r in self.items],
            "warnings": self.warnings,
        }


def split_counts(n: int) -> tuple[int, int]:
    """(popular, unpopular) out of ``n``: ``int(0.1 n)`` unpopular, the rest popular.

    The same rule splits N references and a routed pool (integer arithmetic: ``ceil(0.9 n)``
    in floating point gives 64 for n = 70)."""
    unpopular = n // 10
    return n - unpopular, unpopular


def is_complete(video: Video) -> bool:
    """Whether ``video`` has all five fields the study required of a reference.

    A video nobody commented on counts as having no comment count: in MicroLens' files it has
    no comment line, so the study's join left the count empty and dropped the video.
    """
    return bool(
        video.title.strip()
        and video.cover_desc.strip()
        and video.caption.strip()
        and video.category.strip()
        and video.comment_count > 0
    )


def in_pool(videos: Iterable[Video], allowed: frozenset[str] | None, complete: bool) -> list[bool]:
    """For each video, whether it may be a reference: its id is ``allowed`` (None allows every
    id) and, when ``complete``, it has all five fields."""
    return [
        (allowed is None or v.video_id in allowed) and (not complete or is_complete(v))
        for v in videos
    ]


def ids_digest(ids: Iterable[str]) -> str:
    """A short hash of a set of ids (order does not matter)."""
    h = hashlib.sha256()
    for vid in sorted(ids):
        h.update(vid.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Pool:
    """The videos that may be references, and what routing needs to know about them."""

    rows: np.ndarray
    """Corpus rows of the pool's videos, ascending."""
    members: tuple[np.ndarray, ...]
    """Per category (index order), the pool's rows in it, ascending."""
    routable: np.ndarray
    """Per category, whether the pool has any video in it (only those can be routed to)."""
    centroids: np.ndarray
    """Per category, the unit mean of its pool videos' vectors (zero where it has none)."""

    @property
    def size(self) -> int:
        return len(self.rows)


class Retriever:
    """Answers queries over one loaded index; thread-safe, so every user of a corpus in a
    process can share one (see :func:`popcorn.retrieval.enhance.shared_retriever`)."""

    def __init__(self, index: Index, embedder: Embedder | None = None) -> None:
        self.index = index
        self.embedder = embedder or Embedder(index.embedder_name)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._pools: OrderedDict[tuple[str | None, bool], Pool] = OrderedDict()
        self._pools_lock = threading.Lock()
        videos = index.corpus.videos
        position = {name: i for i, name in enumerate(index.category_names)}
        self._category_of = np.array([position[v.category] for v in videos], dtype=np.int64)
        self._counts = np.array([v.comment_count for v in videos], dtype=np.int64)

    # --- the pool, once per loaded index ------------------------------------------------------

    def pool(self, allowed: frozenset[str] | None = None, complete: bool = False) -> Pool:
        """The pool of videos whose id is ``allowed`` (None: all) and, when ``complete``, that
        have all five fields; computed once per retriever and kept for the next caller."""
        key = (None if allowed is None else ids_digest(allowed), complete)
        with self._pools_lock:
            found = self._pools.get(key)
            if found is not None:
                self._pools.move_to_end(key)
                return found
        pool = self._make_pool(allowed, complete)
        with self._pools_lock:
            self._pools[key] = pool
            while len(self._pools) > _POOLS_KEPT:
                self._pools.popitem(last=False)
        return pool

    def _make_pool(self, allowed: frozenset[str] | None, complete: bool) -> Pool:
        mask = np.array(in_pool(self.index.corpus.videos, allowed, complete), dtype=bool)
        rows = np.flatnonzero(mask)
        n_categories = len(self.index.category_names)
        of_row = self._category_of[rows]
        members = tuple(rows[of_row == c] for c in range(n_categories))
        centroids = np.zeros((n_categories, self.index.videos.shape[1]), dtype=np.float32)
        for c, member_rows in enumerate(members):
            if len(member_rows):
                mean = self.index.videos[member_rows].mean(axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    centroids[c] = mean / norm
        routable = np.array([len(m) > 0 for m in members], dtype=bool)
        for array in (rows, centroids, routable):
            array.setflags(write=False)
        return Pool(rows, members, routable, centroids)

    # --- one query ----------------------------------------------------------------------------

    def embed(self, query: str) -> np.ndarray:
        """The query's vector; a study asks the same queries for every LLM and setting, so
        recent ones are kept (embedding is most of a query's cost on a CPU)."""
        with self._recent_lock:
            cached = self._recent.get(query)
            if cached is not None:
                self._recent.move_to_end(query)
                return cached
        # Embedded outside the lock: other queries need not wait for this one.
        vector: np.ndarray = self.embedder.encode([query])[0]
        dim = self.index.videos.shape[1]
        if vector.shape != (dim,):
            # The embedder's name now loads another model than the one the index was built with.
            raise UsageError(
                f"embedder {one_line(self.embedder.name)!r} now gives vectors "
                f"{vector.shape[0]} numbers long, the index holds {dim}: rebuild it with "
                f"'{rebuild_command(self.index.corpus_folder, self.embedder.name)}'"
            )
        vector.setflags(write=False)
        with self._recent_lock:
            self._recent[query] = vector
            if len(self._recent) > _RECENT_QUERIES:
                self._recent.popitem(last=False)
        return vector

    def route(
        self, vector: np.ndarray, k: int, pool: Pool | None = None, routing: Routing = "name"
    ) -> list[tuple[str, float]]:
        """The ``k`` categories of ``pool`` nearest to the query vector, with their scores.

        ``name``: cosine of the query and the category's name (the study). ``content``: that,
        weighted by :data:`NAME_WEIGHT`, plus the cosine of the query and the centroid of the
        category's videos, so a category whose name says little ("Delicacy") is still found
        by what it holds.
        """
        pool = pool if pool is not None else self.pool()
        scores = self.index.categories @ vector
        if routing == "content":
            scores = NAME_WEIGHT * scores + (1 - NAME_WEIGHT) * (pool.centroids @ vector)
        candidates = np.flatnonzero(pool.routable)
        top = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        return [(self.index.category_names[i], float(scores[i])) for i in top]

    def search(
        self,
        query: str,
        refs: int = 10,
        categories: int = 1,
        *,
        pool: Pool | None = None,
        routing: Routing = "name",
    ) -> References:
        """The references for ``query``: ``refs`` videos of ``pool`` (default: the whole
        corpus) from its ``categories`` nearest categories (see the module's steps)."""
        if refs < 0 or categories < 1:
            raise UsageError("--refs must be 0 or more and --categories 1 or more")
        if routing not in ROUTINGS:
            raise UsageError(f"routing must be {' or '.join(ROUTINGS)}, not {routing!r}")
        pool = pool if pool is not None else self.pool()
        n_categories = int(pool.routable.sum())
        warnings: list[str] = []
        if categories > n_categories:
            warnings.append(f"the reference pool has {n_categories} categories; using all")
            categories = n_categories
        vector = self.embed(query)
        chosen = self.route(vector, categories, pool, routing)
        if refs == 0 or not chosen:
            return References(query, refs, chosen, [], warnings)
        position = {name: i for i, name in enumerate(self.index.category_names)}
        # Ascending corpus rows, whatever the routing order: ties in comment count are then
        # broken the same way for every K.
        rows = np.sort(np.concatenate([pool.members[position[name]] for name, _ in chosen]))
        popular = self._popular(rows)
        sims = self.index.videos[rows] @ vector
        want_pop, want_unpop = split_counts(refs)
        picked: list[int] = []
        for mask, want, label in (
            (popular, want_pop, "top-90%"),
            (~popular, want_unpop, "bottom-10%"),
        ):
            candidates = np.flatnonzero(mask)
            if len(candidates) < want:
                warnings.append(
                    f"only {len(candidates)} {label} videos (by comment count) in "
                    f"{_names(chosen)}; using {len(candidates)} of the {want} asked for"
                )
            best = candidates[np.argsort(-sims[candidates], kind="stable")[:want]]
            picked.extend(best.tolist())
        picked.sort(key=lambda i: -sims[i])  # retrieval order, popular and unpopular mixed
        videos = self.index.corpus.videos
        items = [
            Reference(
                rank=r,
                video_id=videos[rows[i]].video_id,
                title=videos[rows[i]].title,
                cover_desc=videos[rows[i]].cover_desc,
                caption=videos[rows[i]].caption,
                category=videos[rows[i]].category,
                comment_count=videos[rows[i]].comment_count,
                popular=bool(popular[i]),
                similarity=float(sims[i]),
            )
            for r, i in enumerate(picked, 1)
        ]
        return References(query, refs, chosen, items, warnings)

    def _popular(self, rows: np.ndarray) -> np.ndarray:
        """For each of ``rows`` (the routed categories' pool, together), whether it is among
        the top 90% by comment count (ties: the earlier corpus row ranks higher)."""
        order = np.argsort(-self._counts[rows], kind="stable")
        n_popular, _ = split_counts(len(rows))
        popular = np.zeros(len(rows), dtype=bool)
        popular[order[:n_popular]] = True
        return popular


def _names(chosen: list[tuple[str, float]]) -> str:
    return ", ".join(repr(n) for n, _ in chosen)
