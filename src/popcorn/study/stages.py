"""The work of one job stage, as plain functions of plain data, so that the local executor and
Ray workers run exactly the same code. A study job becomes :class:`~popcorn.config.Settings`
(the study's settings with the job's LLM, mode, seed and generators) and runs through the same
:class:`~popcorn.pipeline.Pipeline` as ``popcorn generate``. Each process keeps its pipelines
(LLMs, PE indexes, renderers, the predictor) loaded between jobs."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popcorn.config import Settings

if TYPE_CHECKING:
    from popcorn.pipeline import Pipeline

_lock = threading.Lock()
_pipelines: dict[tuple[Any, ...], Pipeline] = {}


@dataclass(frozen=True)
class Context:
    """What every stage needs besides the job: where runs go, the corpus, the predictor, the
    study's settings, and whether jobs that share a script render into media folders of their
    own (a study with more than one clip or cover generator, see :mod:`popcorn.study.variants`)."""

    runs: str
    corpus: str
    predictor: str | None
    settings: Settings = field(default_factory=Settings, hash=False)
    media_folders: bool = False


def job_settings(ctx: Context, job: dict[str, Any]) -> Settings:
    """The settings ``job`` runs with: the study's, with the job's grid cell on top."""
    s = ctx.settings
    return s.model_copy(
        update={
            "llm": s.llm.model_copy(update={"spec": job["llm"]}),
            "decoding": s.decoding.model_copy(update={"seed": job["seed"]}),
            "run": s.run.model_copy(update={"out": Path(ctx.runs)}),
            "pe": s.pe.model_copy(
                update={
                    "corpus": Path(ctx.corpus),
                    "refs": job["refs"],
                    "categories": job["categories"],
                }
            ),
            "predictor": s.predictor.model_copy(
                update={"path": Path(ctx.predictor) if ctx.predictor else s.predictor.path}
            ),
        }
    )


def pipeline(ctx: Context, job: dict[str, Any]) -> Pipeline:
    """The job's pipeline: one per LLM, mode and seed in this process, with the job's media."""
    from popcorn.pipeline import Pipeline

    where = (ctx.runs, ctx.corpus, ctx.predictor, ctx.settings.model_dump_json())
    key = (job["llm"], job["mode"], job["refs"], job["categories"], job["seed"], *where)
    with _lock:
        if key not in _pipelines:
            _pipelines[key] = Pipeline(
                job_settings(ctx, job),
                pe=job["mode"] != "basic",
                score="always" if ctx.predictor else "never",
            )
        found = _pipelines[key]
    return found.with_media(video=job["video"], cover=job["cover"])


def script(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    """Write the job's script (the run store returns a finished one without calling the LLM)."""
    flow = pipeline(ctx, job)
    if job.get("candidates", 1) > 1:  # best-of-N: the winner's run becomes the job's run
        result = flow.best_of(job["query"], job["candidates"], 2).winner.result
    else:
        result = flow.script(job["query"], tags=json.loads(job["tags"]))
    return {"run_dir": str(result.run_dir), "title": result.script.title}


def media(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    """Render the job's clip and cover (cached by their own keys) into its run folder, or into
    its generator pair's own media folder when the study has several pairs."""
    target = Path(job["run_dir"])
    if ctx.media_folders:
        from popcorn.study.variants import variant_folder

        target = variant_folder(target, job["video"], job["cover"])
    rendered = pipeline(ctx, job).render(target)
    return {"preview": int(rendered.preview), "media_dir": str(target)}


def score(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    """Score the job's own clip (jobs whose media stage ran before media folders existed have
    theirs in the run folder)."""
    flow = pipeline(ctx, job)
    where = job.get("media_dir") or job["run_dir"]
    found = flow.score(where)
    if found is None:
        from popcorn.errors import RunStoreError

        raise RunStoreError(f"{where!r} has no clip to score")
    return {
        "score": found.score,
        "text_only": found.text_only,
        "score_by": found.record["predictor"]["weights"],
    }


STAGE_FUNCTIONS = {"script": script, "media": media, "score": score}


def run_stage(ctx: Context, stage: str, job: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
    """Run one stage of one job; returns (key, fields to record, seconds). Errors propagate."""
    started = time.perf_counter()
    fields = STAGE_FUNCTIONS[stage](ctx, job)
    return job["key"], fields, time.perf_counter() - started
