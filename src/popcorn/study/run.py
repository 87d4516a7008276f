"""Running a study: fill the ledger from the grid, then each stage for every job ready for it.

Stages run in order over all jobs (every script, then every clip and cover, then every score),
so each model is loaded once per stage and a GPU holds one stage's models at a time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from popcorn.study.ledger import STAGES, Ledger
from popcorn.study.spec import Study
from popcorn.study.stages import Context

LEDGER = "ledger.sqlite"
Progress = Callable[[str, int, int], None]
"""progress(stage, done, total) after each job of a stage."""


@dataclass
class RunSummary:
    jobs: int
    new: int
    recovered: int
    rescored: int
    ran: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "new": self.new,
            "recovered": self.recovered,
            "rescored": self.rescored,
            "ran": dict(self.ran),
            "failed": dict(self.failed),
        }


def open_ledger(study: Study) -> Ledger:
    return Ledger(study.folder / LEDGER)


def context(study: Study) -> Context:
    return Context(
        runs=str(study.folder / "runs"),
        corpus=str(study.corpus),
        predictor=str(study.predictor) if study.predictor else None,
    )


def run_study(
    study: Study,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Run (or resume) every job of ``study``; see the module docstring."""
    from popcorn.study.executors import LocalExecutor, RayExecutor

    jobs = study.jobs()
    keys = [j.key for j in jobs]
    ledger = open_ledger(study)
    try:
        new = ledger.add(jobs)
        recovered = ledger.recover()
        if retry_failed:
            ledger.retry_failed()
        scorer = _scorer_id(study)
        summary = RunSummary(len(jobs), new, recovered, ledger.rescore(keys, scorer))
        ctx = context(study)
        runner = (
            RayExecutor(ctx, study.concurrency, address)
            if executor == "ray"
            else LocalExecutor(ctx, study.concurrency)
        )
        try:
            for stage in STAGES[:-1]:
                rows = ledger.ready(stage, keys)
                todo = []
                for row in rows:
                    if stage == "score" and (scorer is None or row["video"] == "none"):
                        ledger.skip_to(row["key"], "done")
                    else:
                        todo.append(row.data)
                _run_stage(ledger, runner, stage, todo, summary, progress)
        finally:
            runner.close()
        return summary
    finally:
        ledger.close()


def _run_stage(
    ledger: Ledger,
    runner: Any,
    stage: str,
    todo: list[dict[str, Any]],
    summary: RunSummary,
    progress: Progress | None,
) -> None:
    if not todo:
        return
    ledger.start([j["key"] for j in todo])
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if progress is not None:
            progress(stage, count, len(todo))

    def done(key: str, fields: dict[str, Any], seconds: float) -> None:
        ledger.finish(key, stage, fields, seconds)
        summary.ran[stage] += 1
        tick()

    def fail(key: str, error: str) -> None:
        ledger.fail(key, stage, error)
        summary.failed[stage] += 1
        tick()

    runner.run(stage, todo, done, fail)


def _scorer_id(study: Study) -> str | None:
    """The predictor's weights hash, which finished jobs are compared against to rescore."""
    if study.predictor is None:
        return None
    from popcorn.errors import UsageError

    meta = study.predictor / "predictor.json"
    if not meta.is_file():
        raise UsageError(
            f"the study's predictor {str(study.predictor)!r} holds no trained model: train one "
            "('popcorn predictor train') or remove 'predictor' from the study file"
        )
    return str(json.loads(meta.read_text(encoding="utf-8")).get("weights_sha256", ""))[:16]


def status(study: Study) -> dict[str, Any]:
    """Counts per stage and status, overall and per configuration."""
    ledger = open_ledger(study)
    try:
        keys = {j.key: j for j in study.jobs()}
        rows = ledger.rows(keys)
        per_config: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for row in rows:
            state = _state(row.data)
            overall[state] += 1
            per_config.setdefault(keys[row["key"]].config, Counter())[state] += 1
        return {
            "jobs": len(keys),
            "in_ledger": len(rows),
            "overall": dict(overall),
            "configs": {name: dict(c) for name, c in per_config.items()},
        }
    finally:
        ledger.close()


def _state(row: dict[str, Any]) -> str:
    if row["status"] == "failed":
        return f"failed at {row['failed_stage']}"
    if row["stage"] == "done":
        return "done"
    return f"{row['status']}: {row['stage']}"
