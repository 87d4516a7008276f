"""The study's retrieval: route the query to its nearest categories, split each category into
popular (top 90% by comment count) and unpopular (bottom 10%), and keep the N nearest videos,
90% popular and 10% unpopular, in retrieval order.

Everything that does not depend on the query (category members, the popularity split) is
computed once when the retriever is built, so a query costs one embedding and a few small
matrix-vector products.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from popcorn.errors import UsageError
from popcorn.retrieval.embedders import Embedder
from popcorn.retrieval.index import Index

POPULAR_SHARE = 0.9
_RECENT_QUERIES = 4096


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
    similarity: float


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
    """(popular, unpopular) out of ``n`` references: 90% / 10%, rounding towards popular."""
    unpopular = n // 10
    return n - unpopular, unpopular


class Retriever:
    def __init__(self, index: Index, embedder: Embedder | None = None) -> None:
        self.index = index
        self.embedder = embedder or Embedder(index.embedder_name)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        videos = index.corpus.videos
        by_category: dict[str, list[int]] = {}
        for row, video in enumerate(videos):
            by_category.setdefault(video.category, []).append(row)
        counts = np.array([v.comment_count for v in videos], dtype=np.int64)
        self._members: dict[str, np.ndarray] = {}
        self._popular: dict[str, np.ndarray] = {}
        for name, rows_list in by_category.items():
            rows = np.array(rows_list, dtype=np.int64)
            # Most commented first; ties keep corpus order (stable sort).
            order = rows[np.argsort(-counts[rows], kind="stable")]
            n_popular = math.ceil(len(order) * POPULAR_SHARE)
            self._members[name] = rows
            popular = np.zeros(len(videos), dtype=bool)
            popular[order[:n_popular]] = True
            self._popular[name] = popular[rows]

    def embed(self, query: str) -> np.ndarray:
        """The query's vector; a study asks the same queries for every LLM and setting, so
        recent ones are kept (embedding is most of a query's cost on a CPU)."""
        vector = self._recent.get(query)
        if vector is None:
            vector = self.embedder.encode([query])[0]
            vector.setflags(write=False)
            self._recent[query] = vector
            if len(self._recent) > _RECENT_QUERIES:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(query)
        return vector

    def route(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        scores = self.index.categories @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.index.category_names[i], float(scores[i])) for i in top]

    def search(self, query: str, refs: int = 10, categories: int = 1) -> References:
        if refs < 0 or categories < 1:
            raise UsageError("--refs must be 0 or more and --categories 1 or more")
        n_categories = len(self.index.category_names)
        warnings: list[str] = []
        if categories > n_categories:
            warnings.append(f"the corpus has {n_categories} categories; using all of them")
            categories = n_categories
        vector = self.embed(query)
        chosen = self.route(vector, categories)
        if refs == 0:
            return References(query, 0, chosen, [], warnings)
        rows = np.concatenate([self._members[name] for name, _ in chosen])
        popular = np.concatenate([self._popular[name] for name, _ in chosen])
        sims = self.index.videos[rows] @ vector
        want_pop, want_unpop = split_counts(refs)
        picked: list[int] = []
        for mask, want, label in (
            (popular, want_pop, "popular"),
            (~popular, want_unpop, "unpopular"),
        ):
            pool = np.flatnonzero(mask)
            if len(pool) < want:
                warnings.append(
                    f"only {len(pool)} {label} videos in {_names(chosen)}; "
                    f"using {len(pool)} of the {want} asked for"
                )
            best = pool[np.argsort(-sims[pool], kind="stable")[:want]]
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


def _names(chosen: list[tuple[str, float]]) -> str:
    return ", ".join(repr(n) for n, _ in chosen)
