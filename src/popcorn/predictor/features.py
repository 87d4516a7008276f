"""What the predictor learns from: per video, sampled-frame features, a title embedding, a
retrieval embedding and the label log2(1 + comments).

``extract`` reads a corpus (``popcorn corpus import ...``) and a folder of its videos named
``<video_id>.mp4`` (MicroLens' raw video folder), and writes ``features.npz`` and
``features.json`` into the predictor folder. Frame features are also cached one file per video
under ``cache/``, keyed by the video's content hash and the encoder, so a rerun (or a second
corpus sharing videos) only encodes what is new. Videos that are missing, undecodable or shorter
than the frames asked for are skipped, counted by reason and named in the report.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from popcorn import __version__
from popcorn._io import atomic_write_bytes, atomic_write_json
from popcorn.errors import UsageError
from popcorn.predictor.frames import FRAMES, VideoError, sample_frames

if TYPE_CHECKING:
    from popcorn.predictor.encoders import VisualEncoder
    from popcorn.retrieval.embedders import Embedder

SCHEMA_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")


def label(comments: int | np.ndarray) -> Any:
    """The study's target: log2(1 + comments), so zero comments is 0, not minus infinity."""
    return np.log2(1.0 + np.asarray(comments, dtype=np.float64)).astype(np.float32)


def retrieval_text(title: str, caption: str = "") -> str:
    """What the retrieval embedding reads: the title, plus a description of the frames."""
    return f"{title}. {caption}" if caption else title


@dataclass
class FeatureSet:
    ids: list[str]
    titles: list[str]
    comments: np.ndarray  # (n,) int64
    frames: np.ndarray  # (n, F, Dv) float32
    text: np.ndarray  # (n, Dt) float32, L2-normalised
    retrieval: np.ndarray  # (n, Dr) float32, L2-normalised
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(label(self.comments))

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet(
            [self.ids[i] for i in rows],
            [self.titles[i] for i in rows],
            self.comments[rows],
            self.frames[rows],
            self.text[rows],
            self.retrieval[rows],
            self.meta,
        )

    def save(self, folder: Path, stem: str = "features") -> None:
        """``<stem>.npz`` (frames stored as float16: half the disk, no measurable loss) and
        ``<stem>.json`` last, so a reader that finds the JSON finds the matching arrays."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            ids=np.array(self.ids),
            titles=np.array(self.titles),
            comments=self.comments,
            frames=self.frames.astype(np.float16),
            text=self.text,
            retrieval=self.retrieval,
        )
        data = buffer.getvalue()
        atomic_write_bytes(folder / f"{stem}.npz", data)
        meta = {**self.meta, "sha256": hashlib.sha256(data).hexdigest(), "videos": len(self)}
        atomic_write_json(folder / f"{stem}.json", meta)
        self.meta = meta

    @classmethod
    def load(cls, folder: Path, stem: str = "features") -> FeatureSet:
        meta_file = folder / f"{stem}.json"
        if not meta_file.is_file():
            raise UsageError(
                f"no features in {str(folder)!r}: run 'popcorn predictor features --videos DIR'"
            )
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("schema_version", 0) != SCHEMA_VERSION:
            raise UsageError(
                f"the features in {str(folder)!r} have format {meta.get('schema_version')}, this "
                f"popcorn reads {SCHEMA_VERSION}: extract them again"
            )
        with np.load(folder / f"{stem}.npz") as z:
            return cls(
                [str(x) for x in z["ids"]],
                [str(x) for x in z["titles"]],
                z["comments"].astype(np.int64),
                z["frames"].astype(np.float32),
                z["text"],
                z["retrieval"],
                meta,
            )


@dataclass
class ExtractReport:
    videos: int = 0
    kept: int = 0
    cached: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, video_id: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 5:
            shown.append(f"{video_id}: {detail}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "kept": self.kept,
            "cached": self.cached,
            "skipped": dict(self.skipped),
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
        }


def find_video(videos: Path, video_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        path = videos / f"{video_id}{suffix}"
        if path.is_file():
            return path
    return None


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FrameFeatures:
    """Frame features of one video file, from the cache when its content was seen before."""

    def __init__(self, visual: VisualEncoder, frames: int, cache: Path | None) -> None:
        self.visual = visual
        self.frames = frames
        self.cache = None
        if cache is not None:
            tag = f"{visual.identity()['fingerprint']}-{frames}"
            self.cache = cache / f"frames-{tag}"

    def __call__(self, path: Path) -> tuple[np.ndarray, bool]:
        """(F x Dv features, whether they came from the cache); raises VideoError."""
        cached = self.cache / f"{file_hash(path)[:32]}.npy" if self.cache else None
        if cached is not None and cached.is_file():
            return np.load(cached).astype(np.float32), True
        vectors = self.visual.encode(sample_frames(path, self.frames))
        if cached is not None:
            buffer = io.BytesIO()
            np.save(buffer, vectors.astype(np.float16))
            atomic_write_bytes(cached, buffer.getvalue())
        return vectors, False


def extract(
    corpus_folder: Path,
    videos: Path,
    out: Path,
    visual: VisualEncoder,
    text: Embedder,
    frames: int = FRAMES,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[FeatureSet, ExtractReport]:
    """Extract features for every corpus video found in ``videos``; see the module docstring."""
    import time

    from popcorn.retrieval.corpus import Corpus

    if not videos.is_dir():
        raise UsageError(f"video folder not found: {str(videos)!r}")
    corpus = Corpus.load(corpus_folder)
    started = time.perf_counter()
    report = ExtractReport(videos=len(corpus.videos))
    encode = FrameFeatures(visual, frames, out / "cache")
    kept, vectors = [], []
    for done, video in enumerate(corpus.videos, 1):
        path = find_video(videos, video.video_id)
        if path is None:
            report.skip(video.video_id, "missing", f"no {video.video_id}.mp4 in {videos}")
        else:
            try:
                frame_features, was_cached = encode(path)
            except VideoError as err:
                report.skip(video.video_id, err.reason, str(err))
            else:
                kept.append(video)
                vectors.append(frame_features)
                report.cached += was_cached
        if progress is not None:
            progress(done, len(corpus.videos))
    report.kept = len(kept)
    if not kept:
        missing = report.skipped.get("missing", 0)
        hint = (
            f" (all {missing} missing: is {str(videos)!r} the folder of <video_id>.mp4 files?)"
            if missing == report.videos
            else ""
        )
        raise UsageError(f"no usable video among {report.videos}{hint}")
    titles = [v.title for v in kept]
    features = FeatureSet(
        ids=[v.video_id for v in kept],
        titles=titles,
        comments=np.array([v.comment_count for v in kept], dtype=np.int64),
        frames=np.stack(vectors),
        text=text.encode(titles),
        retrieval=text.encode([retrieval_text(v.title, v.caption) for v in kept]),
        meta={
            "schema_version": SCHEMA_VERSION,
            "popcorn": __version__,
            "corpus_version": corpus.version,
            "frames": frames,
            "visual": visual.identity(),
            "text": text.identity(),
        },
    )
    report.seconds = time.perf_counter() - started
    features.meta["extract"] = report.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    features.save(out)
    return features, report
