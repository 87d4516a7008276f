"""``mock:NAME``: an LLM backend that answers at once, deterministically, with no model.

For tests, demos and plugin authors who need the whole pipeline to run without weights or a
server (like inspect_ai's ``mockllm``). ``NAME`` is only a label: two names are two "models"
with their own job keys, the same answers. Its answer to a script prompt is valid script JSON:

- with PE references in the prompt (either profile's wording), a near copy of the most
  commented one: a reworded title, its caption as the video prompt, its cover description as
  the cover prompt. A model that copies is the worst case for a PE leak, and the easiest way to
  see in a test which reference reached the LLM;
- without references, a script about the query: a title of its own and a shot of the query.

Built in Python, :class:`MockLLM` can instead play a scripted list of answers in order (the last
one repeats), e.g. to feed the parser or the quality gate exactly the text a test needs.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from popcorn.llm.base import Completion, Decoding, LLMOptions, Message

__all__ = ["MockLLM", "ShownReference", "mock", "near_copy", "parse_references"]

# The paper templates list a reference as "- Title: ...", "Cover: ...", "Caption: ...",
# "Comments: N"; popcorn's as <video ... comments="N"> with "title:", "cover:", "caption:" lines.
_PAPER_REFERENCE = re.compile(
    r"^\s*-\s*Title:[ \t]*(?P<title>.*)\n"
    r"(?:\s*Cover:[ \t]*(?P<cover>.*)\n)?"
    r"(?:\s*Caption:[ \t]*(?P<caption>.*)\n)?"
    r"\s*Comments:[ \t]*(?P<comments>[\d,]+)",
    re.MULTILINE,
)
_POPCORN_REFERENCE = re.compile(
    r"<video\b[^>]*\bcomments=\"(?P<comments>[\d,]+)\"[^>]*>\s*\n"
    r"\s*title:[ \t]*(?P<title>.*)\n"
    r"(?:\s*cover:[ \t]*(?P<cover>.*)\n)?"
    r"(?:\s*caption:[ \t]*(?P<caption>.*)\n)?"
    r"\s*</video>",
)
# Where each packaged prompt states the query: popcorn's PE, the paper's, popcorn's basic.
_QUERY = (
    re.compile(r"<query>\s*(.+?)\s*</query>", re.DOTALL),
    re.compile(r"on this idea:\s*\n(.+)"),
    re.compile(r"micro-video about:[ \t]*(.+)"),
)


@dataclass(frozen=True)
class ShownReference:
    """A reference as the LLM saw it in its prompt."""

    title: str
    cover: str
    caption: str
    comments: int


def parse_references(prompt: str) -> list[ShownReference]:
    """The references in a PE prompt, in the order shown (none in a basic prompt)."""
    found = []
    for pattern in (_PAPER_REFERENCE, _POPCORN_REFERENCE):
        for m in pattern.finditer(prompt):
            found.append(
                ShownReference(
                    title=m["title"].strip(),
                    cover=(m["cover"] or "").strip(),
                    caption=(m["caption"] or "").strip(),
                    comments=int(m["comments"].replace(",", "")),
                )
            )
        if found:
            break
    return found


def near_copy(title: str) -> str:
    """A title that says what ``title`` says, reworded just enough to pass the originality
    check (:func:`popcorn.script.similar`), as a model that copies would."""
    from popcorn.script import TITLE_MAX_CHARS, similar

    words: list[str] = []
    for word in title.split():  # room for the rewording within the title limit
        if len(" ".join([*words, word])) > TITLE_MAX_CHARS - 6:
            break
        words.append(word)
    base = " ".join(words) or title[: TITLE_MAX_CHARS - 6]
    candidates = [" ".join(words[k:] + words[:k]) for k in range(1, len(words))]
    candidates += [f"{base} redux", f"redux {base}"]
    for candidate in candidates:
        if len(candidate) <= TITLE_MAX_CHARS and not similar(candidate, title):
            return candidate
    return f"{base} redux"


def _query(prompt: str) -> str:
    for pattern in _QUERY:
        m = pattern.search(prompt)
        if m:
            return " ".join(m.group(1).split())
    return " ".join(prompt.split()[:8])


def _script(prompt: str) -> dict[str, str]:
    references = parse_references(prompt)
    if references:
        best = max(references, key=lambda r: r.comments)
        return {
            "title": near_copy(best.title),
            "cover_prompt": best.cover or f"A bright still of {best.title}",
            "video_prompt": best.caption or best.title,
        }
    query = _query(prompt)
    # A title of its own (the query's longest word, then two new ones) and a video prompt
    # that is a shot, so that the popcorn profile's gate keeps the first answer.
    longest = max(query.split(), key=len, default="Idea").strip(".,!?;:'\"")
    return {
        "title": f"{longest.capitalize()}, Up Close"[:50],
        "cover_prompt": f"A bright poster of {query}",
        "video_prompt": f"Close-up of {query}, moving into the frame. Slow push-in, soft daylight.",
    }


class MockLLM:
    """``mock:NAME``: script JSON made from the prompt, or ``answers`` played in order."""

    concurrent = True

    def __init__(self, spec: str = "mock:mock", answers: Sequence[str] | None = None) -> None:
        self.spec = spec
        self.answers = tuple(answers or ())
        self.calls = 0
        # Concurrent callers share the answer counter: each answer is played exactly once.
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"provider": "mock", "model": self.spec, "version": 1}
        if self.answers:
            played = json.dumps(self.answers).encode("utf-8")
            identity["answers"] = hashlib.sha256(played).hexdigest()[:16]
        return identity

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        with self._lock:
            turn = self.calls
            self.calls += 1
        if self.answers:
            text = self.answers[min(turn, len(self.answers) - 1)]
        else:
            text = json.dumps(_script(messages[-1]["content"]))
        return Completion(text=text, prompt_tokens=0, completion_tokens=0, finish_reason="stop")


def mock(name: str, options: LLMOptions) -> MockLLM:
    """The registry's factory for ``mock:NAME``."""
    return MockLLM(f"mock:{name}")
