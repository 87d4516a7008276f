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
        "preview", "ltx", "hunyuan", "cogvideox", "animatediff", "wan", "hunyuan15",
        "preview", "sd15", "sdxl",
    ]  # fmt: skip
