"""The ``preview`` backend: a real H.264 file, decoded and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.helpers import HALF_PIPE
from popcorn.media.export import probe
from popcorn.media.preview import PreviewBackend

SCRIPT = HALF_PIPE


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize(("portrait", "size"), [(False, (640, 360)), (True, (360, 640))])
def test_preview_is_a_three_second_h264_clip_that_moves(tmp_path: Path, portrait, size):
    backend = PreviewBackend()
    spec = backend.default_spec().portrait() if portrait else backend.default_spec()
    clip = backend.render(SCRIPT, spec, tmp_path / "clip.mp4")
    info = probe(clip.file)
    assert (info.codec, info.width, info.height) == ("h264", *size)
    assert info.frames == 45 and info.fps == 15 and info.seconds == 3.0
    frames = decoded(clip.file)
    assert frames[0].shape == (size[1], size[0], 3)
    assert np.abs(frames[0].astype(int) - frames[22].astype(int)).mean() > 2  # not a still
    assert clip.preview and clip.to_dict()["seconds"] == 3.0
