"""Prompt enhancement (PE) as the generator uses it: settings, references for a query, and the
check that the answer is original."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popcorn.errors import ScriptParseError, UsageError
from popcorn.llm.parser import similar
from popcorn.retrieval.corpus import DEFAULT_CORPUS_DIR
from popcorn.retrieval.search import References, Retriever
from popcorn.script import Script


@dataclass(frozen=True)
class PESettings:
    """The study's PE knobs: N references (0-150 studied) from the K nearest categories (1-4)."""

    refs: int = 10
    categories: int = 1
    corpus: Path = DEFAULT_CORPUS_DIR
    embedder: str | None = None
    """Check the index was built with this embedder; None accepts the index's own."""

    def __post_init__(self) -> None:
        if not 0 <= self.refs <= 500:
            raise UsageError(f"--refs must be between 0 and 500, not {self.refs}")
        if not 1 <= self.categories <= 50:
            raise UsageError(f"--categories must be between 1 and 50, not {self.categories}")


class Enhancer:
    """Loads the index once and answers references for queries (thread-safe)."""

    def __init__(self, settings: PESettings) -> None:
        from popcorn.retrieval.index import load_index

        self.settings = settings
        self._lock = threading.Lock()
        self.retriever: Retriever | None = None
        if settings.refs > 0:
            self.retriever = Retriever(load_index(settings.corpus, settings.embedder))

    def identity(self) -> dict[str, Any]:
        """What changes PE's output: part of every PE run's job key."""
        base: dict[str, Any] = {"refs": self.settings.refs, "categories": self.settings.categories}
        if self.retriever is not None:
            base.update(self.retriever.index.identity())
        return base

    def references(self, query: str) -> References:
        if self.retriever is None:
            return References(query, 0, [], [])
        with self._lock:
            return self.retriever.search(query, self.settings.refs, self.settings.categories)


def check_original(script: Script, references: References) -> None:
    """Reject a script whose title is one of the references' (PE asks for no copying)."""
    for ref in references.items:
        if similar(script.title, ref.title):
            raise ScriptParseError(
                "copied_reference",
                f"the title copies reference {ref.rank} ({ref.title!r}) instead of a new idea",
            )
