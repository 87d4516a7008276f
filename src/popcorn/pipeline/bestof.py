"""Best-of-N: the predictor as an optimiser, not only a judge.

Write K scripts for one query with seeds ``seed, seed + 1, ...``, rank them with the fast
text-only model (no rendering needed), render the top M as one batch, score those clips with
the full predictor, and keep the best. Every candidate is its own run (the seed is part of its
key, so reruns reuse them); ``candidates.json`` in the winner's folder records them all. It is
built from the :class:`~popcorn.pipeline.Pipeline`'s own steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from popcorn.errors import GenerationError, PopcornError, UsageError

if TYPE_CHECKING:
    from popcorn.pipeline.flow import Pipeline
    from popcorn.pipeline.results import MediaResult, Score, ScriptResult


@dataclass(frozen=True)
class Candidate:
    """One of the K scripts, with what the predictor made of it."""

    seed: int
    result: ScriptResult
    text_only: float
    media: MediaResult | None = None
    """Its cover and clip, for the rendered candidates."""
    score: Score | None = None
    """The full predictor's score, for the rendered candidates."""

    @property
    def rendered(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "title": self.result.script.title,
            "run_dir": str(self.result.run_dir),
            "text_only": round(self.text_only, 4),
            "rendered": self.rendered,
            "score": None if self.score is None else self.score.score,
        }


@dataclass(frozen=True)
class BestOf:
    query: str
    candidates: list[Candidate]
    """In text-only rank order."""
    winner: Candidate

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "winner": str(self.winner.result.run_dir),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def best_of(
    pipeline: Pipeline,
    query: str,
    candidates: int,
    render_top: int,
    *,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> BestOf:
    """See the module docstring. Candidates whose script fails are left out (at least one must
    succeed); the winner is the best full score, ties to the better text-only rank. A render
    or a score that fails stops it with that error."""
    if candidates < 1 or not 1 <= render_top <= candidates:
        raise UsageError("need 1 <= --render-top <= --candidates")
    if pipeline.media_options.video is None:
        raise UsageError("best-of-N scores clips: it cannot run with --video none")
    predictor = pipeline.predictor
    if predictor is None:
        raise UsageError(
            "best-of-N ranks candidates with a trained predictor: give --predictor DIR"
        )
    step = on_step or _no_step
    seed = pipeline.settings.decoding.seed
    base_seed = seed if seed is not None else 42
    results: list[tuple[int, ScriptResult]] = []
    errors = []
    for i in range(candidates):
        try:  # each seed is a run of its own, written by the same (loaded) LLM
            results.append(
                (base_seed + i, pipeline.with_seed(base_seed + i).script(query, force=force))
            )
        except GenerationError as err:
            errors.append(str(err))
        step("script")
    if not results:
        raise GenerationError(f"no candidate script for {query!r}: {errors[0]}")
    text_scores = predictor.score_titles([r.script.title for _, r in results])
    ranked = sorted(
        (Candidate(seed, r, float(s)) for (seed, r), s in zip(results, text_scores, strict=True)),
        key=lambda c: -c.text_only,
    )
    top = ranked[:render_top]
    media = pipeline.render([c.result.run_dir for c in top], force=force)
    scores = pipeline.score([c.result.run_dir for c in top])
    final = []
    for candidate, rendered, scored in zip(top, media, scores, strict=True):
        if isinstance(rendered, PopcornError):
            raise rendered
        if isinstance(scored, PopcornError):
            raise scored
        if scored is None:
            raise UsageError(f"{str(candidate.result.run_dir)!r}: rendered without a clip to score")
        final.append(replace(candidate, media=rendered, score=scored))
        step("render")
    final.extend(ranked[render_top:])
    winner = max(final[:render_top], key=lambda c: c.score.score if c.score else float("-inf"))
    best = BestOf(query, final, winner)
    from popcorn.runs.store import Run

    run = Run.load(winner.result.run_dir)
    with run.lock():
        run = Run.load(run.path)
        run.write_json("candidates", "candidates.json", best.to_dict())
        run.save()  # the manifest lists candidates.json
    return best


def _no_step(step: str) -> None:
    return None
