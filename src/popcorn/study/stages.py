"""The work of one job stage, as plain functions of plain data, so that the local executor and
Ray workers run exactly the same code. A study job becomes :class:`~popcorn.config.Settings`
(the study's settings with the job's LLM, mode and seed) and runs through the same
:class:`~popcorn.pipeline.Pipeline` as ``popcorn generate``. A pipeline is cheap: the models it
uses are held by :data:`~popcorn.residency.MODELS`, so every job of a process shares them.

Executors hand a stage a whole group of jobs (:func:`run_batch`): scripts that share their
settings are one :meth:`~popcorn.pipeline.Pipeline.script` batch (a batching LLM answers them
together), clips and covers of one generator pair one
:meth:`~popcorn.pipeline.Pipeline.render` batch, scores one
:meth:`~popcorn.pipeline.Pipeline.score` batch, so each model is loaded once per stage and
process, and let go (with ``unload_stages``) once its part of the batch is done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.config import Settings
from popcorn.errors import PopcornError, RunStoreError, error_line

if TYPE_CHECKING:
    from popcorn.pipeline import Pipeline
    from popcorn.writer.result import GenerateResult


@dataclass(frozen=True)
class Context:
    """What every stage needs besides the job: the study's settings (where runs go, the
    corpus and the predictor among them), and whether jobs that share a script render into
    media folders of their own (a study with more than one clip or cover generator, see
    :mod:`popcorn.study.variants`)."""

    settings: Settings = field(default_factory=Settings, hash=False)
    media_folders: bool = False
    failures: Literal["omit", "blank"] = "omit"
    """The study's ``failures``: ``blank`` turns a query without a usable script into a blank
    script that is rendered and scored (its row keeps the failure's reason)."""


@dataclass(frozen=True)
class JobOutcome:
    """How one job's stage ended: its fields to record, or its error (one line) and the
    reason failures are counted by."""

    key: str
    fields: dict[str, Any] | None
    seconds: float
    error: str = ""
    reason: str = ""


def failure_reason(error: BaseException) -> str:
    """Why a job failed, as a tag: a parse failure's own reason (``no_json``, ``truncated``,
    ``copied_reference``, ...), else the error's type (``ProviderError``)."""
    return str(getattr(error, "reason", "") or type(error).__name__)


def job_settings(ctx: Context, job: dict[str, Any]) -> Settings:
    """The settings ``job`` runs with: the study's, with the job's grid cell on top."""
    s = ctx.settings
    return s.model_copy(
        update={
            "llm": s.llm.model_copy(update={"spec": job["llm"]}),
            "decoding": s.decoding.model_copy(update={"seed": job["seed"]}),
            "pe": s.pe.model_copy(update={"refs": job["refs"], "categories": job["categories"]}),
        }
    )


def pipeline(ctx: Context, job: dict[str, Any]) -> Pipeline:
    """The job's pipeline, with its LLM, mode, seed and generators."""
    from popcorn.pipeline import Pipeline

    # A study without a predictor never reaches a step that scores (its score stage is
    # skipped, best-of-N needs one), so "always" only turns a missing model into an error.
    flow = Pipeline(job_settings(ctx, job), pe=job["mode"] != "basic", score="always")
    return flow.with_media(video=job["video"], cover=job["cover"])


def script(ctx: Context, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | PopcornError]:
    """Write the scripts of ``jobs`` (one LLM, mode, N, K and seed) as one batch, up to the
    study's concurrency at once where the backend allows, so a batching model (``hf:``,
    ``vllm:``) answers them together; a finished run is returned without calling the LLM.
    A best-of-N job runs alone: its winner's run becomes the job's run."""
    from popcorn.writer.queries import QueryItem

    flow = pipeline(ctx, jobs[0])
    if ctx.failures == "blank":
        flow.generator.failures = "blank"
    if jobs[0].get("candidates", 1) > 1:
        return [_winner(flow, job) for job in jobs]
    items = [QueryItem(job["query"], json.loads(job["tags"])) for job in jobs]
    return [
        outcome if isinstance(outcome, PopcornError) else _script_fields(outcome)
        for outcome in flow.script(items)
    ]


def _script_fields(outcome: GenerateResult) -> dict[str, Any]:
    """A script job's fields; a blank script stands for a failure, so its row says why."""
    flags = outcome.script.flags
    fields: dict[str, Any] = {"run_dir": str(outcome.run_dir), "title": outcome.script.title}
    if "blank" in flags:
        failed = [f for f in flags if f.startswith("failed:")]
        fields["reason"] = f"blank ({failed[0][len('failed:') :]})" if failed else "blank"
    return fields


def _winner(flow: Pipeline, job: dict[str, Any]) -> dict[str, Any] | PopcornError:
    try:
        result = flow.best_of(job["query"], job["candidates"], 2).winner.result
    except PopcornError as error:
        return error
    return {"run_dir": str(result.run_dir), "title": result.script.title}


def media_target(ctx: Context, job: dict[str, Any]) -> Path:
    """Where the job's clip and cover go: its run folder, or its generator pair's own media
    folder when the study has several pairs."""
    target = Path(job["run_dir"])
    if ctx.media_folders:
        from popcorn.study.variants import variant_folder

        target = variant_folder(target, job["video"], job["cover"])
    return target


def media(ctx: Context, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | PopcornError]:
    """Render the clips and covers of ``jobs`` (one clip and cover generator) as one batch,
    each cached by its own keys."""
    targets = [media_target(ctx, job) for job in jobs]
    rendered = pipeline(ctx, jobs[0]).render(targets)
    return [
        outcome
        if isinstance(outcome, PopcornError)
        else {"preview": int(outcome.preview), "media_dir": str(target)}
        for target, outcome in zip(targets, rendered, strict=True)
    ]


def score(ctx: Context, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | PopcornError]:
    """Score each job's own clip (jobs whose media stage ran before media folders existed
    have theirs in the run folder)."""
    wheres = [job.get("media_dir") or job["run_dir"] for job in jobs]
    found = pipeline(ctx, jobs[0]).score(wheres)
    outcomes: list[dict[str, Any] | PopcornError] = []
    for where, each in zip(wheres, found, strict=True):
        if each is None:
            outcomes.append(RunStoreError(f"{where!r} has no clip to score"))
        elif isinstance(each, PopcornError):
            outcomes.append(each)
        else:
            weights = each.record["predictor"]["weights"]
            outcomes.append({"score": each.score, "text_only": each.text_only, "score_by": weights})
    return outcomes


STAGE_FUNCTIONS = {"script": script, "media": media, "score": score}
"""Each stage's work on a batch of jobs that share one pipeline (see :func:`run_batch`)."""


def group_key(stage: str, job: dict[str, Any]) -> tuple[str, ...]:
    """Jobs that share a model, which executors keep together: by LLM and mode for scripts,
    generators for media, all of them for scores (one predictor)."""
    if stage == "script":
        return (job["llm"], job["mode"])
    if stage == "media":
        return (job["video"], job["cover"])
    return ()


def _batch_key(stage: str, job: dict[str, Any]) -> tuple[Any, ...]:
    """Jobs that run as one batch: a script batch shares its pipeline's settings too."""
    if stage != "script":
        return group_key(stage, job)
    cell = (job["refs"], job["categories"], job["seed"], job.get("candidates", 1))
    return (*group_key(stage, job), *cell)


def run_stage(ctx: Context, stage: str, job: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
    """Run one stage of one job; returns (key, fields to record, seconds). Errors propagate."""
    started = time.perf_counter()
    outcome = STAGE_FUNCTIONS[stage](ctx, [job])[0]
    if isinstance(outcome, PopcornError):
        raise outcome
    return job["key"], outcome, time.perf_counter() - started


def run_batch(ctx: Context, stage: str, jobs: list[dict[str, Any]]) -> list[JobOutcome]:
    """Run one stage of ``jobs``, as one pipeline batch per group of jobs that share its
    settings and models, so each model is loaded once per stage. A job's failure is its
    outcome, and so is a failure of its whole batch (e.g. a generator that cannot load); the
    time of a batch is shared out evenly between its jobs. Outcomes are in ``jobs`` order."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(_batch_key(stage, job), []).append(job)
    outcomes: dict[str, JobOutcome] = {}
    for group in groups.values():
        started = time.perf_counter()
        try:
            found: list[dict[str, Any] | PopcornError] | Exception
            found = STAGE_FUNCTIONS[stage](ctx, group)
        except Exception as error:  # the whole batch failed: each of its jobs did
            found = error
        each = (time.perf_counter() - started) / len(group)
        for i, job in enumerate(group):
            result = found if isinstance(found, Exception) else found[i]
            outcomes[job["key"]] = _outcome(job["key"], result, each)
    return [outcomes[job["key"]] for job in jobs]


def _outcome(key: str, result: dict[str, Any] | Exception, seconds: float) -> JobOutcome:
    if isinstance(result, Exception):
        return JobOutcome(key, None, seconds, error_line(result), failure_reason(result))
    return JobOutcome(key, result, seconds)
