"""Media writes off the critical path, and opt-in acceleration, on diffusers' real pipeline
classes at toy size (saved and loaded back through popcorn's loader).

Frames leave the device as bytes; clips are encoded in a background thread (a batch makes clip
k+1 meanwhile) with frame-threaded x264; covers are PNGs at a fast zlib level; ``--compile``
and ``--cache`` change the model, the manifest and the media key. Speed itself is measured by
benchmarks/diffusion_overhead.py, not here."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from popcorn.errors import PopcornError
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import Encoding, probe
from popcorn.media.render import MediaOptions, render, render_many, render_stage_by_stage
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard, sunny park",
    "The kitten rolls down the ramp and lands an ollie in slow motion",
)
TINY = dict(steps=2, width=32, height=32, frames=9, fps=8)
TINY_FLAGS = ["--steps", "2", "--width", "32", "--height", "32", "--frames", "9", "--fps", "8"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from toys import sd, video

    root = tmp_path_factory.mktemp("toys")
    return {
        "ltx": video.save_toy_ltx(root / "ltx"),
        "hunyuan": video.save_toy_hunyuan(root / "hunyuan"),
        "cogvideox": video.save_toy_cogvideox(root / "cogvideox"),
        "sd15": sd.save_toy_sd15(root / "sd15"),
    }


def finished_run(root: Path, name: str) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    return run.path


def clip_options(model: Path, video: str = "ltx", **memory: Any) -> MediaOptions:
    return MediaOptions(
        video=video,
        cover=None,
        video_model=str(model),
        memory=MemoryOptions(device="cpu", dtype="float32", **memory),
        **TINY,  # type: ignore[arg-type]
    )


# --- frames leave the device as bytes --------------------------------------------------------


def test_frames_become_the_same_bytes_on_the_device_as_on_the_cpu():
    import torch

    from popcorn.media.diffusers.frames import to_uint8

    torch.manual_seed(0)
    frames = torch.rand(20, 3, 6, 10) * 1.2 - 0.1  # out of range on both sides; > one slice
    frames[0, 0, 0, :4] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0])  # ties
    on_device = to_uint8(frames)
    on_cpu = to_uint8(frames.permute(0, 2, 3, 1).numpy())  # what the "np" output gave
    assert on_device.dtype == np.uint8 and on_device.shape == (20, 6, 10, 3)
    assert np.array_equal(on_device, on_cpu)
    assert np.array_equal(to_uint8(frames[0]), on_cpu[0])  # one image, channels first


def test_a_clip_from_pt_frames_matches_diffusers_numpy_output(toys: dict[str, Path]):
    from popcorn.media.diffusers.frames import to_uint8

    backend = clip_options(toys["ltx"]).backend()
    spec, _ = clip_options(toys["ltx"]).spec(backend)
    kwargs = backend.call_kwargs(SCRIPT, spec)
    assert kwargs["output_type"] == "pt"
    pipe = backend.pipeline()
    ours = to_uint8(pipe(**kwargs).frames[0])
    bare = pipe(**{**backend.call_kwargs(SCRIPT, spec), "output_type": "np"}).frames[0]
    assert np.array_equal(ours, (np.clip(bare, 0, 1) * 255).round().astype(np.uint8))


# --- encoding in the background ---------------------------------------------------------------


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


def test_x264_runs_frame_threads_at_the_chosen_preset(tmp_path: Path):
    from popcorn.config import load_settings
    from popcorn.media.export import write_mp4

    settings = load_settings(flags={"media": {"x264_preset": "ultrafast", "x264_threads": 2}})
    encoding = settings.media.options(settings.profile).encoding
    assert encoding == Encoding(preset="ultrafast", threads=2)
    frames = [np.full((32, 48, 3), i * 20, dtype=np.uint8) for i in range(6)]
    for name, chosen in (("default", Encoding()), ("fast", encoding)):
        write_mp4(iter(frames), tmp_path / f"{name}.mp4", 8, chosen)
    # x264 writes its settings into the stream.
    default, fast = ((tmp_path / f"{n}.mp4").read_bytes() for n in ("default", "fast"))
    assert b"sliced_threads=0" in default and b"cabac=1" in default  # frame threads, veryfast
    assert b"sliced_threads=0" in fast and b"cabac=0" in fast and b" threads=2 " in fast


def test_a_bad_x264_preset_is_a_one_line_config_error(cli, tmp_path: Path):
    (tmp_path / "popcorn.toml").write_text('[media]\nx264_preset = "warp"\n')
    run = finished_run(tmp_path, "h")
    result = cli("render", str(run))
    assert result.code == 1 and "x264_preset" in result.err and "Traceback" not in result.err


# --- covers -----------------------------------------------------------------------------------


def _zlib_level(png: bytes) -> int:
    """The compression level class zlib recorded in a PNG's first IDAT chunk (0: fastest)."""
    start = png.index(b"IDAT") + 4
    return png[start + 1] >> 6


def test_covers_are_written_at_a_fast_png_level_with_diffusers_pixels(
    toys: dict[str, Path], tmp_path: Path
):
    from PIL import Image

    options = MediaOptions(
        video="preview",
        cover="sd15",
        cover_model=str(toys["sd15"]),
        cover_size=32,
        cover_steps=2,
        width=48,
        height=32,
        frames=3,
        fps=3,
        memory=MemoryOptions(device="cpu", dtype="float32"),
    )
    run = finished_run(tmp_path, "i")
    stage = render(run, options)
    assert _zlib_level((run / "cover.png").read_bytes()) == 0  # Pillow's default: 2
    covers = options.cover_backend()
    kwargs = covers.call_kwargs(SCRIPT, 48, 32, seed=stage["video"]["spec"]["seed"])
    bare = covers.pipeline()(**{**kwargs, "output_type": "pil"}).images[0]
    with Image.open(run / "cover.png") as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(bare))
    assert probe(run / "clip.mp4").frames == 3  # the preview clip, encoded meanwhile


# --- opt-in acceleration ----------------------------------------------------------------------


def test_compile_compiles_the_repeated_blocks_records_it_and_changes_the_key(
    toys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from popcorn.media.diffusers import acceleration

    # Inductor's C++ build takes a minute on a CPU; dynamo's capture of the same blocks, with
    # the whole graph required, is what can fail, and runs in seconds.
    monkeypatch.setattr(acceleration, "COMPILE_BACKEND", "eager")
    run = finished_run(tmp_path, "j")
    plain = render(run, clip_options(toys["ltx"]))
    compiled_options = clip_options(toys["ltx"], compile=True)
    compiled = render(run, compiled_options)
    assert "cached" not in compiled and compiled["video"]["key"] != plain["video"]["key"]
    assert compiled["video"]["settings"]["compile"] is True
    assert "compile" not in plain["video"]["settings"]
    denoiser = compiled_options.backend().pipeline().transformer
    blocks = [m for m in denoiser.modules() if type(m).__name__ == "LTXVideoTransformerBlock"]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    assert probe(run / "clip.mp4").frames == 9
    assert render(run, compiled_options).get("cached") is True


@pytest.mark.parametrize(
    ("video", "cache", "config"),
    [
        ("hunyuan", "first-block", "FirstBlockCacheConfig"),
        ("ltx", "taylorseer", "TaylorSeerCacheConfig"),
        ("cogvideox", "faster", "FasterCacheConfig"),
    ],
)
def test_a_cache_hooks_the_denoiser_records_it_and_changes_the_key(
    cli, toys: dict[str, Path], tmp_path: Path, video: str, cache: str, config: str
):
    run = finished_run(tmp_path, "k")
    base = ["render", str(run), "--video", video, "--video-model", str(toys[video]), *TINY_FLAGS,
            "--cover", "none", "--device", "cpu", "--json"]  # fmt: skip
    plain = cli(*base)
    cached = cli(*base, "--cache", cache)
    assert plain.code == 0 and cached.code == 0, cached.err
    before, after = json.loads(plain.out)["video"], json.loads(cached.out)["video"]
    assert after["key"] != before["key"] and after["settings"]["cache"]["method"] == cache
    assert "cache" not in before["settings"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["media"]["video"]["settings"]["cache"] == after["settings"]["cache"]
    # The pipeline the command loaded (same model and memory options): hooked.
    backend = MediaOptions(video=video, video_model=str(toys[video]), memory=MemoryOptions(
        device="cpu", cache=cache)).backend()  # fmt: skip
    denoiser = backend.pipeline().transformer
    assert denoiser.is_cache_enabled and type(denoiser._cache_config).__name__ == config
    assert probe(run / "clip.mp4").frames == after["frames"]


@pytest.mark.parametrize(
    ("video", "expected"),
    [
        ("ltx", "--cache faster does not work with ltx: use first-block, taylorseer"),
        ("animatediff", "--cache faster does not work with animatediff (no diffusers cache"),
    ],
)
def test_a_cache_a_model_cannot_take_is_a_one_line_error(
    cli, tmp_path: Path, video: str, expected: str
):
    run = finished_run(tmp_path, "l")
    result = cli("render", str(run), "--video", video, "--cache", "faster", "--cover", "none")
    assert result.code == 1 and "Traceback" not in result.err
    (error,) = [line for line in result.err.splitlines() if line.startswith("popcorn: error:")]
    assert expected in error


def test_first_block_on_a_one_block_denoiser_is_a_one_line_error(
    cli, toys: dict[str, Path], tmp_path: Path
):
    run = finished_run(tmp_path, "m")
    result = cli("render", str(run), "--video", "ltx", "--video-model", str(toys["ltx"]),
                 *TINY_FLAGS, "--cover", "none", "--cache", "first-block")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.err
    assert "two blocks or more" in result.err


def test_the_media_flags_are_settings(tmp_path: Path):
    from popcorn.config import load_settings

    (tmp_path / "popcorn.toml").write_text('[media]\ncompile = true\ncache = "taylorseer"\n')
    settings = load_settings()
    memory = settings.media.options(settings.profile).memory
    assert (memory.compile, memory.cache) == (True, "taylorseer")
