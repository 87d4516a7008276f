"""Opt-in acceleration on diffusers' real pipeline classes at toy size: ``--compile`` and
``--cache`` change the model, the manifest and the media key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.helpers import TINY_FLAGS, clip_options, finished_run
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import probe
from popcorn.media.render import MediaOptions, render

pytestmark = pytest.mark.usefixtures("torch_one_thread")


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
