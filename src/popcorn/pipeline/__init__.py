"""The flow: query -> script -> media -> score, as one :class:`Pipeline` per set of settings.

- :mod:`popcorn.pipeline.flow`: the :class:`Pipeline` and the plain results of its steps;
- :mod:`popcorn.pipeline.bestof`: best-of-N, the predictor as an optimiser;
- :mod:`popcorn.residency`: which models are loaded, and when they are let go.
"""

from popcorn.pipeline.flow import (
    ManyReport,
    MediaResult,
    Pipeline,
    RunResult,
    Score,
    ScriptResult,
    generate,
    torch_device,
)

__all__ = [
    "ManyReport",
    "MediaResult",
    "Pipeline",
    "RunResult",
    "Score",
    "ScriptResult",
    "generate",
    "torch_device",
]
