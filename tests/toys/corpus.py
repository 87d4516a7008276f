"""A small MicroLens-format corpus with real video files whose popularity follows a known rule.

For tests and benchmarks of the predictor: ``table.jsonl`` in the pre-joined format and
``videos/<video_id>.mp4``. Each video has a brightness ``b`` in [0, 1] (what its frames show)
and a hook strength ``h`` in {0, 1, 2} (which words its title uses), and

    log2(1 + comments) = 1 + 5 b + 2 h + noise,

so a model that sees frames and titles can learn it, and one that sees neither cannot.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from popcorn._io import atomic_write_text
from popcorn.media.export import Encoding, write_mp4

# Lossless, on one thread: x264's lossy rate control encoded the same frames differently from
# one process to the next (pixels up to 19 apart in a few clips of 30, one thread or many), and
# every figure built on the corpus moved with them; lossless decodes to the same pixels.
_REPEATABLE = Encoding(threads=1, crf=0)

_SUBJECTS = ["cat", "dog", "chef", "skater", "robot", "dancer", "parrot", "baker"]
_PLACES = ["in the park", "at home", "on the beach", "downtown", "in the snow", "at night"]
_HOOKS = [
    ["a quiet afternoon with a", "notes on a", "slow footage of a"],
    ["watch this", "guess what this", "you will smile at this"],
    ["you will not believe this", "the most insane", "everyone is talking about this"],
]


@dataclass(frozen=True)
class SynthMedia:
    table: Path
    videos: Path
    count: int
    broken: dict[str, str]
    """video_id -> why it cannot be used (missing, undecodable, too_short)."""


def generate_media_corpus(
    folder: Path | str,
    videos: int = 120,
    seed: int = 0,
    frames: int = 12,
    size: int = 32,
    noise: float = 0.3,
    broken: bool = False,
) -> SynthMedia:
    """Write the table and the videos; with ``broken``, three extra rows whose videos are
    missing, not a video, or too short."""
    folder = Path(folder)
    video_dir = folder / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pixels = np.random.default_rng(seed)
    rows = []
    for i in range(videos):
        vid = str(20_000 + i)
        b, h = rng.random(), rng.randrange(3)
        value = 1 + 5 * b + 2 * h + rng.gauss(0, noise)
        comments = max(0, round(2 ** max(value, 0.0) - 1))
        subject, place = rng.choice(_SUBJECTS), rng.choice(_PLACES)
        title = f"{rng.choice(_HOOKS[h])} {subject} {place}"
        rows.append(_row(vid, title, subject, place, comments, i))
        write_mp4(_clip(pixels, b, frames, size), video_dir / f"{vid}.mp4", 8, _REPEATABLE)
    trouble: dict[str, str] = {}
    if broken:
        for j, reason in enumerate(("missing", "undecodable", "too_short")):
            vid = str(30_000 + j)
            rows.append(_row(vid, f"watch this broken {reason} clip", "cat", "at home", 5, j))
            trouble[vid] = reason
        (video_dir / "30001.mp4").write_bytes(b"this is not a video file at all")
        write_mp4(_clip(pixels, 0.5, 3, size), video_dir / "30002.mp4", 8, _REPEATABLE)
    table = folder / "table.jsonl"
    atomic_write_text(table, "".join(json.dumps(r) + "\n" for r in rows))
    return SynthMedia(table, video_dir, len(rows), trouble)


def _row(
    vid: str, title: str, subject: str, place: str, comments: int, i: int
) -> dict[str, object]:
    return {
        "video_id": vid,
        "title_en": title,
        "cover_desc": f"a {subject} {place}",
        "caption_en": f"A {subject} moves {place}.",
        "partition": ["pets", "food", "sports"][i % 3],
        "likes": comments * 7,
        "views": comments * 70 + 11,
        "comment_count": comments,
    }


def _clip(
    pixels: np.random.Generator, brightness: float, frames: int, size: int
) -> list[np.ndarray]:
    """Frames at ``brightness`` with a moving square and some texture, so they are a video."""
    base = np.full((size, size, 3), brightness * 230.0 + 10.0)
    out = []
    for f in range(frames):
        frame = base + pixels.normal(0, 8, base.shape)
        x = (f * 3) % (size - 8)
        frame[8:16, x : x + 8] = 255.0 - frame[8:16, x : x + 8]
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out
