"""Uniform frame sampling from a video file, through PyAV.

Two samplings: Popcorn's (``round``) rounds each evenly spaced position to the nearest frame
and keeps the decoded pixels. MMRA's (``mmra``, the paper recipe's) truncates the position to
an ``int``, as MMRA's frame extraction indexes, and its encoders saw frames that had been saved
as JPEG files and read back: each frame makes that round trip here too (quality 95, OpenCV's
``imwrite`` default; the study's exact files are not published, so the quality is the default
they would have had). Which sampling features were made with is recorded in them and in the
predictor, so a clip is scored with the sampling its predictor was trained on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np

from popcorn.errors import PopcornError
from popcorn.media.export import _av

FRAMES = 10
JPEG_QUALITY = 95
Sampling = Literal["round", "mmra"]
SAMPLING_OF: dict[str, Sampling] = {"popcorn": "round", "mmra": "mmra"}
"""Predictor recipe -> the frame sampling its features are extracted with."""


class VideoError(PopcornError):
    """A video that cannot be used: unreadable, undecodable or too short. ``reason`` is a tag."""

    def __init__(self, path: Path, reason: str, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.reason = reason


def uniform_indices(total: int, n: int, sampling: Sampling = "round") -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames, first and last included:
    each position rounded (``round``) or truncated as MMRA's ``int`` does (``mmra``)."""
    if n == 1:
        return [total // 2]
    positions = [i * (total - 1) / (n - 1) for i in range(n)]
    if sampling == "mmra":
        return [int(p) for p in positions]
    return [round(p) for p in positions]


def jpeg_round_trip(frame: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``frame`` (H x W x 3, uint8) saved as a JPEG and read back, as MMRA's frames were."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def sample_frames(path: Path, n: int = FRAMES, sampling: Sampling = "round") -> np.ndarray:
    """``n`` RGB frames (n x H x W x 3, uint8) sampled uniformly over the whole video, as
    ``sampling`` takes them (see the module docstring).

    Frame counts in container headers are often missing or wrong, so the frames are counted by
    demuxing the video stream's packets (no decoding), and the video is decoded once to pick
    them; only the picked frames are kept. Should the decoder yield fewer frames than there
    were packets (a damaged stream), the frames are counted by decoding and picked again.
    """
    av = _av()
    if not path.is_file():
        raise VideoError(path, "missing", "file not found")
    try:
        picked = _pick(av, path, _packets(av, path), n, sampling)
        if picked is None:
            picked = _pick(av, path, _count(av, path), n, sampling) or []
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
        raise VideoError(path, "undecodable", f"cannot decode ({err})") from None
    if len(picked) < n:  # the second pass found fewer frames than the first
        raise VideoError(path, "undecodable", "frames vanished while decoding")
    if sampling == "mmra":
        picked = [jpeg_round_trip(frame) for frame in picked]
    return np.stack(picked)


def _pick(
    av: Any, path: Path, total: int, n: int, sampling: Sampling = "round"
) -> list[np.ndarray] | None:
    """The ``n`` uniform frames of a ``total``-frame video, decoded once; None if the decoder
    ran out of frames first."""
    if total < n:
        raise VideoError(path, "too_short", f"has {total} frames, needs at least {n}")
    wanted = uniform_indices(total, n, sampling)
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
