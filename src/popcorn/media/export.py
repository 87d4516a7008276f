"""Writing and reading media files: H.264 MP4 through PyAV and PNG through Pillow, written
atomically, and the background writer that takes these writes off the GPU's critical path."""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from popcorn._io import WriteError, atomic_write_bytes, file_mode
from popcorn.errors import MissingDependencyError, PopcornError, UsageError

T = TypeVar("T")

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
PNG_LEVEL = 1
"""zlib level of written PNGs: about 5x quicker than Pillow's default (6) for a cover, at a
file a little larger; the pixels are the same."""


@dataclass(frozen=True)
class Encoding:
    """How clips are encoded with x264.

    ``veryfast`` is about 3x quicker than x264's default preset at a similar size, and x264
    works on whole frames in parallel (frame threads) rather than on slices of one frame, which
    PyAV asks for by default and which scales poorly: what keeps the encode of a 161-frame clip
    well under the GPU's time to make it. ``threads`` 0 lets x264 choose (about 1.5 per core).
    """

    preset: str = "veryfast"
    threads: int = 0
    crf: int = 20

    def __post_init__(self) -> None:
        if self.preset not in X264_PRESETS:
            raise UsageError(
                f"x264 preset must be one of {', '.join(X264_PRESETS)}, not {self.preset!r}"
            )
        if not 0 <= self.threads <= 128:
            raise UsageError(f"x264 threads must be from 0 (automatic) to 128, not {self.threads}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"x264 CRF must be from 0 to 51, not {self.crf}")


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError("av", "media", "Writing video") from None
    return av


def write_mp4(
    frames: Iterable[np.ndarray], target: Path, fps: int, encoding: Encoding | None = None
) -> int:
    """Encode RGB uint8 frames (H x W x 3) as H.264 to ``target``; returns the frame count.

    Encodes into a temporary file beside ``target`` and renames it at the end, so a failure
    (a full disk, Ctrl-C) never leaves a partial file under the final name. PyAV leaves Python
    free while x264 works, so a :class:`MediaWriter` thread encoding costs the caller nothing.
    """
    encoding = encoding or Encoding()
    av = _av()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".mp4", dir=target.parent)
        os.fchmod(fd, file_mode())
        os.close(fd)
    except OSError as err:  # a read-only or full folder: one line, not a traceback
        raise WriteError(target, err) from None
    tmp = Path(tmp_name)
    count = 0
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    height, width = frame.shape[:2]
                    if width % 2 or height % 2:
                        raise PopcornError(f"H.264 needs even sizes, got {width}x{height}")
                    stream = container.add_stream("libx264", rate=fps)
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(encoding.crf), "preset": encoding.preset}
                    stream.codec_context.thread_type = "FRAME"
                    stream.codec_context.thread_count = encoding.threads
                video_frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(frame), format="rgb24"
                )
                for packet in stream.encode(video_frame):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise PopcornError("no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise PopcornError(f"cannot write {target}: {err.strerror or err}") from None
    except av.FFmpegError as err:  # the encoder refused (not a disk problem)
        tmp.unlink(missing_ok=True)
        raise PopcornError(f"cannot encode {target}: {_first_line(err)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def write_png(image: np.ndarray, target: Path) -> None:
    """An RGB uint8 image (H x W x 3) as a PNG at ``target``, written atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=PNG_LEVEL)
    atomic_write_bytes(target, buf.getvalue())


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class MediaWriter:
    """One background thread that runs file writes in the order given, so that the caller (the
    thread driving the GPU) makes the next item while this one is encoded and written.

    :meth:`submit` returns the write's future: its result, or the error it raised. At most
    ``depth`` writes wait at a time (each holds a clip's frames in memory); :meth:`submit`
    blocks beyond that. Leaving the ``with`` block waits for every write."""

    def __init__(self, depth: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="popcorn-writer")
        self._slots = threading.BoundedSemaphore(depth)

    def submit(self, job: Callable[[], T]) -> Future[T]:
        self._slots.acquire()
        try:
            future = self._pool.submit(job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> MediaWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def probe(path: Path) -> VideoInfo:
    """Decode ``path`` fully and report what it holds (frames are counted, not trusted)."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(
            stream.codec_context.name,
            stream.codec_context.width,
            stream.codec_context.height,
            float(stream.average_rate or 0),
            frames,
        )
