"""The flow: query -> script -> media -> score, as one :class:`Pipeline` per set of settings.

- :mod:`popcorn.pipeline.flow`: the :class:`Pipeline`, whose steps take batches;
- :mod:`popcorn.pipeline.results`: the plain results of its steps;
- :mod:`popcorn.pipeline.bestof`: best-of-N, the predictor as an optimiser;
- :mod:`popcorn.residency`: which models are loaded, and when they are let go.
"""

from popcorn.pipeline.bestof import BestOf, Candidate
from popcorn.pipeline.flow import Pipeline, generate, torch_device
from popcorn.pipeline.results import ManyReport, MediaResult, RunResult, Score, ScriptResult

__all__ = [
    "BestOf",
    "Candidate",
    "ManyReport",
    "MediaResult",
    "Pipeline",
    "RunResult",
    "Score",
    "ScriptResult",
    "generate",
    "torch_device",
]
