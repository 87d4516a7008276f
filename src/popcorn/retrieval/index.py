"""The persistent retrieval index: every video and category embedded once, kept on disk.

Layout, inside the corpus folder::

    index/index.json        embedder identity, corpus version, counts, text recipe
    index/videos.npy        float32 [videos, dim], L2-normalised, in videos.jsonl order
    index/categories.npy    float32 [categories, dim]

A build writes into a temporary folder and swaps it in at the end, so an interrupted build
leaves the previous index (or none), never half of one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from popcorn._io import atomic_write_json
from popcorn.errors import UsageError
from popcorn.retrieval.corpus import Corpus
from popcorn.retrieval.embedders import Embedder

SCHEMA_VERSION = 1
TEXT_RECIPE = "title. cover_desc. caption"


@dataclass
class Index:
    corpus: Corpus
    meta: dict[str, Any]
    videos: np.ndarray
    categories: np.ndarray
    category_names: list[str]

    @property
    def embedder_name(self) -> str:
        return str(self.meta["embedder"]["name"])

    def identity(self) -> dict[str, Any]:
        """What a PE run depends on: the corpus version and the embedder."""
        return {"corpus": self.corpus.version, "embedder": self.meta["embedder"]}


def index_folder(corpus_folder: Path) -> Path:
    return Path(corpus_folder) / "index"


def build_index(
    corpus_folder: Path | str,
    embedder: Embedder,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the corpus in ``corpus_folder`` and replace its index; returns the index meta.

    ``progress(done, total)`` is called as videos are embedded.
    """
    corpus_folder = Path(corpus_folder)
    corpus = Corpus.load(corpus_folder)
    if not corpus.videos:
        raise UsageError(f"the corpus in {str(corpus_folder)!r} has no videos")
    loading = time.perf_counter()
    embedder.model  # noqa: B018  (load first, so the build time below is embedding alone)
    load_seconds = time.perf_counter() - loading
    started = time.perf_counter()
    categories = corpus.categories()
    category_vectors = embedder.encode(categories, batch_size=batch_size)
    texts = [v.text() for v in corpus.videos]
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(texts))

    video_vectors = embedder.encode(texts, batch_size=batch_size, progress=step)
    seconds = time.perf_counter() - started
    meta = {
        "schema_version": SCHEMA_VERSION,
        "embedder": embedder.identity(),
        "corpus_version": corpus.version,
        "videos": len(texts),
        "categories": categories,
        "text": TEXT_RECIPE,
        "build_seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = index_folder(corpus_folder)
    tmp = Path(tempfile.mkdtemp(prefix=".index-", dir=corpus_folder))
    try:
        np.save(tmp / "videos.npy", video_vectors)
        np.save(tmp / "categories.npy", category_vectors)
        atomic_write_json(tmp / "index.json", meta)
        old = corpus_folder / ".index-old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def load_index(corpus_folder: Path | str, embedder: str | None = None) -> Index:
    """Load the index, checking it matches the corpus (and ``embedder``, when given)."""
    corpus_folder = Path(corpus_folder)
    corpus = Corpus.load(corpus_folder)
    folder = index_folder(corpus_folder)
    rebuild = f"popcorn corpus index --corpus {corpus_folder}"
    if not (folder / "index.json").is_file():
        raise UsageError(f"the corpus in {str(corpus_folder)!r} has no index: run '{rebuild}'")
    meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    if meta.get("schema_version", 0) > SCHEMA_VERSION:
        raise UsageError(f"the index in {str(folder)!r} was written by a newer popcorn")
    if meta.get("corpus_version") != corpus.version:
        raise UsageError(
            f"the index was built for another version of the corpus (re-imported since): "
            f"run '{rebuild}'"
        )
    built_with = meta["embedder"]["name"]
    if embedder is not None and embedder != built_with:
        raise UsageError(
            f"the index was built with embedder {built_with!r}, not {embedder!r}: run "
            f"'{rebuild} --embedder {embedder}'"
        )
    videos = np.load(folder / "videos.npy")
    categories = np.load(folder / "categories.npy")
    if videos.shape[0] != len(corpus.videos) or categories.shape[0] != len(meta["categories"]):
        raise UsageError(f"the index in {str(folder)!r} does not match its corpus: run '{rebuild}'")
    return Index(corpus, meta, videos, categories, list(meta["categories"]))
