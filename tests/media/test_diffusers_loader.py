"""Loading a diffusers pipeline: once per process and settings, held by the residency owner
under the roles ``video`` and ``cover``; a missing folder, 4-bit quantisation, step
progress and an adopted pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.helpers import CPU, SCRIPT, TINY_FLAGS, finished_run
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import probe
from popcorn.media.registry import cover_backend, video_backend
from popcorn.media.render import MediaOptions
from popcorn.residency import MODELS

TINY = [*TINY_FLAGS, "--cover", "none"]


@pytest.mark.slow
def test_generators_are_built_afresh_and_share_one_loaded_pipeline_per_settings(tmp_path: Path):
    from toys.sd import save_toy_sd15
    from toys.video import save_toy_ltx

    ltx, sd15 = str(save_toy_ltx(tmp_path / "ltx")), str(save_toy_sd15(tmp_path / "sd15"))
    MODELS.release("video", "cover")
    loads = MODELS.loads.copy()
    first = video_backend("ltx", model=ltx, memory=CPU, presets="popcorn")
    second = video_backend("ltx", model=ltx, memory=CPU, presets="popcorn")
    covers = [cover_backend("sd15", model=sd15, memory=CPU) for _ in range(2)]
    assert first is not second and covers[0] is not covers[1]
    assert first.pipeline() is second.pipeline()
    assert covers[0].pipeline() is covers[1].pipeline()
    assert MODELS.loads["video"] - loads["video"] == 1
    assert MODELS.loads["cover"] - loads["cover"] == 1

    # Other settings are another pipeline; releasing one role leaves the other loaded.
    other = video_backend("ltx", model=ltx, memory=MemoryOptions(device="cpu", vae_tiling=True))
    assert other.pipeline() is not first.pipeline()
    assert MODELS.release("video") == 2
    assert [key[1] for key in MODELS.loaded("cover")] == [sd15]
    assert MODELS.loaded("video") == []
    first.pipeline()
    assert MODELS.loads["video"] - loads["video"] == 3
    MODELS.release("video", "cover")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_missing_model_folder_is_a_one_line_error(cli, tmp_path: Path):
    run = finished_run(tmp_path, "f")
    result = cli("render", str(run), "--video", "ltx", "--video-model", "./no-such-model")
    assert result.code == 1 and "video model folder not found" in result.err
    assert "Traceback" not in result.err


def test_the_studys_4bit_hunyuan_is_fp4_and_says_so_where_it_cannot_run(tmp_path: Path):
    import diffusers
    import torch

    four_bit = MemoryOptions(quantize="4bit")
    for presets, kind in (("study", "fp4"), ("popcorn", "nf4")):  # fp4: bitsandbytes' default
        asked = MediaOptions(video="hunyuan", cover=None, presets=presets, memory=four_bit)
        config = asked.backend()._quantization(diffusers, torch.bfloat16)
        assert config.quant_kwargs["bnb_4bit_quant_type"] == kind
    study = MediaOptions(video="hunyuan", cover=None, presets="study")
    backend = study.backend()
    if not torch.cuda.is_available():
        _, warnings = study.spec(backend)
        assert warnings == [
            "hunyuan: the study ran its transformer in 4-bit, which needs a CUDA GPU: "
            "running it unquantised, unlike the study"
        ]
        assert backend.memory.quantize == "none" and backend.key_settings() == {}
    on_gpu = MediaOptions(
        video="hunyuan", cover=None, presets="study", memory=MemoryOptions(device="cuda")
    ).backend()
    from importlib.util import find_spec

    if find_spec("bitsandbytes") is None:
        assert "needs the bitsandbytes package" in on_gpu.notes[0]
    else:
        assert on_gpu.memory.quantize == "4bit"
        assert on_gpu.key_settings() == {"quantize": "4bit", "four_bit": "fp4"}


@pytest.mark.slow
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
