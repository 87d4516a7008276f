"""Fixtures of the media tests: a finished run folder and toy diffusion models (one layer,
random weights, a tokenizer trained on a sentence) saved with ``save_pretrained``, each built
once per session and never changed by a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.helpers import HALF_PIPE
from popcorn.runs.store import RunManifest, RunStore


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run folder, as ``popcorn generate`` leaves it (no LLM needed here)."""
    run = RunStore(tmp_path / "runs").start(RunManifest(key="k" * 64, query="q", mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": HALF_PIPE.to_dict()})
    run.save(status="done")
    return run.path


@pytest.fixture(scope="session")
def toys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from toys import sd, video

    root = tmp_path_factory.mktemp("toys")
    return {
        "ltx": video.save_toy_ltx(root / "ltx"),
        "hunyuan": video.save_toy_hunyuan(root / "hunyuan"),
        "cogvideox": video.save_toy_cogvideox(root / "cogvideox"),
        "sd15": sd.save_toy_sd15(root / "sd15"),
    }


@pytest.fixture(scope="session")
def tiny_ltx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toys.video import save_toy_ltx

    return save_toy_ltx(tmp_path_factory.mktemp("tiny-ltx"))


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from toys import sd, video

    root = tmp_path_factory.mktemp("toys")
    return {
        "cogvideox": video.save_toy_cogvideox(root / "cogvideox"),
        "ltx": video.save_toy_ltx(root / "ltx"),
        "sd15": sd.save_toy_sd15(root / "sd15"),
        "adapter": sd.save_toy_motion_adapter(root / "adapter"),
    }
