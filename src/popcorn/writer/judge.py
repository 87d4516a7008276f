"""The quality gate as a writer applies it: one embedder per writer, each verdict timed, and
the record the manifest keeps (its ``gate`` stage). The rules themselves are
:mod:`popcorn.writer.gate`."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from popcorn.errors import PopcornError
from popcorn.llm.base import Message
from popcorn.script import Script
from popcorn.writer.gate import (
    RELEVANCE_OFF,
    GateSettings,
    Verdict,
    gate_embedder,
    judge,
    prompt_text,
)
from popcorn.writer.prompts import PromptTemplates

if TYPE_CHECKING:
    from popcorn.retrieval.enhance import Enhancer


@dataclass
class GateTally:
    """What the gate did for one run: each parsed answer's verdict, and its time."""

    verdicts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0

    def timings(self) -> dict[str, float]:
        return {
            "gate_seconds": round(self.seconds, 4),
            "gate_load_seconds": round(self.load_seconds, 4),
        }


class Judge:
    """Judges a writer's parsed answers against ``settings``, with the worked example of
    ``templates`` and, where PE already loaded it, the enhancer's embedder."""

    def __init__(
        self, settings: GateSettings, templates: PromptTemplates, enhancer: Enhancer | None
    ) -> None:
        self.settings = settings
        self.templates = templates
        self.enhancer = enhancer
        self._embedder: Any = None
        self._embedder_checked = False
        self._embedder_loaded = False
        self._loader: threading.Thread | None = None
        self._lock = threading.Lock()

    def embedder(self) -> Any:
        """The gate's sentence embedder, once per writer and shared: PE's own when PE already
        embeds with the packaged model, else :func:`~popcorn.writer.gate.gate_embedder`
        (loaded once per process); None without the pe extra."""
        with self._lock:
            if not self._embedder_checked:
                retriever = self.enhancer.retriever if self.enhancer is not None else None
                mine = getattr(retriever, "embedder", None)
                from popcorn.retrieval.embedders import DEFAULT_EMBEDDER

                if mine is not None and getattr(mine, "name", None) == DEFAULT_EMBEDDER:
                    self._embedder = mine
                else:
                    self._embedder = gate_embedder()
                if self._embedder is None:
                    _say_relevance_is_off()
                self._embedder_checked = True
            return self._embedder

    def prefetch(self) -> None:
        """Start loading the embedder in the background, so that the model's answer and the
        embedder's load overlap (the load is most of a first command's gate time); a later
        verdict waits for it. Once per writer; nothing to do once loaded."""
        with self._lock:
            if self._embedder_checked or self._loader is not None:
                return
            self._loader = threading.Thread(target=self._load, name="gate-embedder", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        embedder = self.embedder()
        if embedder is not None:
            # The packaged Embedder loads on first use; a failure is noted by the verdict.
            with contextlib.suppress(PopcornError):
                getattr(embedder, "model", None)

    def verdict(self, script: Script, query: str, messages: list[Message]) -> Verdict:
        """The verdict on ``script``, written for ``query`` from ``messages``."""
        example = self.templates.example_script
        text = prompt_text(messages, query)
        # An example counts against an answer only where the prompt showed it.
        shown = example is not None and example["title"] in text
        return judge(
            script,
            query,
            text,
            self.settings,
            example if shown else None,
            self.templates.example_query or "",
            self.embedder(),
            examples=[(q, e) for q, e in self.templates.small_examples if e["title"] in text],
        )

    def timed(
        self, script: Script, query: str, messages: list[Message], tally: GateTally
    ) -> Verdict:
        """:meth:`verdict`, timed into ``tally``; loading the embedder (once per process) is
        timed apart, as it is no cost of this script."""
        if not self._embedder_loaded:
            t = time.perf_counter()
            loader = self._loader
            if loader is not None:
                loader.join()
            self._load()
            self._embedder_loaded = True
            tally.load_seconds += time.perf_counter() - t
        t = time.perf_counter()
        verdict = self.verdict(script, query, messages)
        tally.seconds += time.perf_counter() - t
        tally.verdicts.append(verdict.reason or "ok")
        return verdict

    def record(self, verdict: Verdict, tally: GateTally) -> dict[str, Any]:
        """The manifest's ``gate`` stage: the last verdict, each parsed answer's, what acted."""
        return {
            "enforced": self.settings.enabled,
            "thresholds": self.settings.thresholds(),
            **verdict.to_dict(),
            "attempts": list(tally.verdicts),
            "seconds": round(tally.seconds, 4),
        }


@functools.cache
def _say_relevance_is_off() -> None:
    """Once per process: without the pe extra the gate cannot tell a script about something
    else from one about the query, and a user should know it is not looking."""
    logging.getLogger("popcorn.writer.gate").warning("quality gate: %s", RELEVANCE_OFF)
