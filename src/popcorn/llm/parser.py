"""Recover a :class:`~popcorn.script.Script` from whatever an LLM actually wrote.

Real answers wrap the JSON in reasoning blocks, code fences and prose, give several drafts (the
last complete one is the answer), use single quotes, trailing commas, raw newlines, unescaped
inner quotes and creative key spellings, nest the object under a key, or skip JSON and write
markdown sections. :func:`parse_script` accepts all of that and rejects, with a reason tag, what
is not an answer: refusals, truncated output, missing or empty fields, placeholders, and the
prompt's own example echoed back.

The module only needs the standard library so the parser can be fuzzed cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from popcorn.errors import ScriptParseError
from popcorn.script import Script, similar

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

    objects, truncated, saw_brace = _json_objects(answer)
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
            if _json_objects(before)[0] or _markdown_sections(before):
                text = before
            else:
                raise ScriptParseError(
                    "truncated",
                    f"the answer ends inside an unclosed <{tag}> block (raise --max-tokens?)",
                )
    return text, "\n\n".join(r for r in reasoning if r)


# --- JSON candidates ------------------------------------------------------------------------


def _json_objects(text: str) -> tuple[list[Any], bool, bool]:
    """All complete top-level ``{...}`` objects in order; whether one was cut off; any brace."""
    objects: list[Any] = []
    truncated = False
    i = text.find("{")
    saw_brace = i >= 0
    while i >= 0:
        end = _match_brace(text, i)
        if end is None:
            truncated = True
            i = text.find("{", i + 1)
            continue
        try:
            value, _ = _LenientJSON(text[i : end + 1]).parse()
        except _JSONError:
            i = text.find("{", i + 1)
            continue
        objects.append(value)
        i = text.find("{", end + 1)
    return objects, truncated, saw_brace


def _match_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` that closes the ``{`` at ``start``, skipping strings; None if none."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c in "\"'" and _starts_string(text, i):
            end = _string_end(text, i)
            if end is None:
                return None
            i = end + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i if c == "}" else None
        i += 1
    return None


def _starts_string(text: str, i: int) -> bool:
    """A quote opens a string only where JSON expects a value or a key."""
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j >= 0 and text[j] in "{[,:"


def _string_end(text: str, start: int) -> int | None:
    """Index of the quote closing the string opened at ``start``.

    An unescaped quote of the same kind ends the string only when what follows could follow a
    string in JSON; otherwise it is a quote or apostrophe inside the text (``"a "big" cat"``,
    ``'the cat's day'``).
    """
    quote = text[start]
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == quote:
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j >= n or text[j] in ",}]:":
                return i
        i += 1
    return None


class _JSONError(ValueError):
    pass


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_BAREWORDS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_BAREKEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\- ]*")


class _LenientJSON:
    """A forgiving JSON reader for one object: single quotes, trailing commas, raw newlines,
    unquoted keys, Python literals, unescaped inner quotes."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def parse(self) -> tuple[Any, int]:
        value = self._value()
        return value, self.i

    def _ws(self) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            if s[self.i] in " \t\r\n":
                self.i += 1
            elif s.startswith("//", self.i):
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end
            else:
                break

    def _peek(self) -> str:
        self._ws()
        if self.i >= len(self.s):
            raise _JSONError("unexpected end")
        return self.s[self.i]

    def _value(self) -> Any:
        c = self._peek()
        if c == "{":
            return self._object()
        if c == "[":
            return self._array()
        if c in "\"'":
            return self._string()
        m = _NUMBER.match(self.s, self.i)
        if m:
            self.i = m.end()
            text = m.group()
            return float(text) if any(ch in text for ch in ".eE") else int(text)
        for word, value in _BAREWORDS.items():
            if self.s.startswith(word, self.i):
                self.i += len(word)
                return value
        raise _JSONError(f"unexpected {c!r} at {self.i}")

    def _object(self) -> dict[str, Any]:
        self.i += 1
        out: dict[str, Any] = {}
        while True:
            c = self._peek()
            if c == "}":
                self.i += 1
                return out
            if c == ",":
                self.i += 1
                continue
            key = self._key()
            if self._peek() != ":":
                raise _JSONError(f"expected ':' at {self.i}")
            self.i += 1
            out[key] = self._value()
            c = self._peek()
            if c not in ",}":
                raise _JSONError(f"expected ',' or '}}' at {self.i}")

    def _array(self) -> list[Any]:
        self.i += 1
        out: list[Any] = []
        while True:
            c = self._peek()
            if c == "]":
                self.i += 1
                return out
            if c == ",":
                self.i += 1
                continue
            out.append(self._value())
            if self._peek() not in ",]":
                raise _JSONError(f"expected ',' or ']' at {self.i}")

    def _key(self) -> str:
        if self._peek() in "\"'":
            return self._string()
        m = _BAREKEY.match(self.s, self.i)
        if not m:
            raise _JSONError(f"expected a key at {self.i}")
        self.i = m.end()
        return m.group().strip()

    def _string(self) -> str:
        start = self.i
        end = _string_end(self.s, start)
        if end is None:
            raise _JSONError("unterminated string")
        self.i = end + 1
        return _unescape(self.s[start + 1 : end])


def _unescape(raw: str) -> str:
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\" and i + 1 < n:
            nxt = raw[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
                code = int(raw[i + 2 : i + 6], 16)
                low = raw[i + 6 : i + 12]
                # Characters beyond the BMP arrive as a UTF-16 surrogate pair: \ud83d\ude00.
                if 0xD800 <= code < 0xDC00 and re.fullmatch(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", low):
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
                    i += 6
                out.append(chr(code))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


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
    text = value.strip().strip("*_`").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
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
