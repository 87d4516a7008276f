"""Routing accuracy and per-query cost: routing by the category's name (the study's, the paper
profile's) against routing by content (name + centroid of the category's videos, the popcorn
profile's), on generated corpora whose category names say little about what they hold.

Run: ``.venv/bin/python benchmarks/routing.py [--videos 2200] [--repeats 200]``

Data: the same generated videos (22 topics, MicroLens' raw file formats) under three namings:
``microlens`` (platform-style labels: food is "Delicacy"), ``codes`` (opaque "C01".."C22") and
``plain`` ("food", for reference); 66 everyday queries of our own, three per topic, written
in other words than the generator's vocabulary (``popcorn.retrieval.synthetic.TOPICAL_QUERIES``;
none is one of the study's queries). A query is routed right when its top-1 category is its
topic's. CPU only, the embedded all-MiniLM-L6-v2.

Cost, measured in the same run for both: the routing step alone (query vector in, top category
out; mean over ``--repeats`` passes of the 66 queries), and a whole PE preparation per query
(query embedding, routing, N=10 retrieval), cold (embedded afresh; the embedding is the same
work for both and most of the time) and repeated (the vector remembered, as a study grid asks
each query again), interleaved so both see the same machine load. Goal: content routing's PE
preparation p50 stays under the 20 ms PE latency goal (benchmarks/pe_prepare.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import get_args

import numpy as np

from popcorn.retrieval.embedders import Embedder
from popcorn.retrieval.importers import import_microlens
from popcorn.retrieval.index import build_index, load_index
from popcorn.retrieval.search import Retriever, Routing
from popcorn.retrieval.synthetic import (
    TOPICAL_QUERIES,
    CategoryNames,
    category_name,
    generate_microlens,
)

ROUTINGS: tuple[Routing, ...] = get_args(Routing)


def build(root: Path, names: CategoryNames, videos: int, embedder: Embedder) -> Retriever:
    generate_microlens(root / "raw", videos=videos, seed=0, names=names)
    corpus, report = import_microlens(root / "raw")
    corpus.save(root / "corpus", report)
    build_index(root / "corpus", embedder)
    return Retriever(load_index(root / "corpus"), embedder)


def accuracy(retriever: Retriever, names: CategoryNames, routing: Routing) -> float:
    pool = retriever.pool()
    hits = 0
    for query, topic in TOPICAL_QUERIES:
        top = retriever.route(retriever.embed(query), 1, pool, routing)[0][0]
        hits += top == category_name(topic, names)
    return hits / len(TOPICAL_QUERIES)


def routing_cost(retriever: Retriever, repeats: int) -> dict[Routing, float]:
    """Seconds per query of the routing step alone, for each routing (interleaved passes)."""
    pool = retriever.pool()
    vectors = [retriever.embed(query) for query, _ in TOPICAL_QUERIES]
    spent = dict.fromkeys(ROUTINGS, 0.0)
    for _ in range(repeats):
        for routing in ROUTINGS:
            t = time.perf_counter()
            for vector in vectors:
                retriever.route(vector, 1, pool, routing)
            spent[routing] += time.perf_counter() - t
    return {r: s / (repeats * len(vectors)) for r, s in spent.items()}


def preparation_cost(
    corpus: Path, embedder: Embedder
) -> tuple[dict[Routing, list[float]], dict[Routing, list[float]]]:
    """Seconds per query of a whole PE preparation (embedding + routing + N=10 retrieval) for
    each routing: (cold, the query embedded afresh; repeated, its vector remembered)."""
    index = load_index(corpus)
    # One retriever per routing, so each query is embedded afresh by both (no shared cache).
    fresh = {r: Retriever(index, embedder) for r in ROUTINGS}
    for retriever in fresh.values():
        retriever.search("warm-up query", refs=10, pool=retriever.pool())
    cold: dict[Routing, list[float]] = {r: [] for r in ROUTINGS}
    repeated: dict[Routing, list[float]] = {r: [] for r in ROUTINGS}
    for samples in (cold, repeated):
        for i, (query, _) in enumerate(TOPICAL_QUERIES):
            order = ROUTINGS if i % 2 == 0 else ROUTINGS[::-1]
            for routing in order:
                retriever = fresh[routing]
                t = time.perf_counter()
                retriever.search(query, refs=10, pool=retriever.pool(), routing=routing)
                samples[routing].append(time.perf_counter() - t)
    return cold, repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2200)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    embedder = Embedder()
    embedder.model  # noqa: B018  (load before timing)
    namings: tuple[CategoryNames, ...] = ("microlens", "codes", "plain")
    with tempfile.TemporaryDirectory() as tmp:
        retrievers = {n: build(Path(tmp) / n, n, args.videos, embedder) for n in namings}
        scores = {(n, r): accuracy(retrievers[n], n, r) for n in namings for r in ROUTINGS}
        route_s = routing_cost(retrievers["microlens"], args.repeats)
        cold, repeated = preparation_cost(Path(tmp) / "microlens" / "corpus", embedder)

    print(
        f"corpus: {args.videos:,} generated videos, 22 categories; {len(TOPICAL_QUERIES)} "
        "topical queries; CPU, embedder minilm-l6"
    )
    print(f"{'category names':<16} {'name routing':>13} {'content routing':>16} {'gain':>8}")
    for n in namings:
        by_name, by_content = scores[n, "name"], scores[n, "content"]
        print(
            f"{n:<16} {by_name:>12.1%} {by_content:>16.1%} "
            f"{(by_content - by_name) * 100:>+7.1f} pts"
        )
    print(f"{'per-query cost':<42} {'name':>10} {'content':>10} {'ratio':>7}")
    name_us, content_us = route_s["name"] * 1e6, route_s["content"] * 1e6
    print(
        f"{'routing step alone (us, mean)':<42} {name_us:>10.1f} {content_us:>10.1f} "
        f"{content_us / name_us:>6.2f}x"
    )
    for label, samples in (("cold", cold), ("repeated query", repeated)):
        p50 = {r: statistics.median(s) * 1e3 for r, s in samples.items()}
        p95 = {r: float(np.percentile(s, 95)) * 1e3 for r, s in samples.items()}
        for q, figures in (("p50", p50), ("p95", p95)):
            row = f"PE preparation, {label} (ms, {q})"
            print(
                f"{row:<42} {figures['name']:>10.2f} {figures['content']:>10.2f} "
                f"{figures['content'] / figures['name']:>6.2f}x"
            )
    # The cold figures are mostly the query embedding, the same work for both routings and
    # at the mercy of the machine's load; what content routing adds is the difference.
    added_ms = statistics.median(repeated["content"]) - statistics.median(repeated["name"])
    print(
        f"content routing adds {content_us - name_us:.1f} us to the routing step and "
        f"{added_ms * 1e3:+.0f} us to a repeated query's preparation (p50); PE latency goal: "
        "pe_prepare.py's cold p50 plus this under 20 ms"
    )


if __name__ == "__main__":
    main()
