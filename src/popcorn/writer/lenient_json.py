"""A forgiving JSON reader for what LLMs write instead of JSON.

:func:`json_objects` finds every complete top-level ``{...}`` object in free text (prose, code
fences, several drafts) and reads each one leniently: single quotes, trailing commas, raw
newlines, unquoted keys, Python literals, unescaped inner quotes. A quote ends a string only
where JSON could go on after a string, so quotes and apostrophes inside text survive.

Only the standard library, so that it can be fuzzed cheaply.
"""

from __future__ import annotations

import re
from typing import Any


def json_objects(text: str) -> tuple[list[Any], bool, bool]:
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
