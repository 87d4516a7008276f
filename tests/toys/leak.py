"""The PE leak's data: a predictor whose retrieval bank holds the corpus PE draws from.

Scoring retrieves the bank videos nearest to a script's title and video prompt, with their
labels. When PE may show the LLM a video of that bank, a script that echoes it (``mock:``
does: a near-copy title, the reference's caption as its video prompt) retrieves that very
video, label included, into its own score. The study drew references from the predictor's
held-out test split only, which the bank never holds; :func:`build_leak_setup` builds both
situations so they can be compared: a generated corpus of short videos, a toy predictor trained
on it (:func:`toys.predictor.build_toy_predictor`: its bank is that corpus's training split, so
corpus and bank share ids), the corpus indexed for PE, a second corpus holding only the
predictor's test split (as ``corpus import --only-ids`` makes it), and queries on the corpus's
topics. :func:`scoring_neighbours` says which bank videos a script's score retrieved, and
:func:`bank_without` scores with some videos taken out of the bank (the direct ablation of the
leak: the same clip scored with and without the references its LLM was shown).

tests/test_profile_study.py and benchmarks/pe_leak.py (the experiment) use it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from popcorn.predictor.score import Predictor


@dataclass(frozen=True)
class LeakSetup:
    """Everything a leak study needs, under one folder."""

    predictor: Path
    corpus: Path
    """The whole generated corpus, indexed: its training ids are the predictor's bank."""
    test_corpus: Path
    """Only the predictor's test split, indexed (``corpus import --only-ids``)."""
    queries: Path
    bank: frozenset[str]
    test: frozenset[str]


def build_leak_setup(
    root: Path | str,
    videos: int = 240,
    seed: int = 11,
    queries: int = 16,
    predictor: Path | None = None,
) -> LeakSetup:
    """Build the corpus, the predictor, both indexed PE corpora and the queries under ``root``.

    ``predictor``: a folder :func:`toys.predictor.build_toy_predictor` made
    (with its generated data beside it), used as it is instead of training a new one."""
    import shutil

    from popcorn.predictor.folder import PredictorFolder
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_table, keep_only
    from popcorn.retrieval.index import build_index
    from toys.corpus import _PLACES, _SUBJECTS
    from toys.predictor import build_toy_predictor

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if predictor is None:
        predictor = build_toy_predictor(root, videos=videos, seed=seed)
    predictor = Path(predictor).resolve()
    # build_toy_predictor imports its generated table as data/ -> corpus/ beside the predictor
    # and trains on that corpus: PE over it draws from the predictor's own bank.
    made = predictor.parent
    corpus = root / "corpus"
    if made != root:
        shutil.copytree(made / "corpus", corpus, ignore=shutil.ignore_patterns("index"))
    build_index(corpus, Embedder())
    split = PredictorFolder.read(predictor).split
    bank, test = split.bank, split.held_out
    table, report = import_table(made / "data" / "table.jsonl")
    keep_only(table, report, set(test), "the predictor's test split").save(
        root / "test-corpus", report
    )
    build_index(root / "test-corpus", Embedder())
    rng = random.Random(seed)
    pairs = [(s, p) for s in _SUBJECTS for p in _PLACES]
    chosen = rng.sample(pairs, min(queries, len(pairs)))
    lines = ["prompt,type", *(f"A {s} {p},concrete" for s, p in chosen)]
    (root / "queries.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LeakSetup(predictor, corpus, root / "test-corpus", root / "queries.csv", bank, test)


def scoring_neighbours(predictor: Predictor, title: str, video_prompt: str) -> list[str]:
    """The ids of the bank videos that scoring a clip with this title and video prompt
    retrieves (with their labels), nearest first: what
    :meth:`~popcorn.predictor.score.Predictor.score_video` feeds the model."""
    from popcorn.predictor.features import normalised, retrieval_text
    from popcorn.predictor.train import neighbours

    encoders = predictor.encoders()
    if encoders.captioner is not None:
        raise ValueError("this predictor captions frames: its retrieval text is not the script's")
    vector = normalised(encoders.retrieval.encode([retrieval_text(title, video_prompt)]))
    rows, _ = neighbours(vector, predictor.bank.retrieval, predictor.meta["model"]["retrieved"])
    return [predictor.bank.ids[i] for i in rows[0]]


@contextmanager
def bank_without(predictor: Predictor, ids: Collection[str]) -> Iterator[int]:
    """Within the block, ``predictor`` retrieves from its bank less the videos ``ids``; yields
    how many of them the bank held. The model, its encoders and everything else stay as they
    are, so a score taken inside differs from one taken outside only by what was removed."""
    import numpy as np

    whole = predictor.bank
    removed = set(ids)
    keep = np.array([i for i, vid in enumerate(whole.ids) if vid not in removed], dtype=np.int64)
    predictor.bank = whole.subset(keep)
    try:
        yield len(whole) - len(keep)
    finally:
        predictor.bank = whole
