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

from popcorn._version import __version__ as __version__

_EXPORTS = {
    "Pipeline": "popcorn.pipeline",
    "RunResult": "popcorn.pipeline",
    "MediaResult": "popcorn.pipeline",
    "Score": "popcorn.pipeline",
    "Settings": "popcorn.config",
    "generate": "popcorn.pipeline",
    "write_script": "popcorn.writer.writer",
    "Generator": "popcorn.writer.writer",
    "GenerateResult": "popcorn.writer.result",
    "QueryItem": "popcorn.writer.queries",
    "BatchReport": "popcorn.writer.batch",
    "read_queries": "popcorn.writer.queries",
    "Script": "popcorn.script",
    "Decoding": "popcorn.llm.base",
    "Completion": "popcorn.llm.base",
    "LLM": "popcorn.llm.base",
    "LLMOptions": "popcorn.llm.registry",
    "create_llm": "popcorn.llm.registry",
    "parse_script": "popcorn.writer.parser",
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
    from popcorn.llm.base import LLM, Completion, Decoding
    from popcorn.llm.registry import LLMOptions, create_llm
    from popcorn.pipeline import MediaResult, Pipeline, RunResult, Score, generate
    from popcorn.runs.store import Run, RunManifest, RunStore
    from popcorn.script import Script
    from popcorn.writer.batch import BatchReport
    from popcorn.writer.parser import parse_script
    from popcorn.writer.queries import QueryItem, read_queries
    from popcorn.writer.result import GenerateResult
    from popcorn.writer.writer import Generator, write_script


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'popcorn' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
