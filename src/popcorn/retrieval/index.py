"""The persistent retrieval index: every video and category embedded once, kept on disk.

Layout, inside the corpus folder::

    index/index.json        embedder identity, corpus version, counts, text recipe
    index/videos.npy        float32 [videos, dim], L2-normalised, in videos.jsonl order
    index/categories.npy    float32 [categories, dim]

A build writes into a temporary folder and swaps it in at the end, so an interrupted build
leaves the previous index (or none), never half of one. Loading trusts nothing it reads: every
field, the vector files' headers and sizes (checked before anything is allocated) and the
vectors themselves (finite, unit length) are checked, and a damaged file is a one-line error
naming the command that rebuilds the index.
"""

from __future__ import annotations

import os
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
from popcorn.retrieval.corpus import (
    Corpus,
    DamagedCorpusError,
    check_fields,
    open_stored,
    read_json_object,
)
from popcorn.retrieval.embedders import DEFAULT_EMBEDDER, Embedder
from popcorn.safety import one_line

SCHEMA_VERSION = 1
TEXT_RECIPE = "title. cover_desc. caption"
MAX_DIM = 65536  # far above any sentence embedder; a larger header is damage
_UNIT_TOLERANCE = 1e-2  # float32 rounding is ~1e-7; anything near this is not our vectors

_META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "embedder": dict,
    "corpus_version": str,
    "videos": int,
    "categories": list,
    "built_at": str,
}


@dataclass
class Index:
    corpus: Corpus
    meta: dict[str, Any]
    videos: np.ndarray
    categories: np.ndarray
    category_names: list[str]
    corpus_folder: Path = Path()
    """Where it was loaded from (for messages that say how to rebuild it)."""

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


def rebuild_command(corpus_folder: Path | str, embedder: str | None = None) -> str:
    """The command that rebuilds the index of ``corpus_folder`` (with ``embedder``)."""
    command = f"popcorn corpus index --corpus {corpus_folder}"
    if embedder is not None and embedder != DEFAULT_EMBEDDER:
        command += f" --embedder {embedder}"
    return one_line(command)


def check_embedder(meta: dict[str, Any], embedder: str | None, corpus_folder: Path | str) -> None:
    """Refuse an index built with another embedder than ``embedder`` (None accepts any)."""
    built_with = meta["embedder"]["name"]
    if embedder is not None and embedder != built_with:
        raise UsageError(
            f"the index was built with embedder {one_line(built_with)!r}, not "
            f"{one_line(embedder)!r}: run '{rebuild_command(corpus_folder, embedder)}'"
        )


def load_index(corpus_folder: Path | str, embedder: str | None = None) -> Index:
    """Load the index, checking it matches the corpus (and ``embedder``, when given).

    A damaged corpus or index file raises :class:`DamagedCorpusError`, naming the command that
    rebuilds it.
    """
    corpus_folder = Path(corpus_folder)
    corpus = Corpus.load(corpus_folder)
    folder = index_folder(corpus_folder)
    if not os.path.lexists(folder / "index.json"):
        raise UsageError(
            f"the corpus in {str(corpus_folder)!r} has no index: run "
            f"'{rebuild_command(corpus_folder)}'"
        )

    def damaged(why: str, built_with: str | None = None) -> DamagedCorpusError:
        return DamagedCorpusError(
            f"the index in {one_line(str(folder))!r} is damaged: {why}; rebuild it with "
            f"'{rebuild_command(corpus_folder, built_with)}'"
        )

    if os.path.islink(folder):
        raise damaged("the index folder is a link, not a folder popcorn wrote")
    meta = read_json_object(folder / "index.json", damaged)
    schema = meta.get("schema_version")
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise UsageError(f"the index in {str(folder)!r} was written by a newer popcorn")
    problem = check_fields(meta, _META_FIELDS, "index.json") or check_fields(
        meta["embedder"], {"name": str, "dim": int}, "index.json's embedder"
    )
    if problem:
        raise damaged(problem)
    if meta["corpus_version"] != corpus.version:
        raise UsageError(
            f"the index was built for another version of the corpus (re-imported since): "
            f"run '{rebuild_command(corpus_folder, meta['embedder']['name'])}'"
        )
    check_embedder(meta, embedder, corpus_folder)
    built_with = meta["embedder"]["name"]
    dim = meta["embedder"]["dim"]
    if meta["videos"] != len(corpus.videos) or meta["categories"] != corpus.categories():
        raise damaged("index.json does not describe its corpus", built_with)
    if not 1 <= dim <= MAX_DIM:
        raise damaged(f"index.json gives vectors {dim} numbers long", built_with)

    def damaged_vectors(why: str) -> DamagedCorpusError:
        return damaged(why, built_with)

    videos = _read_vectors(folder / "videos.npy", len(corpus.videos), dim, damaged_vectors)
    categories = _read_vectors(
        folder / "categories.npy", len(corpus.categories()), dim, damaged_vectors
    )
    return Index(corpus, meta, videos, categories, list(meta["categories"]), corpus_folder)


def _read_vectors(
    path: Path, rows: int, dim: int, damaged: Callable[[str], Exception]
) -> np.ndarray:
    """The ``rows`` x ``dim`` float32 unit vectors in the .npy file ``path`` (read-only).

    The header is checked against the expected shape and the file's size before the data is
    read, so a header claiming a huge shape allocates nothing.
    """
    name = path.name
    with open_stored(path, damaged) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise damaged(f"{name} has an unknown format version {version}")
        except (ValueError, EOFError, SyntaxError, TypeError):
            raise damaged(f"{name} is not a vector file (cut short?)") from None
        if dtype != np.dtype(np.float32) or fortran:
            raise damaged(f"{name} does not hold float32 vectors")
        if shape != (rows, dim):
            raise damaged(f"{name} holds a {_shape(shape)} array, not {rows} x {dim}")
        size = rows * dim * dtype.itemsize
        left = os.fstat(f.fileno()).st_size - f.tell()
        if left != size:
            raise damaged(f"{name} holds {left:,} bytes of vectors, not {size:,} (cut short?)")
        data = f.read(size)
    if len(data) != size:  # cut short while being read
        raise damaged(f"{name} holds {len(data):,} bytes of vectors, not {size:,}")
    vectors = np.frombuffer(data, dtype=np.float32).reshape(rows, dim)
    if not np.isfinite(vectors).all():
        raise damaged(f"{name} holds NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    if rows and not np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE):
        raise damaged(f"{name} holds vectors that are not unit length")
    return vectors


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(n) for n in shape) if shape else "scalar"
