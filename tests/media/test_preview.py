"""The ``preview`` backend: a real H.264 file, decoded and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media.helpers import HALF_PIPE
from popcorn.media.export import probe
from popcorn.media.preview import PreviewBackend, PreviewCover

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


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(float) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("size", [(512, 512), (640, 360), (360, 640)])
def test_the_cover_is_a_title_card_readable_as_a_thumbnail(tmp_path: Path, size):
    from PIL import Image

    width, height = size
    cover = PreviewCover().render(SCRIPT, width, height, tmp_path / "cover.png")
    assert cover.preview and (cover.width, cover.height) == size
    with Image.open(cover.file) as png:
        image = np.asarray(png.convert("RGB"))
    assert image.shape == (height, width, 3)

    # No progress stripe: the bottom rows hold the background's colours, not a white bar.
    assert image[-max(2, height // 90) :].min(axis=2).max() < 250

    # The title at full opacity: pure white letters, in the middle (the PREVIEW label in its
    # corner is drawn at 90%), on a dark panel around them.
    middle = image[height // 5 : height * 4 // 5, width // 10 : width * 9 // 10]
    luma = _luma(middle)
    assert (middle.min(axis=2) >= 250).sum() > 0.01 * luma.size
    assert np.percentile(luma, 95) - np.percentile(luma, 25) > 150  # letters against the panel

    # Large type: the rows with letters span a good part of the height, so a thumbnail a
    # quarter as wide still shows them.
    lettered = np.flatnonzero((image.min(axis=2) >= 250).sum(axis=1) > 0)
    assert lettered.max() - lettered.min() > 0.15 * height
    thumb = np.asarray(Image.fromarray(image).resize((width // 4, height // 4), Image.LANCZOS))
    assert (thumb.min(axis=2) >= 200).sum() > 0.005 * thumb.shape[0] * thumb.shape[1]


def test_the_cover_is_not_a_frame_of_the_animatic(tmp_path: Path):
    from PIL import Image

    cover = PreviewCover().render(SCRIPT, 640, 360, tmp_path / "cover.png")
    first = next(PreviewBackend().frames(SCRIPT, PreviewBackend().default_spec()))
    with Image.open(cover.file) as png:
        image = np.asarray(png.convert("RGB"))
    assert np.abs(image.astype(int) - first.astype(int)).mean() > 10


def test_a_long_title_is_wrapped_whole_at_a_smaller_size(tmp_path: Path):
    from PIL import Image

    from popcorn.script import Script

    long = Script("The Most Unbelievable Ramen Trick You Will Ever See at Home", "c", "v")
    short = Script("Ramen", "c", "v")
    heights = {}
    for name, script in (("long", long), ("short", short)):
        cover = PreviewCover().render(script, 360, 640, tmp_path / f"{name}.png")
        with Image.open(cover.file) as png:
            image = np.asarray(png.convert("RGB"))
        columns = np.flatnonzero((image.min(axis=2) >= 250).sum(axis=0) > 0)
        assert columns.min() > 0 and columns.max() < 359  # nothing runs off the sides
        rows = np.flatnonzero((image[40:].min(axis=2) >= 250).sum(axis=1) > 0)
        heights[name] = rows.max() - rows.min()
    assert heights["long"] > heights["short"]  # more lines, not lines cut off
