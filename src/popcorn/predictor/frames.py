"""Uniform frame sampling from a video file, through PyAV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from popcorn.errors import PopcornError
from popcorn.media.export import _av

FRAMES = 10


class VideoError(PopcornError):
    """A video that cannot be used: unreadable, undecodable or too short. ``reason`` is a tag."""

    def __init__(self, path: Path, reason: str, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.reason = reason


def uniform_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames, first and last included."""
    if n == 1:
        return [total // 2]
    return [round(i * (total - 1) / (n - 1)) for i in range(n)]


def sample_frames(path: Path, n: int = FRAMES) -> np.ndarray:
    """``n`` RGB frames (n x H x W x 3, uint8) sampled uniformly over the whole video.

    Frame counts in container headers are often missing or wrong, so the frames are counted by
    demuxing the video stream's packets (no decoding), and the video is decoded once to pick
    them; only the picked frames are kept. Should the decoder yield fewer frames than there
    were packets (a damaged stream), the frames are counted by decoding and picked again.
    """
    av = _av()
    if not path.is_file():
        raise VideoError(path, "missing", "file not found")
    try:
        picked = _pick(av, path, _packets(av, path), n)
        if picked is None:
            picked = _pick(av, path, _count(av, path), n) or []
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
        raise VideoError(path, "undecodable", f"cannot decode ({err})") from None
    if len(picked) < n:  # the second pass found fewer frames than the first
        raise VideoError(path, "undecodable", "frames vanished while decoding")
    return np.stack(picked)


def _pick(av: Any, path: Path, total: int, n: int) -> list[np.ndarray] | None:
    """The ``n`` uniform frames of a ``total``-frame video, decoded once; None if the decoder
    ran out of frames first."""
    if total < n:
        raise VideoError(path, "too_short", f"has {total} frames, needs at least {n}")
    wanted = uniform_indices(total, n)
    picked: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            while len(picked) < n and wanted[len(picked)] == i:
                picked.append(frame.to_ndarray(format="rgb24"))
            if len(picked) == n:
                return picked
    return None


def _packets(av: Any, path: Path) -> int:
    """The video stream's frame count from its packets (the empty flush packet excluded)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(path, "undecodable", "holds no video stream")
        return sum(1 for packet in container.demux(video=0) if packet.size)


def _count(av: Any, path: Path) -> int:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(path, "undecodable", "holds no video stream")
        return sum(1 for _ in container.decode(video=0))
