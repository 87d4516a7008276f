"""The generators' contract: presets are plain data, generators declare what they can do, and
they are cheap objects whose pipelines load once per process and settings, held by the
process's residency owner under the roles ``video`` and ``cover``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from popcorn.media.base import CHECK, KEY_SETTINGS, PREPARE, supports
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.registry import cover_backend, video_backend
from popcorn.residency import MODELS
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard, sunny park",
    "The kitten rolls down the ramp and lands an ollie in slow motion",
)
CPU = MemoryOptions(device="cpu", dtype="float32")


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


def test_built_in_generators_declare_their_capabilities():
    clip = video_backend("ltx", model=None, memory=CPU, presets="popcorn")
    cover = cover_backend("sd15", model=None, memory=CPU, presets="popcorn")
    assert all(supports(clip, c) for c in (PREPARE, CHECK, KEY_SETTINGS))
    assert supports(cover, PREPARE) and supports(cover, CHECK)
    assert not supports(cover, KEY_SETTINGS)
    for preview in (video_backend("preview"), cover_backend("preview")):
        assert supports(preview, PREPARE) and not supports(preview, CHECK)


def test_a_method_that_is_not_declared_is_not_a_capability():
    class Undeclared:  # a plugin written before capabilities: it has prepare, says nothing
        def prepare(self) -> None: ...

    assert not supports(Undeclared(), PREPARE)
    with pytest.raises(ValueError, match="unknown capability"):
        supports(Undeclared(), "teleport")


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
