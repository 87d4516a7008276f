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
    from toys.video import save_toy_ltx

    return save_toy_ltx(tmp_path_factory.mktemp("tiny-ltx"))


def finished_run(root: Path, name: str, script: Script = SCRIPT) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": script.to_dict()})
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
    from popcorn.media.render import MediaOptions, render
    from popcorn.residency import MODELS

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
    MODELS.release("video")  # whatever earlier tests left loaded
    before = MODELS.loads["video"]
    for name in "cde":
        render(finished_run(tmp_path, name), options)
    assert MODELS.loads["video"] - before == 1
    assert [key[1] for key in MODELS.loaded("video")] == [str(tiny_ltx)]


def test_missing_model_folder_is_a_one_line_error(cli, tmp_path: Path):
    run = finished_run(tmp_path, "f")
    result = cli("render", str(run), "--video", "ltx", "--video-model", "./no-such-model")
    assert result.code == 1 and "video model folder not found" in result.err
    assert "Traceback" not in result.err


def test_stage_by_stage_loads_each_model_once_and_frees_it(tiny_ltx: Path, tmp_path: Path):
    from popcorn.media.diffusers.loader import MemoryOptions
    from popcorn.media.render import MediaOptions, render_stage_by_stage
    from popcorn.residency import MODELS

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
    loads, releases = MODELS.loads["video"], MODELS.releases["video"]
    stages = render_stage_by_stage(runs, options)
    assert MODELS.loads["video"] - loads == 1
    assert MODELS.releases["video"] - releases >= 1
    assert not [key for key in MODELS.loaded("video") if key[1] == model]
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


def test_a_render_reports_its_denoising_steps_when_not_on_a_terminal(
    cli, tiny_ltx: Path, tmp_path: Path
):
    """Output piped (as here): one line per tenth of the steps, not silence until the end."""
    run = finished_run(tmp_path, "p")
    steps = [*TINY]
    steps[steps.index("--steps") + 1] = "4"
    result = cli("render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *steps)
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("popcorn: clip")]
    assert [line.split(",")[0] for line in lines] == [
        f"popcorn: clip: step {n}/4" for n in (1, 2, 3, 4)
    ]
    assert "left" in lines[1]  # a rate once two steps are done


LONG = Script(
    "Kitten Shreds",
    "A kitten on a skateboard in a sunny park, " * 4,
    "The kitten rolls down the long ramp, lands an ollie and waves at the crowd. " * 12,
)


def test_a_video_prompt_longer_than_the_text_window_is_reported_and_can_be_read_whole(
    cli, tiny_ltx: Path, tmp_path: Path
):
    """LTX reads 128 T5 tokens: a longer prompt was cut silently; now the cut is a warning and
    a record, and --long-prompt raises the window (a new media key: the clip is made again)."""
    run = finished_run(tmp_path, "l", LONG)
    args = ["render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY]
    cut = cli(*args, "--json")
    assert cut.code == 0, cut.err
    window = json.loads(cut.out)["video"]["settings"]["prompt_window"]
    tokens = window["tokens"]
    assert tokens > 128 and window == {"tokens": tokens, "read": 128, "long_limit": 512}
    assert json.loads(cut.out)["warnings"] == [
        f"the video prompt is {tokens} tokens; ltx's text encoder read the first 128, the rest "
        "was cut (--long-prompt reads up to 512)"
    ]
    shown = cli(*args)  # cached now; the warning is kept with the stage and shown again
    assert "popcorn: warning: the video prompt is" in shown.err
    whole = cli(*args, "--long-prompt", "--json")
    assert whole.code == 0, whole.err
    stage = json.loads(whole.out)
    assert "cached_parts" not in stage  # another key: made again
    read = min(tokens, 512)
    video = stage["video"]
    assert video["settings"]["prompt_window"] == {"tokens": tokens, "read": read, "long": True}
    assert video["settings"]["long_prompt"] is True
    assert any("rest was cut" in w for w in stage["warnings"]) == (tokens > 512)


def test_a_short_prompt_records_no_window_and_warns_nothing(cli, tiny_ltx: Path, tmp_path: Path):
    run = finished_run(tmp_path, "s")
    args = ["render", str(run), "--video", "ltx", "--video-model", str(tiny_ltx), *TINY]
    result = cli(*args, "--long-prompt", "--json")
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert "prompt_window" not in stage["video"]["settings"] and stage["warnings"] == []


def test_a_cover_prompt_past_clips_77_tokens_is_reported_and_read_whole_in_windows(
    cli, tmp_path: Path
):
    """CLIP reads 77 tokens; --long-prompt encodes the prompt in windows of 75 and hands the
    UNet their embeddings side by side (SD1.5 and AnimateDiff)."""
    from toys.sd import save_toy_sd15

    model = save_toy_sd15(tmp_path / "model")
    run = finished_run(tmp_path, "k", LONG)
    args = [
        "render", str(run), "--video", "none", "--cover", "sd15", "--cover-model", str(model),
        "--cover-size", "32", "--cover-steps", "2", "--json",
    ]  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    window = stage["cover"]["settings"]["prompt_window"]
    tokens = window["tokens"]
    assert window == {"tokens": tokens, "read": 77, "long_limit": tokens} and tokens > 77
    assert stage["warnings"][-1] == (
        f"the cover prompt is {tokens} tokens; sd15's text encoder read the first 77, the rest "
        "was cut (--long-prompt reads all of it)"
    )
    before = (run / "cover.png").read_bytes()
    whole = cli(*args, "--long-prompt")
    assert whole.code == 0, whole.err
    stage = json.loads(whole.out)
    windows = -(-(tokens - 2) // 75)
    assert stage["cover"]["settings"]["prompt_window"] == {
        "tokens": tokens, "read": tokens, "long": True, "windows": windows,
    }  # fmt: skip
    assert stage["warnings"] == [] and windows > 1
    assert (run / "cover.png").read_bytes() != before  # the whole prompt steered the image


def test_chunked_embeddings_match_the_pipelines_own_for_a_prompt_that_fits(tmp_path: Path):
    """One window: the same embeddings diffusers makes itself; the negative keeps the shape."""
    import torch
    from diffusers import StableDiffusionPipeline

    from popcorn.media.diffusers.prompts import chunked_clip_embeds
    from toys.sd import save_toy_sd15

    pipe = StableDiffusionPipeline.from_pretrained(save_toy_sd15(tmp_path / "model"))
    embeds, negatives, windows = chunked_clip_embeds(pipe, "a cat", "blurry")
    own, own_negative = pipe.encode_prompt("a cat", "cpu", 1, True, "blurry")
    assert windows == 1 and embeds.shape == own.shape == negatives.shape
    assert torch.allclose(embeds, own, atol=1e-5)
    assert torch.allclose(negatives, own_negative, atol=1e-5)
    long = "a cat " * 60
    tokens = len(pipe.tokenizer(long, add_special_tokens=False)["input_ids"])
    long_embeds, long_negatives, many = chunked_clip_embeds(pipe, long, "blurry")
    assert many == -(-tokens // 75) > 1
    assert long_embeds.shape == long_negatives.shape == (1, 77 * many, own.shape[-1])


def test_animatediff_reads_a_long_video_prompt_in_windows(cli, tmp_path: Path):
    from toys.sd import save_toy_animatediff

    model = save_toy_animatediff(tmp_path / "model")
    run = finished_run(tmp_path, "w", LONG)
    size = "--steps 2 --width 48 --height 32 --frames 6 --fps 8 --cover none"
    result = cli(
        "render", str(run), "--video", "animatediff", "--video-model", str(model),
        *f"{size} --long-prompt --json".split(),
    )  # fmt: skip
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    window = stage["video"]["settings"]["prompt_window"]
    assert window["long"] and window["read"] == window["tokens"] and window["windows"] > 1
    assert stage["warnings"] == [] and probe(run / "clip.mp4").frames == 6


def test_an_adopted_pipeline_renders_without_loading(tiny_ltx: Path, tmp_path: Path):
    # How the GPU benchmark stands a pipeline built from a published config in for a download.
    from popcorn.media.base import VideoSpec
    from popcorn.media.diffusers.loader import MemoryOptions
    from popcorn.media.diffusers.video import DiffusersVideo
    from popcorn.media.presets import PRESETS
    from popcorn.residency import MODELS

    memory = MemoryOptions(device="cpu", dtype="float32")
    built = DiffusersVideo(PRESETS["ltx"], model=str(tiny_ltx), memory=memory).pipeline()
    stand_in = DiffusersVideo(PRESETS["ltx"], model="built-in-memory", memory=memory)
    loads = MODELS.loads["video"]
    stand_in.adopt(built)
    spec = VideoSpec(width=32, height=32, frames=9, fps=8, steps=2)
    clip = stand_in.render(SCRIPT, spec, tmp_path / "clip.mp4")
    assert MODELS.loads["video"] == loads
    assert stand_in.pipeline() is built
    assert clip.frames == 9 and probe(tmp_path / "clip.mp4").frames == 9
    assert MODELS.release("video") >= 2
