"""``popcorn pull``: what presets, encoders and LLMs need from the hub, checked or fetched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _popcorn(*args: str, hub: Path) -> subprocess.CompletedProcess[str]:
    # A fresh process: the hub library reads its cache folder once, at import.
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _cache(hub: Path, repo: str) -> Path:
    """A repository as the hub's cache lays it out after a download."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123456789abcdef")
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    return snapshot


def test_check_reports_what_is_cached(tmp_path: Path):
    hub = tmp_path / "hub"
    snapshot = _cache(hub, "Lightricks/LTX-Video")
    done = _popcorn("pull", "ltx", "--check", "--json", hub=hub)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "repo": "Lightricks/LTX-Video",
        "cached": True,
        "path": str(snapshot),
    }
    missing = _popcorn("pull", "sd15", "vit", "--check", hub=hub)
    assert missing.returncode == 1
    assert "not cached: stable-diffusion-v1-5/stable-diffusion-v1-5, google/vit-base" in (
        missing.stderr
    )
    assert missing.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "repos"),
    [
        ("animatediff", ["emilianJR/epiCRealism", "ByteDance/AnimateDiff-Lightning"]),
        ("hf:Qwen/Qwen2.5-7B-Instruct", ["Qwen/Qwen2.5-7B-Instruct"]),
        ("minilm-l12", ["sentence-transformers/all-MiniLM-L12-v2"]),
        ("embedded", []),
        ("openai:gpt-4o", []),
    ],
)
def test_names_map_to_their_repositories(name: str, repos: list[str]):
    from popcorn.cli.pull import repos_for

    found = repos_for(name)
    assert found[-len(repos) :] == repos if repos else found == []


def test_a_download_offline_is_one_line(tmp_path: Path):
    failed = _popcorn("pull", "cogvideox", hub=tmp_path / "hub")
    assert failed.returncode == 1
    assert "cannot download 'THUDM/CogVideoX-5b'" in failed.stderr
    assert failed.stderr.strip().count("\n") <= 1
