"""Generators by name: the preset tables and the registry load without torch, ``popcorn
generators`` lists every preset with the study's settings and Popcorn's differences, and a
plugin generator is built from its entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from media.helpers import finished_run, settings
from popcorn.media.presets import COVER_PRESETS, PRESETS
from popcorn.pipeline import Pipeline


def test_the_preset_tables_and_the_registry_load_without_torch_or_diffusers():
    code = (
        "import sys\n"
        "from popcorn.media.presets import COVER_PRESETS, PRESETS\n"
        "from popcorn.media.registry import listing\n"
        "assert PRESETS and COVER_PRESETS and listing()\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
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
