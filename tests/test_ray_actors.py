"""The Ray executor keeps every GPU of a cluster busy: one model actor per GPU, a stage's jobs
sharded by model so each actor loads one, and the same results as the local executor."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import pytest

from popcorn.study.executors import actor_plan, shard
from popcorn.testing.plugins import FLIPBOOK_PLUGIN

# --- the plan, without Ray -------------------------------------------------------------------


def test_one_actor_per_gpu_or_per_requested_fraction():
    assert actor_plan(4) == (4, 1.0)
    assert actor_plan(4, 0.5) == (8, 0.5)
    assert actor_plan(4, 2) == (2, 2)
    assert actor_plan(0) == (1, 0.0)  # no GPU: one actor on the CPU, as before
    assert actor_plan(1, 2) == (1, 0.0)  # asks for more than the cluster has
    with pytest.raises(ValueError):
        actor_plan(4, 0)


def test_with_enough_workers_each_serves_one_model_and_spares_go_to_the_biggest():
    assert shard([10, 10], 2) == [[0], [1]]
    assert shard([30, 10], 4) == [[0], [0], [0], [1]]  # 10 jobs per worker on each model
    assert shard([5], 3) == [[0], [0], [0]]  # one model: every worker loads it
    assert shard([5, 5], 3) in ([[0], [0], [1]], [[0], [1], [1]])


def test_with_fewer_workers_whole_groups_go_to_the_least_loaded():
    plan = shard([9, 1, 5, 4], 2)
    assert sorted(plan) == [[0, 1], [2, 3]]  # 10 jobs each
    assert shard([3, 3, 3], 1) == [[0, 1, 2]]
    assert shard([], 2) == [[], []]


def test_gpus_per_actor_is_a_study_setting_checked_on_load(tmp_path: Path):
    from popcorn.errors import UsageError
    from popcorn.study.spec import load_study

    (tmp_path / "q.txt").write_text("A cat learning to skateboard\n")
    path = tmp_path / "study.toml"
    path.write_text('[study]\ngpus_per_actor = 0.5\n\n[queries]\nq = "q.txt"\n')
    assert load_study(path).gpus_per_actor == 0.5
    path.write_text('[study]\ngpus_per_actor = 0\n\n[queries]\nq = "q.txt"\n')
    with pytest.raises(UsageError, match="line 2: gpus_per_actor must be a number above 0"):
        load_study(path)


# --- a local cluster with declared GPUs -------------------------------------------------------

LOGGING_PLUGIN = (
    FLIPBOOK_PLUGIN
    + '''

import os

_flat_render = Flipbook.render


def _logged(self, script, spec, target):
    with open(os.environ["FLIPBOOK_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()} {self.name}\\n")
    return _flat_render(self, script, spec, target)


Flipbook.render = _logged


class Flipbook2(Flipbook):
    """Flat colour pages again, under another name (a second model)."""

    name = "flipbook2"
'''
)

STUDY = """[study]
profile = "paper"  # the mock: stand-in repeats the prompt: popcorn's gate refuses it
llms = ["mock:x"]
videos = ["flipbook", "flipbook2"]
covers = ["none"]
seeds = [1, 2, 3]

[queries]
q = "queries.txt"
"""
QUERIES = ["A cat learning to skateboard", "Street food in Bangkok at night"]


def _study(folder: Path) -> Path:
    folder.mkdir()
    (folder / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    (folder / "study.toml").write_text(STUDY)
    return folder / "study.toml"


def _table(study: Path) -> list[tuple[str, ...]]:
    with (study.parent / "study.study" / "report" / "results.csv").open() as f:
        rows = csv.DictReader(f)
        return sorted(
            tuple(r[c] for c in ("query", "seed", "video", "status", "title")) for r in rows
        )


@pytest.mark.slow
def test_media_jobs_spread_over_one_actor_per_gpu_each_rendering_one_model(
    cli, install_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ray = pytest.importorskip("ray")
    sites = [
        install_plugin(
            "flipbook_plugin",
            LOGGING_PLUGIN,
            {
                "popcorn.video": {
                    "flipbook": "flipbook_plugin:Flipbook",
                    "flipbook2": "flipbook_plugin:Flipbook2",
                }
            },
        ),
    ]
    log = tmp_path / "renders.log"
    monkeypatch.setenv("FLIPBOOK_LOG", str(log))
    local = _study(tmp_path / "local")
    assert cli("study", "run", str(local)).code == 0
    assert cli("study", "report", str(local)).code == 0
    log.unlink()

    path = os.pathsep.join([*(str(s) for s in sites), os.environ.get("PYTHONPATH", "")])
    env = {"PYTHONPATH": path, "FLIPBOOK_LOG": str(log)}
    ray.init(
        num_cpus=4,
        num_gpus=3,  # declared, not real: each actor asks for one
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        distributed = _study(tmp_path / "ray")
        result = cli("study", "run", str(distributed), "--executor", "ray")
    finally:
        ray.shutdown()
    assert result.code == 0, result.err
    assert cli("study", "report", str(distributed)).code == 0

    by_actor: dict[str, set[str]] = defaultdict(set)
    renders = log.read_text().split()
    for pid, name in zip(renders[::2], renders[1::2], strict=True):
        by_actor[pid].add(name)
    assert len(renders) // 2 == 12  # 2 queries x 3 seeds x 2 clip generators
    assert str(os.getpid()) not in by_actor  # nothing rendered in the driver
    assert len(by_actor) == 3  # every GPU's actor got jobs
    assert all(len(models) == 1 for models in by_actor.values())  # one model per actor
    assert set().union(*by_actor.values()) == {"flipbook", "flipbook2"}
    assert _table(distributed) == _table(local)
