"""The media stage follows the profile: under ``paper`` every preset the study used runs at the
study's exact settings, under ``popcorn`` at Popcorn's, whose differences ``popcorn generators``
lists with their reasons. Renders go through diffusers' real pipeline classes at toy size."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from popcorn.config import Settings, load_settings
from popcorn.media.base import VideoSpec
from popcorn.media.diffusers.cover import cover_size
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.export import probe
from popcorn.media.presets import COVER_NEGATIVE, COVER_PRESETS, LTX_NEGATIVE, PRESETS
from popcorn.media.render import MediaOptions, render
from popcorn.pipeline import Pipeline
from popcorn.runs.store import Run, RunManifest, RunStore
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard, sunny park",
    "The kitten rolls down the ramp and lands an ollie in slow motion",
)

# The study's generation script, read against MISSION.md: what it passed, and the pipeline's
# defaults for what it left out.
STUDY_SPECS = {
    "ltx": VideoSpec(704, 480, 161, 15, 50, 3.0, LTX_NEGATIVE),
    "hunyuan": VideoSpec(512, 320, 61, 15, 30, 6.0),
    "cogvideox": VideoSpec(720, 480, 49, 8, 50, 6.0),
    "animatediff": VideoSpec(512, 512, 16, 10, 4, 1.0),
}


def settings(profile: str, monkeypatch: pytest.MonkeyPatch, tmp: Path, **media: Any) -> Settings:
    """Settings as the command line makes them, with no popcorn.toml or environment around."""
    monkeypatch.chdir(tmp)
    return load_settings(None, {"media": media}, environ={}, profile=profile)


def finished_run(root: Path, name: str) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT.to_dict()})
    run.save(status="done")
    return run.path


# --- the settings each profile runs ----------------------------------------------------------


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


# --- popcorn generators ----------------------------------------------------------------------


def blocks(out: str) -> dict[tuple[str, str], list[str]]:
    """``popcorn generators``' lines under each (kind, name)."""
    found: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if not line.startswith(" "):
            kind, name = line.split()[:2]
            current = found.setdefault((kind, name), [])
        else:
            current.append(line.strip())
    return found


def test_generators_shows_the_studys_settings_and_each_difference_with_why(cli):
    result = cli("generators")
    assert result.code == 0, result.err
    listed = blocks(result.out)
    study_lines = {
        ("video", "ltx"): "704x480, 161 frames, 15 fps, 50 steps, guidance 3",
        ("video", "hunyuan"): "512x320, 61 frames, 15 fps, 30 steps, guidance 6",
        ("video", "cogvideox"): "720x480, 49 frames, 8 fps, 50 steps, guidance 6, no negative "
        "prompt, dynamic guidance off",
        ("video", "animatediff"): "512x512, 16 frames, 10 fps, 4 steps, guidance 1",
        ("cover", "sd15"): "512x512, 50 steps, guidance 7.5, no negative prompt",
    }
    for key, settings_text in study_lines.items():
        assert f"the study (profile paper): {settings_text}" in "\n".join(listed[key]), key
    assert "transformer in 4-bit (fp4)" in listed["video", "hunyuan"][1]
    assert listed["video", "ltx"][-1] == "popcorn: the same"
    for kind, table in (("video", PRESETS), ("cover", COVER_PRESETS)):
        for name, preset in table.items():
            lines = listed[kind, name]
            differs = [line for line in lines if line.startswith("popcorn differs: ")]
            assert differs == [f"popcorn differs: {d.line()}" for d in preset.differences()]
            if preset.study is None:  # never called the study's
                assert lines[-1].startswith("not in the study; both profiles: ")
                assert not [line for line in lines[:-1] if "study" in line]
    assert "8 fps (the study: 10 fps)" in "\n".join(listed["video", "animatediff"])
    assert "dynamic guidance on (the study: dynamic guidance off)" in result.out


# --- rendering under each profile --------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from toys import sd, video

    root = tmp_path_factory.mktemp("toys")
    return {
        "cogvideox": video.save_toy_cogvideox(root / "cogvideox"),
        "ltx": video.save_toy_ltx(root / "ltx"),
        "sd15": sd.save_toy_sd15(root / "sd15"),
        "adapter": sd.save_toy_motion_adapter(root / "adapter"),
    }


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


PLUGIN = textwrap.dedent(
    """
    from pathlib import Path

    import numpy as np

    from popcorn.media.base import Clip, VideoSpec
    from popcorn.media.export import write_mp4


    class Strict:
        \"\"\"A clip generator whose factory takes only the documented options.\"\"\"

        name = "strict"
        preview = False

        def __init__(self, model=None, memory=None, adapter=None):
            self.model = model

        def default_spec(self):
            return VideoSpec(width=32, height=32, frames=4, fps=4)

        def fit(self, spec):
            return spec, []

        def render(self, script, spec, target):
            frames = np.full((spec.frames, spec.height, spec.width, 3), 90, dtype=np.uint8)
            write_mp4(frames, Path(target), spec.fps)
            return Clip(Path(target), self.name, spec.width, spec.height, spec.frames, spec.fps,
                        preview=False)
    """
)


def test_a_plugin_generator_renders_under_the_paper_profile(
    install_plugin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    install_plugin("strict_plugin", PLUGIN, {"popcorn.video": {"strict": "strict_plugin:Strict"}})
    run = finished_run(tmp_path / "runs", "p")
    flow = Pipeline(settings("paper", monkeypatch, tmp_path, video="strict", cover="none"))
    record = flow.render(run).record
    assert record["video"]["backend"] == "strict" and "settings" not in record["video"]


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
