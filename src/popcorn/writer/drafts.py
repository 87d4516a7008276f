"""Best of k drafts: several samples of one prompt, the best kept by the gate's measures.

A small local model writes a usable script often enough and a good one rarely; sampling up to
k drafts of the same request and keeping the best by the gate (passing first, then the fewest
craft findings: a restated title, a video prompt that is no shot, a title or video prompt off
the query; then relevance; see :meth:`~popcorn.writer.gate.Verdict.rank`) turns "often
enough" into "most of the time". Drafts are made one after another and drafting stops at the
first :func:`clean` one, so an easy query costs one draft and a hard one k. A draft costs its
own tokens only: llama.cpp evaluates the prompt once and keeps it in its KV cache for the other
drafts (:meth:`~popcorn.llm.llamacpp.LlamaCppLLM.complete_drafts`).

The first draft of an attempt has the attempt's seed, so one draft is exactly the writer
without drafts; draft ``j`` adds ``j`` times :data:`SEED_STRIDE`. ``seconds`` caps the time
the drafts of one attempt may take (the first is always made): a cap makes the kept answer
depend on the machine's speed, so it is off unless set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from popcorn.llm.base import Completion, Decoding, Message
from popcorn.writer.gate import Verdict
from popcorn.writer.judge import GateTally
from popcorn.writer.parser import ParsedAnswer

T = TypeVar("T")

SEED_STRIDE = 7919
"""Seed distance between the drafts of one attempt (a prime: no draft takes the seed of a
later attempt's first draft)."""


@dataclass
class Draft:
    """One parsed draft and the gate's verdict on it; ``entry`` is its transcript record."""

    parsed: ParsedAnswer
    verdict: Verdict
    entry: dict[str, Any]
    completion: Completion
    decoding: Decoding


class Once(Generic[T]):
    """``judge`` of each completion, computed once (while drafting, to know when to stop, and
    again when the drafts are kept), by identity: the completion is held, so that its id is not
    reused by another."""

    def __init__(self, judge: Callable[[Completion], T]) -> None:
        self.judge = judge
        self.seen: dict[int, tuple[Completion, T]] = {}

    def __call__(self, completion: Completion) -> T:
        held = self.seen.get(id(completion))
        if held is None or held[0] is not completion:
            held = (completion, self.judge(completion))
            self.seen[id(completion)] = held
        return held[1]


def decodings(decoding: Decoding, count: int) -> list[Decoding]:
    """The decoding of each of ``count`` drafts: ``decoding``'s seed for the first."""
    return [decoding.with_seed(decoding.seed + j * SEED_STRIDE) for j in range(count)]


def deadline(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` by which drafting stops (None: no cap)."""
    return None if seconds is None else time.monotonic() + seconds


def sample_each(
    call: Callable[[list[Message], Decoding], tuple[Completion, float]],
    messages: list[Message],
    drafts: list[Decoding],
    until: float | None,
    enough: Callable[[Completion], bool] | None = None,
) -> list[tuple[Completion, float, Decoding]]:
    """(completion, seconds, decoding) of each draft, one ``call`` each, stopping at ``until``
    (after the first) or at the first draft that is ``enough``: for backends that do not
    sample drafts themselves."""
    made = []
    for j, decoding in enumerate(drafts):
        if j and until is not None and time.monotonic() >= until:
            break
        completion, took = call(messages, decoding)
        made.append((completion, took, decoding))
        if enough is not None and enough(completion):
            break
    return made


def clean(verdict: Verdict) -> bool:
    """A draft that needs no other: it passes the gate with no craft finding. Drafting stops
    at the first one."""
    return verdict.ok and not verdict.craft


def best(drafts: list[Draft]) -> Draft | None:
    """The draft the gate ranks highest (the earliest among equals); None for no draft."""
    if not drafts:
        return None
    return max(drafts, key=lambda d: d.verdict.rank())


@dataclass
class Spend:
    """What one run's model calls cost, for its manifest."""

    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    llm_seconds: float = 0.0

    def add(self, completion: Completion, seconds: float) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens or 0
        self.completion_tokens += completion.completion_tokens or 0
        self.llm_seconds += seconds

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls": self.calls,
        }

    def timings(self, tally: GateTally) -> dict[str, float]:
        return {
            "llm_seconds": round(self.llm_seconds, 4),
            **tally.timings(),
            "total_seconds": round(time.perf_counter() - self.started, 4),
        }


def entry(
    attempt: int, seed: int, messages: list[Message], completion: Completion, seconds: float
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "seed": seed,
        "messages": messages,
        "raw": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        },
        "seconds": round(seconds, 4),
        "notes": completion.notes,
    }
