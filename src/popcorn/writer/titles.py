"""What the writer does to a kept answer's title: ask for a shorter one when it is over the
limit or was cut off at it, and rewrite one that restates the query or misses it (the title
step). The model calls go through the writer's own ``call`` and ``sample``, so that they are
retried, counted and recorded like its drafts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from popcorn.errors import ScriptParseError
from popcorn.llm.base import Completion, Decoding, Message
from popcorn.script import TITLE_MAX_CHARS, Script, shorten_title
from popcorn.writer.drafts import Draft, Once
from popcorn.writer.gate import Verdict
from popcorn.writer.parser import ParsedAnswer, parse_script, title_of
from popcorn.writer.prompts import TITLE_JSON_SCHEMA, own_title_request, shorter_title_request

Schema = dict[str, Any] | None
Call = Callable[..., tuple[Completion, float]]
"""One model call of a run: (messages, decoding[, schema]) -> (completion, seconds)."""
Sample = Callable[
    [list[Message], Decoding, Schema, Callable[[Completion], bool]],
    list[tuple[Completion, float, Decoding]],
]
"""The writer's drafts of ``messages`` under ``schema``, until one is ``enough``."""

FINDINGS = frozenset({"restated_title", "title_off_query"})
"""What the title step rewrites a kept draft's title for."""
TOKENS = 48
"""Most new tokens of a title-only answer (``{"title": ...}`` is about 20)."""


def cut_off(title: str, schema: Schema) -> bool:
    """Whether the schema's length bound closed ``title``: a grammar ends the string at its
    ``maxLength``, mid-word as often as not ("Snowboarding down a powder slope, snowboarders'
    sk"). A title that is exactly that long by choice is asked again as well, at one call."""
    return schema is not None and len(title) == TITLE_MAX_CHARS


def shorter(
    chosen: Draft,
    messages: list[Message],
    call: Call,
    schema: Schema,
    example: Mapping[str, str] | None,
) -> ParsedAnswer:
    """Ask once for a shorter title; failing that, cut it at a word boundary (before the
    last, cut-off word of a title the schema closed) and flag it."""
    parsed, entry = chosen.parsed, chosen.entry
    title = parsed.script.title
    cut = cut_off(title, schema)
    follow_up = [
        *messages,
        {"role": "assistant", "content": chosen.completion.text},
        {"role": "user", "content": shorter_title_request(title, cut=cut)},
    ]
    retry, seconds = call(follow_up, chosen.decoding)
    entry["title_retry"] = {
        "messages": follow_up[-2:],
        "raw": retry.text,
        "seconds": round(seconds, 4),
        "usage": {
            "prompt_tokens": retry.prompt_tokens,
            "completion_tokens": retry.completion_tokens,
        },
    }
    try:
        again = parse_script(retry.text, example)
    except ScriptParseError:
        again = None
    if again is not None:
        title_again = again.script.title
        if len(title_again) <= TITLE_MAX_CHARS and not cut_off(title_again, schema):
            return ParsedAnswer(replace(parsed.script, title=title_again), parsed.reasoning)
    script = replace(
        parsed.script,
        title=shorten_title(title, TITLE_MAX_CHARS - 1 if cut else TITLE_MAX_CHARS),
        flags=(*parsed.script.flags, "title_shortened"),
    )
    return ParsedAnswer(script, parsed.reasoning)


def own(
    chosen: Draft,
    messages: list[Message],
    query: str,
    sample: Sample,
    judge: Callable[[Script], Verdict],
) -> None:
    """Rewrite ``chosen``'s title (restated, or off the query) by a title-only request after
    the same instructions and worked examples as ``messages`` (a backend that keeps them
    cached evaluates the request alone): up to the writer's drafts of titles, kept at the first
    with which the script passes the gate with neither of :data:`FINDINGS`. Asked again after
    its own answer, a small model gives that answer back; a fresh request does not."""
    request = [*messages[:-1], {"role": "user", "content": own_title_request(query)}]

    @Once
    def judged(completion: Completion) -> tuple[ParsedAnswer, Verdict] | None:
        title = title_of(completion.text)
        if title is None or cut_off(title, TITLE_JSON_SCHEMA):
            return None
        script = replace(chosen.parsed.script, title=title)
        return ParsedAnswer(script, chosen.parsed.reasoning), judge(script)

    def enough(completion: Completion) -> bool:
        outcome = judged(completion)
        return outcome is not None and outcome[1].ok and not FINDINGS & set(outcome[1].craft)

    made = sample(request, replace(chosen.decoding, max_tokens=TOKENS), TITLE_JSON_SCHEMA, enough)
    record: dict[str, Any] = {
        "messages": request[-1:],
        "raw": [completion.text for completion, _, _ in made],
        "seconds": round(sum(seconds for _, seconds, _ in made), 4),
        "kept": None,
    }
    chosen.entry["title_step"] = record
    kept = next((c for c, _, _ in made if enough(c)), None)
    outcome = None if kept is None else judged(kept)
    if outcome is not None:
        chosen.parsed, chosen.verdict = outcome
        chosen.entry["gate"] = chosen.verdict.to_dict()
        record["kept"] = chosen.parsed.script.title
