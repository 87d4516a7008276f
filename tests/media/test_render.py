"""The media stage: ``popcorn render`` on a run folder, its checks and cache, batches that
make the next clip while the last one encodes, and the profile a render follows."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from media.helpers import SCRIPT, TINY, TINY_FLAGS, clip_options, finished_run
from popcorn.errors import PopcornError
from popcorn.media.export import probe
from popcorn.media.render import render, render_many, render_stage_by_stage
from popcorn.runs.store import RunManifest, RunStore

# --- popcorn render, with the preview backend -------------------------------------------------


def test_render_writes_cover_and_clip_and_records_them(cli, run_dir: Path):
    result = cli("render", str(run_dir), "--json")
    assert result.code == 0, result.err
    stage = json.loads(result.out)
    assert stage["video"]["preview"] is True and stage["video"]["frames"] == 45
    assert probe(run_dir / "clip.mp4").frames == 45
    from PIL import Image

    with Image.open(run_dir / "cover.png") as cover:
        assert cover.size == (640, 360)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["files"]["clip"] == "clip.mp4" and manifest["files"]["cover"] == "cover.png"
    assert manifest["stages"]["media"]["video"]["spec"]["fps"] == 15


def test_rerender_only_when_something_changed(cli, run_dir: Path):
    cli("render", str(run_dir))
    again = json.loads(cli("render", str(run_dir), "--json").out)
    assert again["cached"] is True
    changed = json.loads(
        cli("render", str(run_dir), "--json", "--portrait", "--fps", "10", "--frames", "30").out
    )
    assert "cached" not in changed
    info = probe(run_dir / "clip.mp4")
    assert (info.width, info.height, info.frames, info.fps) == (360, 640, 30, 10)
    forced = json.loads(
        cli(
            "render",
            str(run_dir),
            "--json",
            "--portrait",
            "--fps",
            "10",
            "--frames",
            "30",
            "--force",
        ).out
    )
    assert "cached" not in forced


def test_video_none_skips_the_clip(cli, run_dir: Path):
    stage = json.loads(cli("render", str(run_dir), "--video", "none", "--json").out)
    assert "video" not in stage and (run_dir / "cover.png").is_file()
    assert not (run_dir / "clip.mp4").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--video", "sora"],
            "unknown video generator 'sora'; available: preview, ltx, hunyuan, cogvideox, "
            "animatediff, wan, hunyuan15, none",
        ),
        (["--cover", "dalle"], "unknown cover generator 'dalle'; available: preview, sd15, sdxl"),
        (["--video", "ltx", "--quantize", "4bit", "--device", "cpu"], "needs a CUDA GPU"),
        (["--cover", "sd15", "--cover-model", "./no-such"], "cover model folder not found"),
        (["--video", "animatediff", "--motion-adapter", "./nope"], "motion adapter not found"),
        (["--width", "641"], "--width must be an even number"),
        (["--frames", "0"], "--frames must be from 1 to 2000"),
        (["--fps", "500"], "--fps must be from 1 to 120"),
    ],
)
def test_bad_media_options_are_one_line_errors(cli, run_dir: Path, args, message):
    result = cli("render", str(run_dir), *args)
    assert result.code == 1 and "Traceback" not in result.err
    assert message in result.err and result.err.strip().count("\n") == 0


def test_run_folder_without_a_script(cli, tmp_path: Path):
    run = RunStore(tmp_path).start(RunManifest(key="k" * 64, query="q", mode="basic"))
    result = cli("render", str(run.path))
    assert result.code == 1 and "has no script yet" in result.err
    assert "not a run folder" in cli("render", str(tmp_path / "nowhere")).err


def test_generate_checks_media_options_before_asking_the_llm(cli, fault_proxy):
    result = cli(
        "generate", "a cat", "--llm", "openai:m", "--base-url", fault_proxy.url, "--width", "641"
    )
    assert result.code == 1 and "--width must be an even number" in result.err
    assert fault_proxy.requests == []


# --- batches ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("torch_one_thread")
@pytest.mark.parametrize("batch", [render_stage_by_stage, render_many])
def test_a_batch_makes_the_next_clip_while_the_last_one_encodes(
    toys: dict[str, Path], tmp_path: Path, batch: Any
):
    from dataclasses import replace

    from popcorn.media import export

    options = replace(clip_options(toys["ltx"]), cover="preview")
    runs = [finished_run(tmp_path, name) for name in "abc"]
    denoiser = options.backend().pipeline().transformer
    steps: list[int] = []
    second_clip_started = threading.Event()
    seen: dict[str, Any] = {}

    def count_steps(*_: Any) -> None:
        steps.append(1)
        if len(steps) > TINY["steps"]:  # the first clip's steps are done: the second's began
            second_clip_started.set()

    def hold_first_encode(frame: Any, event: str, _: Any) -> None:
        # In the writer thread: the first clip's encode waits for the second clip's model.
        if event == "call" and frame.f_code is export.write_mp4.__code__ and not seen:
            seen["thread"] = threading.current_thread().name
            seen["overlapped"] = second_clip_started.wait(timeout=10)

    handle = denoiser.register_forward_pre_hook(count_steps)
    threading.setprofile(hold_first_encode)
    try:
        stages = batch(runs, options)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
        handle.remove()
    assert seen.get("overlapped") is True, "the first clip was encoded before the second began"
    assert seen["thread"] != threading.main_thread().name
    for run in runs:  # everything written when the batch returns
        stage = stages[run]
        assert isinstance(stage, dict), stage
        assert probe(run / "clip.mp4").frames == 9 and stage["video"]["frames"] == 9
        assert (run / "cover.png").is_file() and stage["cover"]["preview"] is True
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["stages"]["media"]["video"]["key"] == stage["video"]["key"]
        assert manifest["stages"]["media"]["cover"]["key"] == stage["cover"]["key"]


@pytest.mark.usefixtures("torch_one_thread")
def test_an_encoder_failure_is_that_clips_one_line_error(toys: dict[str, Path], tmp_path: Path):
    options = clip_options(toys["ltx"])
    runs = [finished_run(tmp_path, name) for name in "def"]
    (runs[1] / "clip.mp4").mkdir()  # the encoded file cannot take this name
    advanced: list[int] = []
    stages = render_stage_by_stage(runs, options, advance=lambda: advanced.append(1))
    error = stages[runs[1]]
    assert isinstance(error, PopcornError)
    assert "cannot write" in str(error) and "clip.mp4" in str(error) and "\n" not in str(error)
    assert [isinstance(stages[r], dict) for r in runs] == [True, False, True]
    assert len(advanced) == 2 * len(runs)
    assert not [p for p in runs[1].iterdir() if p.name.startswith(".clip.")]  # no partial file
    (runs[1] / "clip.mp4").rmdir()  # the folder's lock was let go: it renders now
    assert render(runs[1], options)["video"]["frames"] == 9


@pytest.mark.usefixtures("torch_one_thread")
def test_an_encoder_failure_in_render_is_a_one_line_cli_error(
    cli, toys: dict[str, Path], tmp_path: Path
):
    run = finished_run(tmp_path, "g")
    (run / "clip.mp4").mkdir()
    result = cli("render", str(run), "--video", "ltx", "--video-model", str(toys["ltx"]),
                 *TINY_FLAGS, "--cover", "none")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("popcorn: error:")]
    assert len(errors) == 1 and errors[0].startswith("popcorn: error: cannot write")


@pytest.mark.slow
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


# --- profiles ---------------------------------------------------------------------------------


@pytest.mark.slow  # a toy SD 1.5 cover, rendered
@pytest.mark.parametrize(("profile", "flag", "presets"), [
    ("paper", None, "study"), ("popcorn", None, "popcorn"), ("paper", "popcorn", "popcorn"),
])  # fmt: skip
def test_render_follows_the_runs_own_profile_unless_told(
    profile: str, flag: str | None, presets: str, cli, toy_models: dict[str, Path], tmp_path: Path
):
    root = tmp_path / "runs"
    run = RunStore(root).start(RunManifest(key="r" * 64, query="r", mode="basic", profile=profile))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    model = str(toy_models["sd15"])
    args = ["render", str(run.path), "--video", "none", "--cover", "sd15", "--json",
            "--cover-model", model, "--cover-size", "32", "--cover-steps", "2"]  # fmt: skip
    done = cli(*args, *(["--profile", flag] if flag else []))
    assert done.code == 0, done.err
    assert json.loads(done.out)["cover"]["settings"]["presets"] == presets
