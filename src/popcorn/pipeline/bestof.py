"""Best-of-N: the predictor as an optimiser, not only a judge.

Write K scripts for one query with seeds ``seed, seed + 1, ...``, rank them with the fast
text-only model (no rendering needed), render the top M, score those clips with the full
predictor, and keep the best. Every candidate is its own run (the seed is part of its key, so
reruns reuse them); ``candidates.json`` in the winner's folder records them all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from popcorn.errors import GenerationError, UsageError

if TYPE_CHECKING:
    from popcorn.generation import GenerateResult, Generator
    from popcorn.media.render import MediaOptions
    from popcorn.predictor.score import Predictor


@dataclass(frozen=True)
class Candidate:
    seed: int
    result: GenerateResult
    text_only: float
    score: dict[str, Any] | None = None
    """The full predictor's record for rendered candidates."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "title": self.result.script.title,
            "run_dir": str(self.result.run_dir),
            "text_only": round(self.text_only, 4),
            "rendered": self.score is not None,
            "score": None if self.score is None else self.score["score"],
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
    generator: Generator,
    query: str,
    candidates: int,
    render_top: int,
    predictor: Predictor,
    media: MediaOptions,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> BestOf:
    """See the module docstring. Candidates whose script fails are left out (at least one must
    succeed); the winner is the best full score, ties to the better text-only rank."""
    from popcorn.media.render import render
    from popcorn.predictor.score import score_run

    if candidates < 1 or not 1 <= render_top <= candidates:
        raise UsageError("need 1 <= --render-top <= --candidates")
    if media.video is None:
        raise UsageError("best-of-N scores clips: it cannot run with --video none")
    base_seed = generator.decoding.seed if generator.decoding.seed is not None else 42
    results: list[tuple[int, GenerateResult]] = []
    errors = []
    for i in range(candidates):
        seed = base_seed + i
        variant = copy.copy(generator)  # shares the loaded LLM and the PE index
        variant.decoding = replace(generator.decoding, seed=seed)
        try:
            results.append((seed, variant.generate(query, force=force)))
        except GenerationError as err:
            errors.append(str(err))
        if on_step is not None:
            on_step("script")
    if not results:
        raise GenerationError(f"no candidate script for {query!r}: {errors[0]}")
    text_scores = predictor.score_titles([r.script.title for _, r in results])
    ranked = sorted(
        (Candidate(seed, r, float(s)) for (seed, r), s in zip(results, text_scores, strict=True)),
        key=lambda c: -c.text_only,
    )
    final = []
    for rank, candidate in enumerate(ranked):
        if rank < render_top:
            render(candidate.result.run_dir, media, force=force)
            candidate = replace(candidate, score=score_run(candidate.result.run_dir, predictor))
            if on_step is not None:
                on_step("render")
        final.append(candidate)
    rendered = [c for c in final if c.score is not None]
    winner = max(rendered, key=lambda c: (c.score or {}).get("score", float("-inf")))
    outcome = BestOf(query, final, winner)
    from popcorn.runs.store import Run

    run = Run.load(winner.result.run_dir)
    with run.lock():
        run = Run.load(run.path)
        run.write_json("candidates", "candidates.json", outcome.to_dict())
        run.save()  # the manifest lists candidates.json
    return outcome
