"""Job keys and folder names.

A job's key is a hash of exactly the inputs that change its output (query, mode, model identity,
decoding, prompt version), never of concurrency, retries or output paths, so a rerun with the
same settings finds the same folder and skips it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from popcorn.script import Script

_SLUG_MAX = 40


def job_key(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def slugify(text: str, limit: int = _SLUG_MAX) -> str:
    """Lowercase ASCII words joined by dashes; never a path separator, dot or empty string."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug or (words[0][:limit] if words else "query")


def folder_name(query: str, key: str) -> str:
    return f"{slugify(query)}-{key[:10]}"


def script_sha256(script: Script) -> str:
    """The sha256 of a script's content: media record it to name the script they show."""
    return job_key(script.to_dict())
