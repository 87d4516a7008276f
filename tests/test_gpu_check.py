"""benchmarks/gpu_check.py works before a GPU is lent: its ``--cpu-smoke`` mode runs every
section's code at toy sizes on the CPU, and one section failing costs only that section."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def module() -> Iterator[Any]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check as module

        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_cpu_smoke_runs_every_section_and_saves_its_figures(tmp_path: Path) -> None:
    saved = tmp_path / "figures.json"
    done = gpu_check("--cpu-smoke", "--save", str(saved))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(saved.read_text())
    expected = {"study", "cover:sd15", "cover:sdxl", "hf", "vllm", "speedups"}
    expected |= {f"clip:{name}" for name in ("animatediff", "ltx", "wan", "hunyuan", "cogvideox")}
    assert expected <= set(figures)
    assert not [name for name, found in figures.items() if "error" in str(found)]
    assert figures["study"]["kept"]["loads_per_model"] == {"video": 1, "cover": 1}
    for name in expected - {"study", "hf", "vllm", "speedups"}:
        assert figures[name]["render_vs_bare"] > 0
    assert figures["hf"]["batch16_vs_batch1"] > 0
    assert figures["speedups"]["cache_first_block_speedup"] > 0
    # one line per section on stdout, each naming it
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert all(any(line.startswith(name) for line in lines) for name in expected)


@pytest.mark.slow
def test_a_study_media_stage_loads_each_model_once_and_releases_it_once_at_most(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "figures.json"
    done = gpu_check("--cpu-smoke", "--only", "study", "--save", str(saved))
    assert done.returncode == 0, done.stdout + done.stderr
    study = json.loads(saved.read_text())["study"]
    assert study["media_jobs"] == 4
    one_each = {"video": 1, "cover": 1}
    assert study["kept"] == {
        "loads_per_model": one_each,
        "releases_per_model": {"video": 0, "cover": 0},
    }
    assert study["unload_stages"] == {"loads_per_model": one_each, "releases_per_model": one_each}


def test_an_unknown_section_is_refused_naming_the_known_ones() -> None:
    done = gpu_check("--cpu-smoke", "--only", "sora")
    assert done.returncode == 2
    assert "clip:ltx" in done.stderr and "study" in done.stderr


def test_a_failing_section_is_one_line_and_the_next_goes_on(
    module: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    run = module.Run("cpu", torch.float32, True, False, 2, tmp_path)

    def broken(run: Any, deadline: float) -> dict[str, Any]:
        raise RuntimeError("out of cheese\nsecond line")

    module.section(run, "hf", broken)
    module.section(run, "study", lambda run, deadline: {"loads_per_model": {"video": 1}})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("hf") and "RuntimeError: out of cheese" in lines[0]
    assert "second line" not in lines[0]
    assert run.figures["study"]["loads_per_model"] == {"video": 1}


def test_a_section_past_the_budget_is_skipped_saying_so(module: Any, tmp_path: Path) -> None:
    import torch

    run = module.Run("cpu", torch.float32, True, False, 2, tmp_path, budget=0.0)
    module.section(run, "study", lambda run, deadline: pytest.fail("ran past the budget"))
    assert run.figures["study"]["skipped"] == "past --budget"
