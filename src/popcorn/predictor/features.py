"""What the predictor learns from: per video, sampled-frame features, a title embedding, a
retrieval embedding and the comment count its label is computed from.

Two configurations (:data:`FEATURE_RECIPES`): ``popcorn`` embeds the title, and the title plus
the corpus's caption for retrieval, with one sentence embedder (packaged MiniLM); ``mmra`` (the
paper profile) does what MMRA did: title features from AnglE BERT-base (CLS + mean pooling,
768-d, as the model consumes them), and a retrieval embedding from UAE-Large-V1 of the title
followed by BLIP captions of the same sampled frames.

``extract`` reads a corpus (``popcorn corpus import ...``) and a folder of its videos named
``<video_id>.mp4`` (MicroLens' raw video folder), and writes ``features.npz`` and
``features.json`` into the predictor folder. Frame features and frame captions are also cached
one file per video under ``cache/``, keyed by the video's content hash and the model (and the
frame count), so a rerun (or a second corpus sharing videos) only encodes what is new. Videos
that are missing, undecodable or shorter than the frames asked for are skipped, counted by
reason and named in the report.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from popcorn._io import atomic_write_bytes, atomic_write_json, read_json
from popcorn._version import __version__
from popcorn.errors import UsageError
from popcorn.predictor.frames import FRAMES, SAMPLING_OF, Sampling, VideoError, sample_frames

if TYPE_CHECKING:
    from popcorn.predictor.captions import Captioner
    from popcorn.predictor.encoders import TextEncoderLike, VisualEncoder

SCHEMA_VERSION = 2
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")

Target = Literal["log2(1+c)", "log2(c)"]
RecipeName = Literal["mmra", "popcorn"]
RECIPE_NAMES: tuple[RecipeName, ...] = ("mmra", "popcorn")
PROFILE_OF: dict[str, str] = {"mmra": "paper", "popcorn": "popcorn"}
"""The profile whose ``predictor`` field names each configuration."""


def label(comments: int | np.ndarray, target: Target = "log2(1+c)") -> Any:
    """The regression target. ``log2(1+c)`` (Popcorn's): zero comments is 0, so every video
    has a label. ``log2(c)`` (MMRA's): a video without comments has none (refused here; the
    paper configuration leaves such videos out before training)."""
    c = np.asarray(comments, dtype=np.float64)
    if target == "log2(1+c)":
        return np.log2(1.0 + c).astype(np.float32)
    if np.any(c <= 0):
        raise UsageError("log2(comments) needs at least one comment per video")
    return np.log2(c).astype(np.float32)


def retrieval_text(title: str, caption: str = "") -> str:
    """What the retrieval embedding reads: the title, plus a description of the frames."""
    return f"{title}. {caption}" if caption else title


@dataclass(frozen=True)
class TextSpec:
    """A text encoder by name: a sentence-transformers model (``pooling`` None) or a
    transformers model pooled as AnglE pools it, with an optional ``{text}`` prompt."""

    name: str
    pooling: Literal["cls", "cls_avg", "mean"] | None = None
    prompt: str = ""

    def identity_hint(self) -> dict[str, Any]:
        return {"name": self.name, "pooling": self.pooling, "prompt": self.prompt}


@dataclass(frozen=True)
class FeatureRecipe:
    name: RecipeName
    title: TextSpec
    retrieval: TextSpec | None
    """None: the title's encoder also embeds the retrieval text."""
    captioner: str | None
    """None: the retrieval text takes the corpus's caption; else frames are captioned."""


def _feature_recipes() -> dict[str, FeatureRecipe]:
    from popcorn.predictor.captions import BLIP
    from popcorn.predictor.encoders import ANGLE_BERT, UAE_LARGE, UAE_PROMPT

    return {
        "popcorn": FeatureRecipe("popcorn", TextSpec("minilm-l6"), None, None),
        "mmra": FeatureRecipe(
            "mmra",
            TextSpec(ANGLE_BERT, "cls_avg"),
            TextSpec(UAE_LARGE, "cls", UAE_PROMPT),
            BLIP,
        ),
    }


def feature_recipe(name: str) -> FeatureRecipe:
    if name not in RECIPE_NAMES:
        raise UsageError(f"unknown predictor configuration {name!r}: choose mmra or popcorn")
    return _feature_recipes()[name]


@dataclass
class FeatureSet:
    ids: list[str]
    titles: list[str]
    comments: np.ndarray  # (n,) int64
    frames: np.ndarray  # (n, F, Dv) float32
    text: np.ndarray  # (n, Dt) float32, as the title encoder returns it
    retrieval: np.ndarray  # (n, Dr) float32, L2-normalised
    meta: dict[str, Any] = field(default_factory=dict)

    def labels(self, target: Target = "log2(1+c)") -> np.ndarray:
        return np.asarray(label(self.comments, target))

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
        meta = read_json(meta_file)
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
    """Frame features (and, with a captioner, frame captions) of one video file, each from the
    cache when this content was seen before by the same model at the same frame count."""

    def __init__(
        self,
        visual: VisualEncoder,
        frames: int,
        cache: Path | None,
        captioner: Captioner | None = None,
        sampling: Sampling = "round",
    ) -> None:
        self.visual, self.frames, self.captioner = visual, frames, captioner
        self.sampling = sampling
        self.cache = self.captions = None
        if cache is not None:
            # Other frames, other features: the cache of one sampling never answers the other.
            taken = f"{frames}" if sampling == "round" else f"{frames}-{sampling}"
            self.cache = cache / f"frames-{visual.identity()['fingerprint']}-{taken}"
            if captioner is not None:
                self.captions = cache / f"captions-{captioner.tag()}-{taken}"

    def __call__(self, path: Path) -> tuple[np.ndarray, bool]:
        """(F x Dv features, whether they came from the cache); raises VideoError."""
        vectors, _, cached = self.read(path)
        return vectors, cached

    def read(self, path: Path) -> tuple[np.ndarray, list[str] | None, bool]:
        """(features, captions or None, whether both came from the cache); the video is
        decoded at most once, and only when something is missing."""
        digest = file_hash(path)[:32] if self.cache is not None else ""
        vector_file = self.cache / f"{digest}.npy" if self.cache else None
        caption_file = self.captions / f"{digest}.json" if self.captions else None
        vectors = _read_vectors(vector_file)
        captions = _read_captions(caption_file, self.frames)
        if vectors is not None and (captions is not None or self.captioner is None):
            return vectors, captions, True
        pixels = sample_frames(path, self.frames, self.sampling)
        if vectors is None:
            vectors = self.visual.encode(pixels)
            if vector_file is not None:
                buffer = io.BytesIO()
                np.save(buffer, vectors.astype(np.float16))
                atomic_write_bytes(vector_file, buffer.getvalue())
        if self.captioner is not None and captions is None:
            captions = self.captioner.caption(pixels)
            if caption_file is not None:
                atomic_write_json(caption_file, captions)
        return vectors, captions, False


def _read_vectors(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    return np.asarray(np.load(path), dtype=np.float32)


def _read_captions(path: Path | None, frames: int) -> list[str] | None:
    """Cached captions; None when there are none, or they are damaged (captioned again)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, list) and len(data) == frames and all(isinstance(c, str) for c in data)
    return data if ok else None


def extract(
    corpus_folder: Path,
    videos: Path,
    out: Path,
    visual: VisualEncoder,
    text: TextEncoderLike,
    frames: int = FRAMES,
    progress: Callable[[int, int], None] | None = None,
    *,
    retrieval: TextEncoderLike | None = None,
    captioner: Captioner | None = None,
    recipe: RecipeName = "popcorn",
) -> tuple[FeatureSet, ExtractReport]:
    """Extract features for every corpus video found in ``videos``; see the module docstring.

    ``text`` embeds titles; ``retrieval`` (default: ``text``) embeds the retrieval text, which
    is the title plus the captions ``captioner`` gives the sampled frames, or plus the corpus's
    caption without a captioner. ``recipe`` names the configuration they follow, recorded so
    training can refuse features made for the other one."""
    import time

    from popcorn.predictor.captions import video_caption
    from popcorn.retrieval.corpus import Corpus

    if not videos.is_dir():
        raise UsageError(f"video folder not found: {str(videos)!r}")
    corpus = Corpus.load(corpus_folder)
    started = time.perf_counter()
    report = ExtractReport(videos=len(corpus.videos))
    sampling = SAMPLING_OF[recipe]
    encode = FrameFeatures(visual, frames, out / "cache", captioner, sampling)
    kept, vectors, descriptions = [], [], []
    for done, video in enumerate(corpus.videos, 1):
        path = find_video(videos, video.video_id)
        if path is None:
            report.skip(video.video_id, "missing", f"no {video.video_id}.mp4 in {videos}")
        else:
            try:
                frame_features, captions, was_cached = encode.read(path)
            except VideoError as err:
                report.skip(video.video_id, err.reason, str(err))
            else:
                kept.append(video)
                vectors.append(frame_features)
                descriptions.append(video.caption if captions is None else video_caption(captions))
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
    retrieval = retrieval or text
    pairs = zip(titles, descriptions, strict=True)
    search = retrieval.encode([retrieval_text(t, d) for t, d in pairs])
    features = FeatureSet(
        ids=[v.video_id for v in kept],
        titles=titles,
        comments=np.array([v.comment_count for v in kept], dtype=np.int64),
        frames=np.stack(vectors),
        text=text.encode(titles),
        retrieval=normalised(search),
        meta={
            "schema_version": SCHEMA_VERSION,
            "popcorn": __version__,
            "recipe": recipe,
            "corpus_version": corpus.version,
            "frames": frames,
            "frame_sampling": sampling,
            "visual": visual.identity(),
            "text": text.identity(),
            "retrieval": retrieval.identity(),
            "captioner": None if captioner is None else captioner.identity(),
            "zero_comments": int(sum(v.comment_count <= 0 for v in kept)),
        },
    )
    report.seconds = time.perf_counter() - started
    features.meta["extract"] = report.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    features.save(out)
    return features, report


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Unit rows, so a dot product is the cosine MMRA's retriever ranks by."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
