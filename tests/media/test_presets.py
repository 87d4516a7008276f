"""The presets follow the profile: under ``paper`` every preset the study used runs at the
study's exact settings, under ``popcorn`` at Popcorn's, each difference with its reason.
Renders go through diffusers' real pipeline classes at toy size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from media.helpers import SCRIPT, finished_run, settings
from popcorn.media.base import VideoSpec
from popcorn.media.diffusers.cover import cover_size
from popcorn.media.export import probe
from popcorn.media.presets import COVER_NEGATIVE, COVER_PRESETS, LTX_NEGATIVE, PRESETS
from popcorn.media.render import MediaOptions, render
from popcorn.pipeline import Pipeline
from popcorn.runs.store import Run

# The study's generation script, read against MISSION.md: what it passed, and the pipeline's
# defaults for what it left out.
STUDY_SPECS = {
    "ltx": VideoSpec(704, 480, 161, 15, 50, 3.0, LTX_NEGATIVE),
    "hunyuan": VideoSpec(512, 320, 61, 15, 30, 6.0),
    "cogvideox": VideoSpec(720, 480, 49, 8, 50, 6.0),
    "animatediff": VideoSpec(512, 512, 16, 10, 4, 1.0),
}


# --- the settings each profile runs -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STUDY_SPECS))
def test_the_paper_profile_runs_every_study_preset_at_the_studys_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    options = Pipeline(settings("paper", monkeypatch, tmp_path, video=name)).media_options
    backend = options.backend()
    spec, _ = options.spec(backend)
    assert options.presets == "study"
    assert spec == STUDY_SPECS[name]
    kwargs = backend.call_kwargs(SCRIPT, spec)
    assert kwargs["num_inference_steps"] == spec.steps and kwargs["num_frames"] == spec.frames
    assert kwargs.get("negative_prompt") == (spec.negative_prompt or None)
    if name == "cogvideox":  # the study left dynamic guidance at the pipeline's default: off
        assert kwargs["use_dynamic_cfg"] is False
    if name == "hunyuan":
        assert backend.chosen.quantize == "4bit"


def test_the_popcorn_profile_keeps_its_documented_differences(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    def options(video: str) -> MediaOptions:
        return Pipeline(settings("popcorn", monkeypatch, tmp_path, video=video)).media_options

    cogvideox = options("cogvideox")
    spec, _ = cogvideox.spec(cogvideox.backend())
    assert cogvideox.presets == "popcorn"
    assert spec == STUDY_SPECS["cogvideox"]  # only the call differs
    assert cogvideox.backend().call_kwargs(SCRIPT, spec)["use_dynamic_cfg"] is True
    animatediff = options("animatediff")
    assert animatediff.spec(animatediff.backend())[0].fps == 8
    hunyuan = options("hunyuan")
    assert hunyuan.backend().memory.quantize == "none"
    assert hunyuan.spec(hunyuan.backend()) == (STUDY_SPECS["hunyuan"], [])


@pytest.mark.parametrize("presets", ["study", "popcorn"])
def test_the_sd15_cover_is_square_without_a_negative_prompt_only_in_the_study(presets: str):
    cover = MediaOptions(video=None, cover="sd15", presets=presets).cover_backend()
    kwargs = cover.call_kwargs(SCRIPT, 704, 480, seed=42)
    assert (kwargs["num_inference_steps"], kwargs["guidance_scale"]) == (50, 7.5)
    if presets == "study":
        assert (kwargs["width"], kwargs["height"]) == (512, 512)
        assert kwargs["negative_prompt"] is None
    else:
        assert (kwargs["width"], kwargs["height"]) == cover_size(704, 480, 512) != (512, 512)
        assert kwargs["negative_prompt"] == COVER_NEGATIVE


def test_every_difference_has_a_reason_and_every_reason_a_difference():
    presets: list[Any] = [*PRESETS.values(), *COVER_PRESETS.values()]
    for preset in presets:
        found = preset.differences()
        assert all(d.why for d in found), preset.name
        assert {d.setting for d in found} == set(preset.why), preset.name
        if preset.study is None:
            assert not preset.why
    names = {p.name for p in presets if p.differences()}
    assert names == {"hunyuan", "cogvideox", "animatediff", "sd15"}


# --- rendering under each profile -------------------------------------------------------------


@pytest.mark.slow  # toy diffusion models, rendered
@pytest.mark.parametrize(
    ("profile", "dynamic", "negative", "cover"),
    [("paper", False, "", (32, 32)), ("popcorn", True, COVER_NEGATIVE, (40, 24))],
)
def test_a_render_records_the_profiles_settings_in_the_manifest(
    profile: str,
    dynamic: bool,
    negative: str,
    cover: tuple[int, int],
    toy_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    from PIL import Image

    media = dict(
        video="cogvideox", video_model=str(toy_models["cogvideox"]), width=48, height=32,
        frames=9, steps=2, cover="sd15", cover_model=str(toy_models["sd15"]), cover_size=32,
        cover_steps=2,
    )  # fmt: skip
    run = finished_run(tmp_path / "runs", profile[0])
    record = Pipeline(settings(profile, monkeypatch, tmp_path, **media)).render(run).record
    assert record == Run.load(run).manifest.stages["media"]
    video, image = record["video"], record["cover"]
    presets = "study" if profile == "paper" else "popcorn"
    assert video["settings"]["presets"] == presets
    assert video["settings"]["call"] == {"use_dynamic_cfg": dynamic}
    assert video["spec"]["fps"] == 8 and probe(run / video["file"]).fps == 8
    assert image["settings"]["presets"] == presets
    assert image["settings"]["negative_prompt"] == negative
    assert (image["width"], image["height"]) == cover
    with Image.open(run / image["file"]) as written:
        assert written.size == cover


@pytest.mark.slow  # toy diffusion models, rendered
@pytest.mark.parametrize(("profile", "fps"), [("paper", 10), ("popcorn", 8)])
def test_animatediff_writes_the_profiles_frame_rate(
    profile: str, fps: int, toy_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):  # fmt: skip
    media = dict(
        video="animatediff", video_model=str(toy_models["sd15"]),
        motion_adapter=str(toy_models["adapter"]), width=32, height=32, frames=8, steps=2,
        cover="none",
    )  # fmt: skip
    run = finished_run(tmp_path / "runs", profile[0])
    record = Pipeline(settings(profile, monkeypatch, tmp_path, **media)).render(run).record
    assert record["video"]["spec"]["fps"] == fps
    info = probe(run / record["video"]["file"])
    assert (info.fps, info.frames) == (fps, 8)


@pytest.mark.slow  # toy diffusion models, rendered
def test_presets_join_the_cache_key_only_when_they_change_the_settings(
    toy_models: dict[str, Path], tmp_path: Path
):
    tiny = dict(width=32, height=32, frames=9, steps=2, cover=None)

    def options(video: str, presets: str) -> MediaOptions:
        model = str(toy_models[video])
        return MediaOptions(video=video, video_model=model, presets=presets, **tiny)

    ltx = finished_run(tmp_path, "l")
    render(ltx, options("ltx", "study"))
    assert render(ltx, options("ltx", "popcorn")).get("cached") is True  # same settings
    cog = finished_run(tmp_path, "c")
    first = render(cog, options("cogvideox", "study"))["video"]["key"]
    again = render(cog, options("cogvideox", "popcorn"))
    assert "cached" not in again and again["video"]["key"] != first
    # Popcorn's presets add nothing to any key, so keys made before profiles stay valid.
    for name in PRESETS:
        assert MediaOptions(video=name, cover=None).backend().key_settings() == {}
    for name in COVER_PRESETS:
        assert set(MediaOptions(cover=name).cover_backend().settings()) == {
            "model",
            "side",
            "steps",
            "g",
        }
