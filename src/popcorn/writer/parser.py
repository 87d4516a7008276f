"""Recover a :class:`~popcorn.script.Script` from whatever an LLM actually wrote.

Real answers wrap the JSON in reasoning blocks, code fences and prose, give several drafts (the
last complete one is the answer), use single quotes, trailing commas, raw newlines, unescaped
inner quotes and creative key spellings, nest the object under a key, or skip JSON and write
markdown sections. :func:`parse_script` accepts all of that and rejects, with a reason tag, what
is not an answer: refusals, truncated output, missing or empty fields, placeholders, and the
prompt's own example echoed back.

The module only needs the standard library (and :mod:`popcorn.writer.lenient_json`) so the
parser can be fuzzed cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from popcorn.errors import ScriptParseError
from popcorn.script import Script, similar
from popcorn.writer.lenient_json import json_objects

FIELDS = ("title", "cover_prompt", "video_prompt")

# Normalised key (lowercase, alphanumerics only) -> field.
_KEY_ALIASES: dict[str, str] = {
    **dict.fromkeys(["title", "videotitle", "headline"], "title"),
    **dict.fromkeys(
        [
            "coverprompt",
            "cover",
            "coverimage",
            "coverimageprompt",
            "coverdescription",
            "thumbnail",
            "thumbnailprompt",
            "imageprompt",
        ],
        "cover_prompt",
    ),
    **dict.fromkeys(
        ["videoprompt", "video", "clipprompt", "clip", "videodescription", "videoclipprompt"],
        "video_prompt",
    ),
}

_REASONING_TAGS = ("think", "thinking", "reasoning")
_REFUSAL = re.compile(
    r"\b(i\s*(?:'|’)?m\s+sorry|i\s+am\s+sorry|i\s+can(?:'|’)?t\s+(?:help|assist|create|do)|"
    r"i\s+cannot\s+(?:help|assist|create|do|fulfil|comply)|i\s+won(?:'|’)?t\s+be\s+able|"
    r"as\s+an\s+ai\b|i\s+must\s+decline|unable\s+to\s+(?:help|assist|comply))",
    re.IGNORECASE,
)
# Also the PE prompt's reference labels: a small model sometimes answers a field with one.
_PLACEHOLDER = re.compile(
    r"^(?:<[^<>]*>|\[[^\[\]]*\]|\.\.\.|…|n/?a|none|null|tbd|todo|(?:un)?popular)$", re.I
)


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed script plus the reasoning text that came with it (may be empty)."""

    script: Script
    reasoning: str


def parse_script(text: str, example: Mapping[str, str] | None = None) -> ParsedAnswer:
    """Extract the final script from raw model output.

    ``example`` is the example script shown in the prompt: an answer that repeats it is rejected.
    Raises :class:`ScriptParseError` whose ``reason`` is one of ``empty``, ``truncated``,
    ``refusal``, ``no_script``, ``bad_json``, ``missing_field``, ``empty_field``, ``placeholder``,
    ``echoed_example``.
    """
    if not text or not text.strip():
        raise ScriptParseError("empty", "the model returned an empty answer")
    answer, reasoning = _split_reasoning(text)

    objects, truncated, saw_brace = json_objects(answer)
    failures: list[ScriptParseError] = []
    # The last complete candidate is the answer; earlier ones are drafts.
    for obj in reversed(objects):
        fields = _find_fields(obj)
        if fields is None:
            continue
        try:
            script = _validated(fields, example)
        except ScriptParseError as err:
            failures.append(err)
            continue
        stated = _stated_reasoning(obj)
        return ParsedAnswer(script, "\n\n".join(r for r in (reasoning, stated) if r))
    if failures:
        raise failures[0]

    sections = _markdown_sections(answer)
    if sections:
        return ParsedAnswer(_validated(sections, example), reasoning)

    if truncated:
        raise ScriptParseError(
            "truncated",
            "the answer stops in the middle of its JSON object (raise --max-tokens?)",
        )
    if _REFUSAL.search(answer):
        raise ScriptParseError("refusal", "the model refused: " + _snippet(answer))
    if saw_brace:
        raise ScriptParseError(
            "bad_json", "the answer holds JSON-like text but no object with a title and prompts"
        )
    raise ScriptParseError(
        "no_script", "the answer has no JSON object or labelled sections: " + _snippet(answer)
    )


def title_of(text: str) -> str | None:
    """The title of a title-only answer (``{"title": ...}``, read as leniently as a script),
    or None when it holds no usable one."""
    objects, _, _ = json_objects(text)
    for obj in reversed(objects):
        value = (_find_fields(obj) or {}).get("title")
        if value is None:
            continue
        try:
            title = " ".join(_as_text("title", value).split())
        except ScriptParseError:
            continue
        if len(title) >= 3 and not _PLACEHOLDER.match(title):
            return title
    return None


# --- reasoning blocks -----------------------------------------------------------------------


def _split_reasoning(text: str) -> tuple[str, str]:
    """Remove reasoning blocks and return (answer, reasoning)."""
    reasoning: list[str] = []
    for tag in _REASONING_TAGS:
        block = re.compile(rf"<{tag}>(.*?)</{tag}>", re.S | re.I)
        reasoning.extend(m.group(1).strip() for m in block.finditer(text))
        text = block.sub(" ", text)
        close = re.search(rf"</{tag}>", text, re.I)
        if close:
            # Some servers strip the opening tag (DeepSeek-R1 templates): all before the last
            # closing tag is reasoning.
            last = [m for m in re.finditer(rf"</{tag}>", text, re.I)][-1]
            reasoning.append(text[: last.start()].strip())
            text = text[last.end() :]
        opened = re.search(rf"<{tag}>", text, re.I)
        if opened:
            before = text[: opened.start()]
            if json_objects(before)[0] or _markdown_sections(before):
                text = before
            else:
                raise ScriptParseError(
                    "truncated",
                    f"the answer ends inside an unclosed <{tag}> block (raise --max-tokens?)",
                )
    return text, "\n\n".join(r for r in reasoning if r)


# --- fields ---------------------------------------------------------------------------------


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _fields_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in obj.items():
        field = _KEY_ALIASES.get(_normalise_key(str(key)))
        if field and field not in found:
            found[field] = value
    return found


def _find_fields(obj: Any) -> dict[str, Any] | None:
    """The script fields of ``obj`` or of the dict nested in it that has the most of them."""
    best: dict[str, Any] | None = None
    for candidate in _dicts(obj, depth=3):
        fields = _fields_of(candidate)
        if fields and (best is None or len(fields) > len(best)):
            best = fields
    return best


_REASONING_KEYS = {"reasoning", "analysis", "thoughts", "thinking", "chainofthought", "steps"}


def _stated_reasoning(obj: Any) -> str:
    """The reasoning an answer gives inside its JSON (the PE schema asks for a field)."""
    for candidate in _dicts(obj, depth=3):
        for key, value in candidate.items():
            if _normalise_key(str(key)) in _REASONING_KEYS:
                if isinstance(value, list):
                    value = "\n".join(str(v) for v in value)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return ""


def _dicts(obj: Any, depth: int) -> Iterator[Mapping[str, Any]]:
    if isinstance(obj, Mapping):
        yield obj
        children: Any = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return
    if depth > 0:
        for child in children:
            yield from _dicts(child, depth - 1)


def _as_text(field: str, value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if not isinstance(value, str):
        raise ScriptParseError("missing_field", f"'{field}' is not text: {value!r:.60}")
    text = _without_debris(value.strip()).strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


_TAIL = re.compile(r"[\s\"',:\[\]{}]+$")


def _without_debris(text: str) -> str:
    """``text`` less trailing JSON debris a repaired answer can leave in a field
    (``... (2014)", [] {``): a closing run of quotes, commas, colons, brackets and braces
    that holds a bracket, a brace or a quote then a comma. A field that ends in a quote alone
    keeps it."""
    found = _TAIL.search(text)
    if found is None:
        return text
    tail = found.group(0)
    if any(c in tail for c in "[]{}") or re.search(r"[\"'],", tail):
        return text[: found.start()]
    return text


def _validated(fields: Mapping[str, Any], example: Mapping[str, str] | None) -> Script:
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise ScriptParseError("missing_field", "the answer has no " + ", ".join(missing))
    values = {f: _as_text(f, fields[f]) for f in FIELDS}
    empty = [f for f, v in values.items() if not v]
    if empty:
        raise ScriptParseError("empty_field", "the answer leaves empty: " + ", ".join(empty))
    placeholders = [f for f, v in values.items() if _PLACEHOLDER.match(v)]
    if placeholders:
        raise ScriptParseError(
            "placeholder", "the answer keeps placeholders in: " + ", ".join(placeholders)
        )
    if example is not None and _is_echo(values, example):
        raise ScriptParseError(
            "echoed_example", "the model repeated the prompt's example instead of answering"
        )
    values["title"] = " ".join(values["title"].split())
    return Script(values["title"], values["cover_prompt"], values["video_prompt"])


def repeats_example(script: Script, example: Mapping[str, str]) -> bool:
    """Whether ``script`` repeats ``example`` (both prompts, or either one, copied)."""
    values = {"title": script.title, "cover_prompt": script.cover_prompt,
              "video_prompt": script.video_prompt}  # fmt: skip
    return _is_echo(values, example)


def _is_echo(values: Mapping[str, str], example: Mapping[str, str]) -> bool:
    same = {f for f in FIELDS if similar(values[f], example.get(f, ""))}
    # Copying either long prompt is copying the example, whatever the title says.
    return same == set(FIELDS) or bool(same & {"cover_prompt", "video_prompt"})


# --- markdown sections ----------------------------------------------------------------------

_LABEL = re.compile(
    # Line start, then any of: a quote, a heading, a bullet, a number ("1.", "2)", "Step 3:").
    r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:[-*+][ \t]+)?(?:(?:step[ \t]*)?\d+[.):][ \t]*)?"
    r"(?:\*\*|__)?[ \t]*"
    r"(title|video[ _-]?title|cover(?:[ _-]?image)?(?:[ _-]?prompt)?|"
    r"video(?:[ _-]?clip)?[ _-]?prompt|clip[ _-]?prompt)"
    # A qualifier inside or after the bold: "**Title (max 50 characters):**".
    r"(?:[ \t]*\([^()\n]{0,80}\))?[ \t]*(?:\*\*|__)?(?:[ \t]*\([^()\n]{0,80}\))?"
    r"[ \t]*(:|：|[ \t][—–-][ \t]|[—–]|\n|$)[ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)


def _markdown_sections(text: str) -> dict[str, str]:
    """Fields from ``Title: ...`` / ``## Cover prompt`` / ``**Video Prompt:**`` sections."""
    matches = list(_LABEL.finditer(text))
    sections: dict[str, str] = {}
    for k, m in enumerate(matches):
        field = _KEY_ALIASES.get(_normalise_key(m.group(1)))
        if field is None or field in sections:
            continue
        start = m.end() if m.group(2) != "\n" else m.end(2)
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = text[start:end].strip()
        # A trailing horizontal rule or closing remark belongs to no section.
        body = re.split(r"\n\s*(?:---+|\*\*\*+)\s*(?:\n|$)", body)[0].strip()
        sections[field] = " ".join(body.split()) if field == "title" else body
    return sections if len(sections) >= 2 else {}


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")
