"""What the media tests share: the script they render, a finished run folder holding it, the
tiny clip settings the toy models run at, and settings as the command line makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from popcorn.config import Settings, load_settings
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.render import MediaOptions
from popcorn.runs.store import RunManifest, RunStore
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard, sunny park",
    "The kitten rolls down the ramp and lands an ollie in slow motion",
)
HALF_PIPE = Script(
    "Kitten Skateboards the Half-Pipe",
    "A fluffy orange kitten on a tiny skateboard in a sunny skate park, wide angle",
    "The kitten pushes off, rolls down the ramp and lands a wobbly ollie, slow motion",
)
"""The script the preview clips and the ``run_dir`` fixture's run folder hold."""

TINY = dict(steps=2, width=32, height=32, frames=9, fps=8)
TINY_FLAGS = ["--steps", "2", "--width", "32", "--height", "32", "--frames", "9", "--fps", "8"]
CPU = MemoryOptions(device="cpu", dtype="float32")


def finished_run(root: Path, name: str, script: Script = SCRIPT) -> Path:
    run = RunStore(root).start(RunManifest(key=name * 64, query=name, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": script.to_dict()})
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


def settings(profile: str, monkeypatch: pytest.MonkeyPatch, tmp: Path, **media: Any) -> Settings:
    """Settings as the command line makes them, with no popcorn.toml or environment around."""
    monkeypatch.chdir(tmp)
    return load_settings(None, {"media": media}, environ={}, profile=profile)
