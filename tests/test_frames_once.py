"""Frame sampling counts frames by demuxing and decodes once, picking the same frames as
decoding twice did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from popcorn.media.export import write_mp4
from popcorn.predictor import frames as sampling


def _clip(path: Path, count: int) -> Path:
    pictures = (np.full((48, 64, 3), (i * 9) % 256, dtype=np.uint8) for i in range(count))
    write_mp4(pictures, path, 12)
    return path


@pytest.mark.parametrize("count", [10, 37, 120])
def test_one_decode_picks_what_two_did(tmp_path: Path, count: int):
    clip = _clip(tmp_path / "c.mp4", count)
    av = sampling._av()
    assert sampling._packets(av, clip) == sampling._count(av, clip) == count
    twice = sampling._pick(av, clip, sampling._count(av, clip), sampling.FRAMES)
    assert twice is not None
    assert np.array_equal(sampling.sample_frames(clip), np.stack(twice))


def test_a_short_clip_is_named_too_short(tmp_path: Path):
    clip = _clip(tmp_path / "c.mp4", 4)
    with pytest.raises(sampling.VideoError, match="has 4 frames"):
        sampling.sample_frames(clip)
