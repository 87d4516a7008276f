"""Text from outside (a model, a corpus, a file, a request, a server's error body) made safe to
show or record.

- :func:`plain` drops terminal control sequences (ANSI CSI, OSC such as window titles and
  hyperlinks, other escapes) and control characters, so model output cannot clear the screen or
  retitle the window. Newlines and tabs stay.
- :func:`shown` is :func:`plain` wrapped as a Rich ``Text``: Rich renders it literally, so a
  title holding ``[/]`` or ``[red]`` is shown as written instead of being read as markup.
- :func:`redact` removes credentials: every secret registered with :func:`register_secret`
  (the providers register the API keys they read, and :func:`register_url_credentials` the
  password of a base URL with its HTTP Basic form), bearer tokens, ``Authorization`` header
  values, ``user:password@`` in URLs and key-shaped tokens (``sk-...``). Call it on any error
  text before it is written to a manifest, a ledger, a report or the terminal.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

# ESC [ ... final byte (CSI), ESC ] ... BEL or ST (OSC), ESC P/X/^/_ ... ST (DCS, SOS, PM, APC),
# where ST is ESC \ or its 8-bit form; the 8-bit C1 forms of CSI and OSC too.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x9c|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x9c|\x1b\\)?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c|\x1b\\)?"
    # Any other escape: intermediate bytes then one final byte (charset switches such as
    # ESC ( 0, DECALN's ESC # 8, a full reset's ESC c), so no stray letters are left behind.
    r"|\x1b[ -/]*[0-~]?"
)
# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides that can make shown
# text read differently from what it is.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text: Any) -> str:
    """``text`` as a string with escape sequences and control characters removed."""
    value = text if isinstance(text, str) else str(text)
    return _CONTROLS.sub("", _ESCAPES.sub("", value))


def one_line(text: Any) -> str:
    """:func:`plain` with every run of whitespace (newlines too) folded into one space."""
    return " ".join(plain(text).split())


def shown(text: Any, style: str = "") -> Any:
    """A Rich ``Text`` of :func:`plain` ``text``: printed literally, never parsed as markup."""
    from rich.text import Text

    return Text(plain(text), style=style)


# --- secrets ----------------------------------------------------------------------------------

_MIN_SECRET = 6
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# The header's value, one or two words ("Bearer xyz", "Basic xyz", or a bare token).
_AUTHORIZATION = (
    r"(?i)((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"([^\s\"',}]+(?: [^\s\"',}]+)?)"
)
# A credential after an auth scheme word. After "basic" or "token", a plain word ("basic
# settings", "token budget") is prose, not a credential.
_TOKEN = r"[A-Za-z0-9._~+/=-]"
_SCHEME_TOKEN = (
    rf"(?i)\b(bearer\s+|(?:basic|token)\s+(?!(?-i:[A-Za-z][a-z]*)(?!{_TOKEN})))({_TOKEN}{{6,}})"
)
_PATTERNS = (
    # Authorization / Proxy-Authorization header values, with or without a scheme word.
    (re.compile(_AUTHORIZATION), r"\1[redacted]"),
    (re.compile(_SCHEME_TOKEN), r"\1[redacted]"),
    # api_key=..., "api-key": "...", x-api-key: ...
    (re.compile(r"(?i)((?:x-)?api[_-]?key[\"']?\s*[:=]\s*[\"']?)([^\s\"',}&]+)"), r"\1[redacted]"),
    # user:password@ (or user@) in a URL.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@"), r"\1[redacted]@"),
    # Key-shaped tokens: OpenAI / DeepSeek / Anthropic style, GitHub, Hugging Face.
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}"), "[redacted]"),
    (re.compile(r"\b(?:ghp|gho|ghs|hf)_[A-Za-z0-9]{16,}"), "[redacted]"),
)


def register_secret(value: str | None) -> None:
    """Remember ``value`` (an API key, a URL password) so :func:`redact` removes it anywhere.

    Its base64 form is remembered too: that is how HTTP Basic sends ``user:password``, and a
    server may echo the header back. Values shorter than six characters are ignored: replacing
    them everywhere would mangle ordinary words, and the patterns still catch them in headers
    and URLs.
    """
    if value and len(value) >= _MIN_SECRET:
        encoded = base64.b64encode(value.encode()).decode()
        with _secrets_lock:
            _secrets.update((value, encoded))


def register_url_credentials(url: str | None) -> None:
    """Remember the password of ``url`` (``scheme://user:password@host``) in every form a server
    may echo: as written, percent-decoded, and as ``user:password`` (with its base64)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        raw_user, raw_password = parts.username, parts.password
    except ValueError:  # a malformed URL carries nothing we can pick out
        return
    if raw_password is None:
        return
    user, password = unquote(raw_user or ""), unquote(raw_password)
    for value in (raw_password, password, f"{raw_user or ''}:{raw_password}", f"{user}:{password}"):
        register_secret(value)


# What the built-in backends read from the environment: a process that only reads records (the
# study report) builds no backend, so it registers them itself to redact what another wrote.
SECRET_VARIABLES = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
URL_VARIABLES = ("OPENAI_BASE_URL", "OLLAMA_HOST")


def register_environment_secrets() -> None:
    """Register the API keys and base-URL passwords the built-in backends read."""
    for name in SECRET_VARIABLES:
        register_secret(os.environ.get(name))
    for name in URL_VARIABLES:
        value = os.environ.get(name)
        register_url_credentials(value if not value or "://" in value else f"http://{value}")


def redact(text: Any) -> str:
    """``text`` with every known secret and credential-shaped substring replaced."""
    value = text if isinstance(text, str) else str(text)
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in value:
            value = value.replace(secret, "[redacted]")
    for pattern, replacement in _PATTERNS:
        value = pattern.sub(replacement, value)
    return value


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string inside nested dicts and lists."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
