"""The prompts that turn a query into a script.

``PROMPT_VERSION`` is part of every job key: change the wording, bump the version, and runs made
with the old wording are no longer taken as done.
"""

from __future__ import annotations

import json
from typing import Any

from popcorn.script import TITLE_MAX_CHARS

PROMPT_VERSION = "basic-v2"

SYSTEM_PROMPT = (
    "You are a talented creator of micro-videos for TikTok, Reels and Shorts. You know what makes "
    "people stop scrolling, watch to the end and comment, and you always think from the "
    "audience's side. You answer with JSON only."
)

# Shown to the model as the shape of an answer. An answer that repeats it is rejected.
EXAMPLE_QUERY = "A lighthouse keeper's last night on duty"
EXAMPLE_SCRIPT: dict[str, str] = {
    "title": "The Lighthouse's Final Blink",
    "cover_prompt": (
        "An old lighthouse keeper in a wool coat holding a brass lantern at the top of a "
        "lighthouse during a violent storm, waves crashing below, warm amber light against a "
        "deep blue night, cinematic, highly detailed, dramatic rim lighting"
    ),
    "video_prompt": (
        "Close-up of a weathered hand turning the lighthouse lamp off for the last time; the "
        "beam sweeps across the stormy sea, then fades, leaving the keeper's face lit only by "
        "lightning. Slow push-in, moody teal and amber palette, rain streaks on the glass"
    ),
}

SCRIPT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": TITLE_MAX_CHARS},
        "cover_prompt": {"type": "string", "minLength": 20, "maxLength": 700},
        "video_prompt": {"type": "string", "minLength": 20, "maxLength": 900},
    },
    "required": ["title", "cover_prompt", "video_prompt"],
    "additionalProperties": False,
}
"""What a script looks like, for backends that can force their output into a schema."""


def _instructions(query: str) -> str:
    return (
        f"Create a micro-video for this idea:\n<query>\n{query}\n</query>\n\n"
        "Write three things:\n"
        f"- title: a catchy one-line title of at most {TITLE_MAX_CHARS} characters;\n"
        "- cover_prompt: one paragraph for a text-to-image model that paints the cover image;\n"
        "- video_prompt: one paragraph describing a 3-second clip for a text-to-video model "
        "(subject, action, camera, lighting, style).\n\n"
        "Reply with a single JSON object with exactly the keys title, cover_prompt and "
        "video_prompt."
    )


def basic_messages(query: str) -> list[dict[str, str]]:
    """The study's basic mode: the query alone, no references.

    The example is a separate, earlier exchange rather than text inside the request: small
    models copy an inline example verbatim far more often than they imitate a previous turn.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": _instructions(EXAMPLE_QUERY)},
        {"role": "assistant", "content": json.dumps(EXAMPLE_SCRIPT, ensure_ascii=False)},
        {"role": "user", "content": _instructions(query)},
    ]


def shorter_title_request(title: str) -> str:
    """The follow-up sent once when a title is over the limit."""
    return (
        f"The title {title!r} has {len(title)} characters; the limit is {TITLE_MAX_CHARS}. "
        "Reply with the same JSON object, with a shorter title."
    )
