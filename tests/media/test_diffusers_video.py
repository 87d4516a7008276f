"""The clip generators through diffusers' real pipeline classes, built at toy size, saved with
``save_pretrained`` and loaded back through ``--video-model``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.helpers import SCRIPT, TINY_FLAGS, finished_run
from popcorn.media.export import probe

pytestmark = pytest.mark.slow

TINY = [*TINY_FLAGS, "--cover", "none"]


def test_ltx_renders_the_requested_clip(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "a")
    result = cli(
        "render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY, "--json"
    )
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["video"]["preview"] is False and stage["video"]["backend"] == "ltx"
    assert stage["video"]["spec"]["steps"] == 2
    assert stage["video"]["spec"]["negative_prompt"].startswith("worst quality")
    info = probe(run / "clip.mp4")
    assert (info.codec, info.width, info.height, info.frames, info.fps) == ("h264", 32, 32, 9, 8)


def test_sizes_and_frames_are_rounded_with_a_warning(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "b")
    args = [
        "render",
        str(run),
        "--video",
        "ltx",
        "--video-model",
        str(tiny_ltx),
        "--steps",
        "2",
        "--width",
        "40",
        "--height",
        "30",
        "--frames",
        "12",
        "--cover",
        "none",
    ]
    result = cli(*args)
    assert result.code == 0, result.err
    assert "multiples of 32: 40x30 -> 32x32" in result.err
    assert "8k+1 frames: 12 -> 9" in result.err
    assert probe(run / "clip.mp4").frames == 9


# Every clip generator: its real pipeline class at toy size, saved, loaded back through
# --video-model, 2 steps; the written file is decoded and checked. Sizes follow each preset's
# rules (x16 and 4k+1 frames; CogVideoX 8k+1; AnimateDiff x8 and any count).
VIDEO_TOYS = [
    ("hunyuan", "save_toy_hunyuan", 48, 32, 5, 15),
    ("hunyuan15", "save_toy_hunyuan15", 48, 32, 5, 24),
    ("cogvideox", "save_toy_cogvideox", 48, 32, 9, 8),
    ("wan", "save_toy_wan", 48, 32, 5, 16),
    ("animatediff", "save_toy_animatediff", 48, 32, 6, 8),
]


@pytest.mark.parametrize(("preset", "builder", "width", "height", "frames", "fps"), VIDEO_TOYS)
def test_every_video_generator_renders_the_requested_clip(
    cli, tmp_path: Path, preset: str, builder: str, width: int, height: int, frames: int, fps: int
):
    from toys import sd, video

    model = getattr(sd if hasattr(sd, builder) else video, builder)(tmp_path / "model")
    run = finished_run(tmp_path, preset[0])
    size = f"--width {width} --height {height} --frames {frames} --fps {fps}"
    result = cli(
        "render", str(run), "--video", preset, "--video-model", str(model),
        *f"--steps 2 {size} --cover none --json".split(),
    )  # fmt: skip
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["video"]["backend"] == preset and stage["video"]["preview"] is False
    assert stage["warnings"] == []
    info = probe(run / "clip.mp4")
    assert (info.codec, info.width, info.height, info.frames, info.fps) == (
        "h264",
        width,
        height,
        frames,
        fps,
    )


def test_hunyuan15_takes_guidance_through_its_guider(tmp_path: Path):
    from popcorn.media.base import VideoSpec
    from popcorn.media.diffusers.loader import MemoryOptions
    from popcorn.media.diffusers.video import DiffusersVideo
    from popcorn.media.presets import PRESETS
    from toys.video import save_toy_hunyuan15

    model = save_toy_hunyuan15(tmp_path / "model")
    backend = DiffusersVideo(PRESETS["hunyuan15"], model=str(model), memory=MemoryOptions())
    spec = VideoSpec(32, 32, 5, 24, 2, 3.0)
    backend.render(SCRIPT, spec, tmp_path / "clip.mp4")
    assert backend.pipeline().guider.guidance_scale == 3.0
    assert "guidance_scale" not in backend.call_kwargs(SCRIPT, spec)
