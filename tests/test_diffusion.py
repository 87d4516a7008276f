"""Diffusion generators through diffusers' real pipeline classes, built at toy size here (one
layer, random weights, a tokenizer trained on a sentence), saved with ``save_pretrained`` and
loaded back through popcorn's loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popcorn.media.export import probe
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

pytestmark = pytest.mark.slow

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard, sunny park",
    "The kitten rolls down the ramp and lands an ollie in slow motion",
)


@pytest.fixture(scope="module")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from popcorn.media.toy import save_toy_ltx

    return save_toy_ltx(tmp_path_factory.mktemp("tiny-ltx"))


def finished_run(root: Path, name: str) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    return run.path


TINY = [
    "--steps",
    "2",
    "--width",
    "32",
    "--height",
    "32",
    "--frames",
    "9",
    "--fps",
    "8",
    "--cover",
    "none",
]


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


def test_a_batch_loads_the_model_once(tiny_ltx: Path, tmp_path: Path):
    from popcorn.media import diffusion
    from popcorn.media.render import MediaOptions, render

    options = MediaOptions(
        video="ltx",
        cover=None,
        video_model=str(tiny_ltx),
        steps=2,
        width=32,
        height=32,
        frames=9,
        fps=8,
    )
    before = diffusion.loads[str(tiny_ltx)]
    for name in "cde":
        render(finished_run(tmp_path, name), options)
    assert diffusion.loads[str(tiny_ltx)] - before <= 1
    assert diffusion.loads[str(tiny_ltx)] == 1


def test_missing_model_folder_is_a_one_line_error(cli, tmp_path: Path):
    run = finished_run(tmp_path, "f")
    result = cli("render", str(run), "--video", "ltx", "--video-model", "./no-such-model")
    assert result.code == 1 and "video model folder not found" in result.err
    assert "Traceback" not in result.err


def test_stage_by_stage_loads_each_model_once_and_frees_it(tiny_ltx: Path, tmp_path: Path):
    from popcorn.media import diffusion
    from popcorn.media.diffusion import MemoryOptions
    from popcorn.media.render import MediaOptions, render_stage_by_stage

    model = str(tiny_ltx) + "/"  # another source string: counted apart from the other tests
    options = MediaOptions(
        video="ltx",
        video_model=model,
        memory=MemoryOptions(unload=True),
        steps=2,
        width=32,
        height=32,
        frames=9,
        fps=8,
    )
    runs = [finished_run(tmp_path, name) for name in "ghi"]
    stages = render_stage_by_stage(runs, options)
    assert diffusion.loads[model] == 1
    assert not [k for k in diffusion._pipelines if k[2] == model]
    for run in runs:
        stage = stages[run]
        assert isinstance(stage, dict), stage
        assert stage["video"]["frames"] == 9 and stage["cover"]["preview"] is True
        assert probe(run / "clip.mp4").frames == 9 and (run / "cover.png").is_file()


def test_generators_lists_every_preset(cli):
    result = cli("generators")
    assert result.code == 0
    names = [line.split()[1] for line in result.out.splitlines() if not line.startswith(" ")]
    assert names == [
        "preview",
        "ltx",
        "hunyuan",
        "cogvideox",
        "animatediff",
        "wan",
        "hunyuan15",
        "preview",
        "sd15",
        "sdxl",
    ]


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
    from popcorn.media import toy

    model = getattr(toy, builder)(tmp_path / "model")
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
    from popcorn.media.diffusion import PRESETS, DiffusersVideo, MemoryOptions
    from popcorn.media.toy import save_toy_hunyuan15

    model = save_toy_hunyuan15(tmp_path / "model")
    backend = DiffusersVideo(PRESETS["hunyuan15"], model=str(model), memory=MemoryOptions())
    spec = VideoSpec(32, 32, 5, 24, 2, 3.0)
    backend.render(SCRIPT, spec, tmp_path / "clip.mp4")
    assert backend.pipeline().guider.guidance_scale == 3.0
    assert "guidance_scale" not in backend.call_kwargs(SCRIPT, spec)


def test_animatediff_takes_a_base_model_and_a_separate_motion_adapter(cli, tmp_path: Path):
    from popcorn.media.toy import save_toy_motion_adapter, save_toy_sd15

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


@pytest.mark.parametrize(
    ("cover", "builder"), [("sd15", "save_toy_sd15"), ("sdxl", "save_toy_sdxl")]
)
def test_every_cover_model_renders_a_cover_in_the_clips_aspect(
    cli, tmp_path: Path, cover: str, builder: str
):
    from PIL import Image

    from popcorn.media import toy

    model = getattr(toy, builder)(tmp_path / "model")
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
