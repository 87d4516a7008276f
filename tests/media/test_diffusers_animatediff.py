"""AnimateDiff: a Stable Diffusion 1.5 base model with a separate motion adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.helpers import finished_run
from popcorn.media.export import probe

pytestmark = pytest.mark.slow


def test_animatediff_takes_a_base_model_and_a_separate_motion_adapter(cli, tmp_path: Path):
    from toys.sd import save_toy_motion_adapter, save_toy_sd15

    base = save_toy_sd15(tmp_path / "sd15")
    adapter = save_toy_motion_adapter(tmp_path / "adapter")
    run = finished_run(tmp_path, "m")
    result = cli(
        "render", str(run), "--video", "animatediff", "--video-model", str(base),
        "--motion-adapter", str(adapter),
        "--steps", "2", "--width", "32", "--height", "32", "--frames", "8", "--cover", "none",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["video"]["backend"] == "animatediff"
    assert probe(run / "clip.mp4").frames == 8
