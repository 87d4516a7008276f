"""Frame sampling for the predictor: count by demuxing + one decode, against decoding twice.

Run: ``.venv/bin/python benchmarks/frame_sampling.py [--seconds 30] [--repeats 3]``

Writes a realistic clip once (540x960 portrait at 30 fps, moving content, H.264 through
popcorn's own writer), then times ``sample_frames`` (packets counted by demuxing, the video
decoded once) against the earlier way in the same run (decoded once to count, once to pick),
and checks that both return identical frames.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from popcorn.media.export import write_mp4
from popcorn.predictor import frames as sampling


def make_clip(path: Path, seconds: int, fps: int = 30) -> None:
    height, width = 960, 540
    y, x = np.mgrid[0:height, 0:width]

    def frame(i: int) -> np.ndarray:
        shift = i * 7
        r = ((x + shift) % 256).astype(np.uint8)
        g = ((y + 2 * shift) % 256).astype(np.uint8)
        b = (((x ^ y) + i) % 256).astype(np.uint8)
        return np.stack([r, g, b], axis=-1)

    write_mp4((frame(i) for i in range(seconds * fps)), path, fps)


def twice(path: Path, n: int = sampling.FRAMES) -> np.ndarray:
    """The earlier way: decode every frame to count them, then decode again to pick."""
    av = sampling._av()
    picked = sampling._pick(av, path, sampling._count(av, path), n)
    assert picked is not None
    return np.stack(picked)


def timed(fn, path: Path, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.seconds)
        base, old = timed(twice, clip, args.repeats)
        ours, new = timed(sampling.sample_frames, clip, args.repeats)
    assert np.array_equal(old, new), "the two ways picked different frames"
    print(f"clip: 540x960, {args.seconds} s at 30 fps; median of {args.repeats}")
    print(f"decode twice (baseline):     {base * 1000:8.0f} ms")
    print(f"demux count + decode once:   {ours * 1000:8.0f} ms   {base / ours:.2f}x faster")
    print("frames identical: yes")


if __name__ == "__main__":
    main()
