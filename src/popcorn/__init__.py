"""Popcorn: from a one-line idea to a micro-video script, and a research harness around it.

    >>> import popcorn
    >>> done = popcorn.generate("A cat learning to skateboard")  # embedded SmolLM2, offline
    >>> done.script.script.title, done.media.clip, done.run_dir

Names are imported on first use, so ``import popcorn`` stays instant and never pulls in torch,
transformers or llama.cpp.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "popcorn.pipeline",
    "RunResult": "popcorn.pipeline",
    "MediaResult": "popcorn.pipeline",
    "Score": "popcorn.pipeline",
    "Settings": "popcorn.config",
    "generate": "popcorn.pipeline",
    "write_script": "popcorn.generation",
    "Generator": "popcorn.generation",
    "GenerateResult": "popcorn.generation",
    "QueryItem": "popcorn.generation",
    "BatchReport": "popcorn.generation",
    "read_queries": "popcorn.queries",
    "Script": "popcorn.script",
    "Decoding": "popcorn.llm.base",
    "Completion": "popcorn.llm.base",
    "LLM": "popcorn.llm.base",
    "LLMOptions": "popcorn.llm.registry",
    "create_llm": "popcorn.llm.registry",
    "parse_script": "popcorn.llm.parser",
    "RunStore": "popcorn.runs.store",
    "Run": "popcorn.runs.store",
    "RunManifest": "popcorn.runs.store",
    "load_settings": "popcorn.config",
    "PopcornError": "popcorn.errors",
}

__all__ = [
    "LLM",
    "BatchReport",
    "Completion",
    "Decoding",
    "GenerateResult",
    "Generator",
    "LLMOptions",
    "MediaResult",
    "Pipeline",
    "PopcornError",
    "QueryItem",
    "Run",
    "RunManifest",
    "RunResult",
    "RunStore",
    "Score",
    "Script",
    "Settings",
    "create_llm",
    "generate",
    "load_settings",
    "parse_script",
    "read_queries",
    "write_script",
]

if TYPE_CHECKING:
    from popcorn.config import Settings, load_settings
    from popcorn.errors import PopcornError
    from popcorn.generation import BatchReport, GenerateResult, Generator, QueryItem, write_script
    from popcorn.llm.base import LLM, Completion, Decoding
    from popcorn.llm.parser import parse_script
    from popcorn.llm.registry import LLMOptions, create_llm
    from popcorn.pipeline import MediaResult, Pipeline, RunResult, Score, generate
    from popcorn.queries import read_queries
    from popcorn.runs.store import Run, RunManifest, RunStore
    from popcorn.script import Script


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'popcorn' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
