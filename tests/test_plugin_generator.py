"""Adding a clip generator is one module plus one registration: installed as a plugin package,
it has its own options and help, and runs through generate, render and a study untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult

RunCli = Callable[..., CliResult]
Install = Callable[[str, str, dict[str, dict[str, str]]], Path]

# The whole plugin: one module, registered by one entry point.
STRIPES_PLUGIN = '''
from pathlib import Path

import numpy as np

from popcorn.media.base import Clip, VideoSpec
from popcorn.media.export import write_mp4


class Stripes:
    """Vertical colour bands that slide one pixel a frame (a test plugin)."""

    name = "stripes"
    preview = False
    model = "none needed"
    honours = frozenset({"frames", "fps", "video_seed"})
    options = {"bands": "how many colour bands (default 2)"}

    def __init__(self, *, extra=None, **_settings):
        self.bands = int((extra or {}).get("bands", 2))

    def default_spec(self):
        return VideoSpec(width=64, height=48, frames=6, fps=6)

    def fit(self, spec):
        return spec, []

    def render(self, script, spec, target):
        frames = np.zeros((spec.frames, spec.height, spec.width, 3), dtype=np.uint8)
        band = spec.width // self.bands
        for i in range(spec.frames):
            for b in range(self.bands):
                left = (b * band + i) % spec.width
                frames[i, :, left : left + band, b % 3] = 200
        write_mp4(frames, Path(target), spec.fps)
        return Clip(Path(target), self.name, spec.width, spec.height, spec.frames, spec.fps,
                    preview=False, settings={"bands": self.bands})
'''
STRIPES_ENTRY_POINTS = {"popcorn.video": {"stripes": "stripes_plugin:Stripes"}}
NO_COVER = ("--cover", "none")
# The paper profile records the quality gate's verdict on mock:'s echoing scripts, not acts on it.
MOCK = ("--llm", "mock:x", "--profile", "paper")


@pytest.fixture
def stripes(install_plugin: Install) -> Path:
    return install_plugin("stripes_plugin", STRIPES_PLUGIN, STRIPES_ENTRY_POINTS)


def clip_of(run_dir: Path) -> dict[str, object]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    record: dict[str, object] = manifest["stages"]["media"]["video"]
    return record


def test_a_plugin_generator_shows_its_summary_and_options_in_help(
    cli: RunCli, stripes: Path
) -> None:
    helped = cli("generate", "--help")
    assert helped.code == 0, helped.err
    assert "stripes: Vertical colour bands" in " ".join(helped.out.split())
    listed = cli("generators")
    assert "--video-opt bands=...: how many colour bands" in listed.out
    assert "honours: fps, frames, video_seed" in listed.out


def test_generate_runs_a_plugin_with_its_own_option_and_keys_it(cli: RunCli, stripes: Path) -> None:
    from popcorn.media.export import probe

    made = cli("generate", "a cat", *MOCK, "--video", "stripes", *NO_COVER,
               "--video-opt", "bands=3", "--frames", "9", "--json")  # fmt: skip
    assert made.code == 0, made.err
    run_dir = Path(json.loads(made.out)["run_dir"])
    info = probe(run_dir / "clip.mp4")
    assert (info.width, info.height, info.frames) == (64, 48, 9)
    first = clip_of(run_dir)
    assert first["settings"] == {"bands": 3}
    # Another value of its own option is another clip: the option is in the media key.
    again = cli("render", str(run_dir), "--video", "stripes", *NO_COVER, "--video-opt", "bands=4",
                "--frames", "9", "--json")  # fmt: skip
    assert again.code == 0, again.err
    second = clip_of(run_dir)
    assert second["settings"] == {"bands": 4} and second["key"] != first["key"]


def test_a_setting_the_plugin_ignores_is_warned_once_and_keeps_its_key(
    cli: RunCli, stripes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = cli("generate", "a dog", *MOCK, "--video", "stripes", *NO_COVER, "--json")
    assert made.code == 0, made.err
    run_dir = Path(json.loads(made.out)["run_dir"])
    key = clip_of(run_dir)["key"]
    # Stripes does not honour --steps: the clip is not made again, and the user is told once.
    rendered = cli("render", str(run_dir), "--video", "stripes", *NO_COVER, "--steps", "7",
                   "--json")  # fmt: skip
    assert rendered.code == 0, rendered.err
    assert json.loads(rendered.out)["cached"] is True and clip_of(run_dir)["key"] == key
    warned = [r.message for r in caplog.records if "does not honour the steps" in r.message]
    assert len(warned) == 1, caplog.text


def test_an_option_the_plugin_does_not_declare_is_refused_before_any_work(
    cli: RunCli, stripes: Path
) -> None:
    refused = cli("generate", "a cat", *MOCK, "--video", "stripes", *NO_COVER,
                  "--video-opt", "colour=red")  # fmt: skip
    assert refused.code == 1
    assert "has no option 'colour' (it takes: bands" in refused.err
    assert not Path("popcorn-runs").exists()


def test_a_study_runs_a_plugin_generator_with_its_options(cli: RunCli, stripes: Path) -> None:
    from popcorn.media.export import probe

    Path("q.txt").write_text("a cat on a skateboard\nramen at night\n")
    Path("s.toml").write_text(
        '[study]\nllms = ["mock:x"]\nvideos = ["stripes"]\ncovers = ["none"]\n'
        '[queries]\nq = "q.txt"\n'
        "[media]\nframes = 4\n[media.video_extra]\nbands = 5\n"
    )
    ran = cli("study", "run", "s.toml", "--json")
    assert ran.code == 0, ran.err
    clips = sorted(Path("s.study").rglob("clip.mp4"))
    assert len(clips) == 2
    for clip in clips:
        assert probe(clip).frames == 4
        assert clip_of(clip.parent)["settings"] == {"bands": 5}


# An LLM backend follows the same contract: declared options, handed over as ``extra``.
PARROT_PLUGIN = """
import json

from popcorn.testing.mockllm import MockLLM


class Parrot(MockLLM):
    def __init__(self, spec, title):
        script = {"title": title, "cover_prompt": "a parrot on a perch, bright poster",
                  "video_prompt": "a parrot turns its head slowly, close-up, daylight"}
        super().__init__(spec, answers=[json.dumps(script)])


def parrot(argument, options, extra=None):
    return Parrot(f"parrot:{argument}", str((extra or {}).get("title", "A parrot")))


parrot.form = "parrot:NAME"
parrot.options = {"title": "the title it always answers"}
"""


def test_an_llm_plugin_takes_its_own_options_through_the_same_contract(
    cli: RunCli, install_plugin: Install
) -> None:
    install_plugin(
        "parrot_plugin", PARROT_PLUGIN, {"popcorn.llm": {"parrot": "parrot_plugin:parrot"}}
    )
    assert "--llm-opt title=...: the title it always answers" in cli("llms").out
    made = cli("generate", "a parrot", "--llm", "parrot:p", "--profile", "paper", *NO_COVER,
               "--video", "none", "--llm-opt", "title=Polly talks", "--json")  # fmt: skip
    assert made.code == 0, made.err
    assert json.loads(made.out)["title"] == "Polly talks"
    refused = cli("generate", "a parrot", "--llm", "mock:x", "--llm-opt", "title=Polly")
    assert refused.code == 1 and "LLM 'mock' has no option 'title' (it takes none)" in refused.err
