"""The script: what the LLM writes for one query, the input of every later stage."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

TITLE_MAX_CHARS = 50
"""The study's limit for a micro-video title."""


@dataclass(frozen=True)
class Script:
    """A title, a prompt for the cover image and a prompt for a 3-second clip.

    ``flags`` records anything the tool changed or noticed, e.g. ``"title_shortened"``.
    """

    title: str
    cover_prompt: str
    video_prompt: str
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "cover_prompt": self.cover_prompt,
            "video_prompt": self.video_prompt,
            "flags": list(self.flags),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Script:
        return cls(
            title=str(data["title"]),
            cover_prompt=str(data["cover_prompt"]),
            video_prompt=str(data["video_prompt"]),
            flags=tuple(data.get("flags", ())),
        )


def shorten_title(title: str, limit: int = TITLE_MAX_CHARS) -> str:
    """Cut ``title`` to at most ``limit`` characters at a word boundary."""
    title = " ".join(title.split())
    if len(title) <= limit:
        return title
    cut = title[: limit + 1]
    space = cut.rfind(" ")
    # A single over-long word has no boundary to cut at: cut it hard rather than return nothing.
    shortened = cut[:space] if space > 0 else title[:limit]
    return shortened.rstrip(" ,;:-–—")


def _squash(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!")


def similar(a: str, b: str) -> bool:
    """Near-identical: the same text give or take punctuation or a word or two."""
    a, b = _squash(a), _squash(b)
    if not a or not b:
        return False
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.quick_ratio() >= 0.9 and matcher.ratio() >= 0.9
