"""The work of one job stage, as plain functions of plain data, so that the local executor and
Ray workers run exactly the same code. Each process keeps its generators, renderers and
predictor loaded between jobs (module-level caches), so nothing is reloaded per job."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_generators: dict[tuple[str, str, int, int, int, str], Any] = {}
_predictors: dict[str, Any] = {}


@dataclass(frozen=True)
class Context:
    """What every stage needs besides the job: where runs go, the corpus, the predictor."""

    runs: str
    corpus: str
    predictor: str | None


def _generator(ctx: Context, job: dict[str, Any]) -> Any:
    from popcorn.generation import Generator
    from popcorn.llm.base import Decoding
    from popcorn.retrieval.enhance import PESettings

    key = (job["llm"], job["mode"], job["refs"], job["categories"], job["seed"], ctx.runs)
    with _lock:
        if key not in _generators:
            pe = (
                PESettings(refs=job["refs"], categories=job["categories"], corpus=Path(ctx.corpus))
                if job["mode"] != "basic"
                else None
            )
            _generators[key] = Generator(
                job["llm"], out=ctx.runs, decoding=Decoding(seed=job["seed"]), pe=pe
            )
        return _generators[key]


def predictor(ctx: Context) -> Any:
    from popcorn.predictor.score import Predictor

    assert ctx.predictor is not None
    with _lock:
        if ctx.predictor not in _predictors:
            _predictors[ctx.predictor] = Predictor.load(ctx.predictor)
        return _predictors[ctx.predictor]


def script(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    """Write the job's script (the run store returns a finished one without calling the LLM)."""
    import json

    generator = _generator(ctx, job)
    if job.get("candidates", 1) > 1:  # best-of-N: the winner's run becomes the job's run
        from popcorn.bestof import best_of

        top = min(2, job["candidates"])
        outcome = best_of(
            generator, job["query"], job["candidates"], top, predictor(ctx), _media_options(job)
        )
        result = outcome.winner.result
    else:
        result = generator.generate(job["query"], tags=json.loads(job["tags"]))
    return {"run_dir": str(result.run_dir), "title": result.script.title}


def media(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    """Render the job's clip and cover into its run folder (cached by their own keys)."""
    from popcorn.media.render import render

    stage = render(job["run_dir"], _media_options(job))
    return {"preview": int(bool(stage.get("video", {}).get("preview", False)))}


def score(ctx: Context, job: dict[str, Any]) -> dict[str, Any]:
    from popcorn.predictor.score import score_run

    model = predictor(ctx)
    record = score_run(job["run_dir"], model)
    return {
        "score": record["score"],
        "text_only": record["text_only"],
        "score_by": model.identity()["weights"],
    }


def _media_options(job: dict[str, Any]) -> Any:
    from popcorn.media.render import MediaOptions

    def generator(name: str) -> str | None:
        return None if name == "none" else name

    return MediaOptions(video=generator(job["video"]), cover=generator(job["cover"]))


STAGE_FUNCTIONS = {"script": script, "media": media, "score": score}


def run_stage(ctx: Context, stage: str, job: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
    """Run one stage of one job; returns (key, fields to record, seconds). Errors propagate."""
    started = time.perf_counter()
    fields = STAGE_FUNCTIONS[stage](ctx, job)
    return job["key"], fields, time.perf_counter() - started
