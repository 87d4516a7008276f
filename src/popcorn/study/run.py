"""Running a study: fill the ledger from the grid, then each stage for every job ready for it.

First the study is checked (:mod:`popcorn.study.check`): a study whose LLMs, predictor, PE
pool or generators cannot serve the jobs still to do is refused with every reason at once,
before any job runs, instead of failing job after job.

Before anything runs, a study that scores with a predictor and enhances prompts checks that no
video PE may show the LLM is in the predictor's retrieval bank (its training and validation
splits): a script that echoes such a reference would retrieve that very video, with its label,
into its own score. The paper profile draws references from the predictor's test split only,
so it always passes; a pool that overlaps is refused (:func:`check_reference_pool`). A paper
study also checks its judge: the study scored with MMRA, so a predictor trained with another
recipe (other encoders, another target, the video prompt for the frame captions) is refused
unless the study file's ``allow_judge`` names that recipe, which the report then prints
(:func:`check_judge`).

Stages run in order over all jobs (every script, then every clip and cover, then every score).
The executor hands each stage's jobs to the pipeline as batches, one per group of jobs that
share a model, so each model is loaded once per stage and process; with ``unload_stages`` the
pipeline lets each one go when its part of the batch is done, so a GPU holds one stage's models
at a time (``tests/test_study_residency.py`` counts the loads). One process
runs a study at a time: it holds the study folder's lock (``.lock``, with its pid), and a second
``study run`` is refused with that pid; the lock of a killed run is free again at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popcorn.errors import UsageError
from popcorn.predictor.folder import PredictorFolder, is_trained
from popcorn.runs.lock import LockedError, folder_lock
from popcorn.safety import one_line
from popcorn.study.judge import check_judge
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
    profile: str = "popcorn"
    ran: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """Failures of this run, per stage."""
    failed_jobs: int = 0
    """Jobs of the study that stand failed once this run ended (this run's or earlier ones)."""
    first_error: str | None = None
    """One of those jobs' error, to say what went wrong when all of them failed."""

    @property
    def all_failed(self) -> bool:
        return self.jobs > 0 and self.failed_jobs == self.jobs

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "jobs": self.jobs,
            "new": self.new,
            "recovered": self.recovered,
            "rescored": self.rescored,
            "ran": dict(self.ran),
            "failed": dict(self.failed),
            "failed_jobs": self.failed_jobs,
        }


def open_ledger(study: Study) -> Ledger:
    return Ledger(study.folder / LEDGER)


def context(study: Study) -> Context:
    """What every stage of ``study`` runs with: its settings, with its runs folder, corpus,
    predictor (when it names one) and concurrency in them."""
    s = study.settings
    predictor = s.predictor
    if study.predictor is not None:
        predictor = predictor.model_copy(update={"path": study.predictor})
    settings = s.model_copy(
        update={
            "run": s.run.model_copy(
                update={"out": study.folder / "runs", "concurrency": study.concurrency}
            ),
            "pe": s.pe.model_copy(update={"corpus": study.corpus}),
            "predictor": predictor,
        }
    )
    return Context(
        settings,
        media_folders=len(study.videos) * len(study.covers) > 1,
        failures=study.failures,
    )


def run_study(
    study: Study,
    executor: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: Progress | None = None,
    *,
    allow_overlap: bool = False,
    check: bool = True,
) -> RunSummary:
    """Run (or resume) every job of ``study``; see the module docstring.

    First checks that the jobs still to do can run (:mod:`popcorn.study.check`) and raises
    :class:`~popcorn.study.check.StudyNotReadyError` with every reason they cannot, before any
    job runs; ``check=False`` skips that, but not the judge and leak checks. Raises
    :class:`LockedError` naming the other process if the study is already running, and
    :class:`ReferenceLeakError` if a PE mode's reference pool overlaps the predictor's bank
    (``allow_overlap`` runs it anyway: only to measure that leak, as benchmarks/pe_leak.py does).
    """
    if check:
        from popcorn.study.check import refuse_unready

        refuse_unready(study, retry_failed, allow_overlap)
    else:
        check_judge(study)
        if not allow_overlap:
            check_reference_pool(study)
    with ExitStack() as stack:
        _lock(study, stack)
        return _run_study(study, executor, address, retry_failed, progress)


def _lock(study: Study, stack: ExitStack) -> None:
    """Hold the study folder's lock until ``stack`` closes, or refuse at once: two runs would
    do every job twice (and the second would reset the first's running jobs to pending)."""
    try:
        stack.enter_context(
            folder_lock(study.folder, f"study folder {str(study.folder)!r}", wait=0)
        )
    except LockedError as err:
        by = f"process {err.pid}" if err.pid else "another process"
        raise LockedError(
            f"the study {study.name!r} is already running in {by}: wait for it to finish "
            f"('popcorn study status {study.path}' shows its progress) or stop it, then run "
            "again",
            err.pid,
        ) from None


def _run_study(
    study: Study,
    executor: str,
    address: str | None,
    retry_failed: bool,
    progress: Progress | None,
) -> RunSummary:
    from popcorn.study.executors import EXECUTORS

    jobs = study.jobs()
    keys = [j.key for j in jobs]
    ledger = open_ledger(study)
    try:
        new = ledger.add(jobs)
        recovered = ledger.recover()
        if retry_failed:
            ledger.retry_failed()
        scorer = _scorer_id(study)
        summary = RunSummary(len(jobs), new, recovered, ledger.rescore(keys, scorer), study.profile)
        ctx = context(study)
        extra = {"gpus_per_actor": study.gpus_per_actor} if study.gpus_per_actor != 1 else {}
        runner = EXECUTORS.create(executor, ctx, study.concurrency, address=address, **extra)
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
        failed = [r for r in ledger.rows(keys) if r["status"] == "failed"]
        summary.failed_jobs = len(failed)
        if failed:
            summary.first_error = one_line(failed[0]["error"] or "")[:300] or None
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
    """Run ``stage`` for ``todo``. Jobs that differ only in their generators share one script:
    the script stage runs once for them all and its outcome, done or failed, is every one's
    (run apart, a failed script would be asked for again per cover and could end otherwise)."""
    if not todo:
        return
    ledger.start([j["key"] for j in todo])
    leaders: dict[tuple[Any, ...], str] = {}
    followers: dict[str, list[str]] = defaultdict(list)
    for job in todo:
        cell = _script_cell(job) if stage == "script" else (job["key"],)
        leader = leaders.setdefault(cell, job["key"])
        if leader != job["key"]:
            followers[leader].append(job["key"])
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if progress is not None:
            progress(stage, count, len(todo))

    def done(key: str, fields: dict[str, Any], seconds: float) -> None:
        for each, spent in ((key, seconds), *((k, 0.0) for k in followers[key])):
            ledger.finish(each, stage, fields, spent)
            summary.ran[stage] += 1
            tick()

    def fail(key: str, error: str, reason: str = "") -> None:
        for each in (key, *followers[key]):
            ledger.fail(each, stage, error, reason)
            summary.failed[stage] += 1
            tick()

    leading = set(leaders.values())
    runner.run(stage, [j for j in todo if j["key"] in leading], done, fail)


def _script_cell(job: dict[str, Any]) -> tuple[Any, ...]:
    """What a job's script depends on within a study (its settings and profile are the
    study's): everything but its clip and cover generators."""
    return (
        job["query"],
        job["llm"],
        job["mode"],
        job["refs"],
        job["categories"],
        job["seed"],
        job.get("candidates", 1),
    )


class ReferenceLeakError(UsageError):
    """A PE mode of a scored study could show the LLM videos of the predictor's bank."""


def check_reference_pool(study: Study) -> None:
    """Refuse, in one line naming the fix, a study whose PE modes could show the LLM a video of
    the scoring predictor's bank (training + validation split). The pool is the same for every
    N and K, so it is read once; studies without a predictor or without PE have nothing to
    check."""
    modes = [m.name for m in study.modes if m.pe and m.refs > 0]
    if study.predictor is None or not modes:
        return
    bank = predictor_bank_ids(study.predictor)
    if bank is None:
        return  # no trained predictor: the run stops at _scorer_id, saying so
    from popcorn.retrieval.enhance import reference_pool_ids
    from popcorn.study.stages import job_settings

    first = next(m for m in study.modes if m.pe and m.refs > 0)
    job = {"llm": study.llms[0], "seed": study.seeds[0], **first.to_dict()}
    pool = reference_pool_ids(job_settings(context(study), job))
    overlap = pool & bank
    if overlap:
        example = min(overlap)
        raise ReferenceLeakError(
            f"{study.path.name}: the PE modes ({', '.join(modes)}) would show the LLM videos "
            f"of the predictor's retrieval bank ({len(overlap)} of the {len(pool)} videos of "
            f"the reference pool are in its training or validation split, e.g. {example!r}), "
            "so a script that echoes one could retrieve its label into its own score: use "
            'profile = "paper" (references from the predictor\'s test split only), or a corpus '
            "imported with 'popcorn corpus import ... --only-ids FILE' listing only the "
            "predictor's test-split ids"
        )


def predictor_bank_ids(predictor: Path) -> set[str] | None:
    """The ids of the predictor's training and validation splits (its retrieval bank, or a
    superset of it); None when the folder holds no trained model."""
    if not is_trained(predictor):
        return None
    return set(PredictorFolder.read(predictor).split.bank)


def _scorer_id(study: Study) -> str | None:
    """The predictor's weights hash, which finished jobs are compared against to rescore."""
    if study.predictor is None:
        return None
    if not is_trained(study.predictor):
        raise UsageError(
            f"the study's predictor {str(study.predictor)!r} holds no trained model: train one "
            "('popcorn predictor train') or remove 'predictor' from the study file"
        )
    return PredictorFolder.read(study.predictor).weights_id


REASONS_SHOWN = 3
"""Failure reasons ``study status`` shows per configuration, most common first."""


def status(study: Study) -> dict[str, Any]:
    """Counts per stage and status, overall and per configuration, and per configuration the
    most common reasons its jobs failed (``failures``), each with one job's error."""
    ledger = open_ledger(study)
    try:
        keys = {j.key: j for j in study.jobs()}
        rows = ledger.rows(keys)
        per_config: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        failed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            state = _state(row.data)
            config = keys[row["key"]].config
            overall[state] += 1
            per_config.setdefault(config, Counter())[state] += 1
            if row["status"] == "failed":
                failed[config].append(row.data)
        return {
            "profile": study.profile,
            "jobs": len(keys),
            "in_ledger": len(rows),
            "overall": dict(overall),
            "configs": {name: dict(c) for name, c in per_config.items()},
            "failures": {name: failure_reasons(found) for name, found in failed.items()},
        }
    finally:
        ledger.close()


def failure_reasons(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many of ``rows`` (failed ledger rows of one configuration) failed, and their most
    common (stage, reason) pairs with a count and one job's error, cut short."""
    counts: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for row in rows:
        why = (str(row["failed_stage"] or "?"), str(row.get("reason") or "error"))
        counts[why] += 1
        examples.setdefault(why, one_line(row["error"] or "")[:160])
    reasons = [
        {"stage": stage, "reason": reason, "jobs": n, "example": examples[stage, reason]}
        for (stage, reason), n in counts.most_common(REASONS_SHOWN)
    ]
    return {"failed": len(rows), "reasons": reasons}


def _state(row: dict[str, Any]) -> str:
    if row["status"] == "failed":
        return f"failed at {row['failed_stage']}"
    if row["stage"] == "done":
        return "done"
    return f"{row['status']}: {row['stage']}"
