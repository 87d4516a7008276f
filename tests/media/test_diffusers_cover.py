"""The cover generators through diffusers' real pipeline classes at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.helpers import finished_run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("cover", "builder"), [("sd15", "save_toy_sd15"), ("sdxl", "save_toy_sdxl")]
)
def test_every_cover_model_renders_a_cover_in_the_clips_aspect(
    cli, tmp_path: Path, cover: str, builder: str
):
    from PIL import Image

    from toys import sd

    model = getattr(sd, builder)(tmp_path / "model")
    run = finished_run(tmp_path, "c")
    result = cli(
        "render", str(run), "--video", "none", "--cover", cover, "--cover-model", str(model),
        "--cover-size", "32", "--cover-steps", "2", "--width", "48", "--height", "32", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["cover"]["backend"] == cover and stage["cover"]["preview"] is False
    with Image.open(run / "cover.png") as image:
        assert image.size == (40, 24)  # 32x32 pixels' worth at the clip's 3:2, in multiples of 8
