"""``llm:MODEL``: any model the ``llm`` library and its plugins reach, through its Python API.

``llm`` (Simon Willison's CLI and library) is a plugin host: ``llm-anthropic``, ``llm-gemini``,
``llm-mistral``, local runners such as ``llm-gguf``, and any OpenAI-compatible server named in
its ``extra-openai-models.yaml``. This backend hands Popcorn's messages and decoding to such a
model and gives back its text, so our parser, quality gate and run store work around every
model ``llm models`` lists, with the keys ``llm keys set`` stored.

What crosses over, and why:

- The key comes from llm's own key store (or the environment variable the model names) when
  the backend is built, so a missing key is one line naming ``llm keys set NAME`` before any
  query runs. It is registered with :func:`popcorn.safety.register_secret` and never enters
  :meth:`identity`, a note or a message.
- Decoding goes through the model's own ``Options``: each of temperature, top_p, max_tokens,
  seed and repetition_penalty is sent under the first name the model's options declare for
  it, and a setting the model has no option for (or refuses) is left out with a note in the
  manifest, as the other API backends note what they did not send.
- A JSON schema is passed where the model says it supports schemas; an endpoint that refuses
  it is asked again without one, for good, and the answer is parsed from free text.
- One system message and one user message go as llm's ``system`` and ``prompt``, which every
  plugin reads; earlier turns (a worked example shown as an earlier exchange, a request for a
  shorter title) go as llm's ``messages`` list, which llm's own OpenAI models read; a plugin
  that reads only ``system`` and ``prompt`` sees the last request alone.

``import llm`` loads every installed llm plugin, so it happens only when this backend is built.
"""

from __future__ import annotations

import threading
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

from popcorn.errors import (
    MissingDependencyError,
    ProviderError,
    TransientProviderError,
    UsageError,
)
from popcorn.llm.base import Completion, Decoding, LLMOptions, Message
from popcorn.llm.openai_compat import parse_retry_after, redact_url
from popcorn.safety import one_line, redact, register_secret

# Each Decoding field -> the option names plugins use for it, in the order they are tried.
OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "max_tokens": ("max_tokens", "max_output_tokens", "max_new_tokens", "num_predict"),
    "seed": ("seed",),
    "repetition_penalty": ("repetition_penalty", "repeat_penalty"),
}

_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_MESSAGE_CHARS = 300


def llm_library(model: str, options: LLMOptions) -> LLMLibraryModel:
    """The ``llm:MODEL`` factory: checks that ``llm`` is installed before importing it."""
    if find_spec("llm") is None:
        raise MissingDependencyError("llm", "llm", "The llm: backend")
    return LLMLibraryModel(model, options)


def option_values(options_class: Any, decoding: Decoding) -> tuple[dict[str, Any], dict[str, str]]:
    """The model options that carry ``decoding``, and a note for each setting not sent.

    ``options_class`` is the model's pydantic ``Options``. A setting goes under the first of its
    names (:data:`OPTION_NAMES`) the class declares, and only if the class accepts the value on
    its own: one refused value must not cost the others.
    """
    declared = set(getattr(options_class, "model_fields", {}))
    values: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for setting, names in OPTION_NAMES.items():
        name = next((n for n in names if n in declared), None)
        value = getattr(decoding, setting)
        if name is None:
            notes[setting] = "not an option of this model; not sent"
        elif _accepts(options_class, name, value):
            values[name] = value
        else:
            notes[setting] = f"{value!r} refused by this model's options; not sent"
    return values, notes


def _accepts(options_class: Any, name: str, value: Any) -> bool:
    try:
        options_class(**{name: value})
    except Exception:  # pydantic's ValidationError, or a plugin's own validator
        return False
    return True


class LLMLibraryModel:
    """One model of the ``llm`` library. Remote models (those with a key or a base URL) take
    parallel calls; a model run in this process by a plugin is called one query at a time."""

    def __init__(self, name: str, options: LLMOptions) -> None:
        import llm

        self.spec = f"llm:{name}"
        try:
            self._model = llm.get_model(name)
        except llm.UnknownModelError:
            raise UsageError(
                f"{self._shown_spec()}: llm knows no model {one_line(name)!r}; "
                "`llm models` lists the models its plugins provide"
            ) from None
        self._key = self._resolve_key()
        self.sampling = options.sampling
        self._schema = bool(getattr(self._model, "supports_schema", False))
        self._no_schema = "not supported by this model; parsed from free text"
        self._api_base = _text_attribute(self._model, "api_base")
        self.concurrent = bool(self._model.needs_key or self._api_base)
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        """The model's id (an alias resolves to it) and, for a configured OpenAI-compatible
        model, the upstream model name and base URL: what decides its answers."""
        found: dict[str, Any] = {"provider": "llm", "model": self._model.model_id}
        model_name = _text_attribute(self._model, "model_name")
        if model_name:
            found["model_name"] = model_name
        if self._api_base:
            found["base_url"] = redact_url(self._api_base)
        return found

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if not self.sampling:
            # As the study called its API models: provider defaults for everything else.
            notes = {"request": "model and messages only (no sampling, no JSON)"}
            return self._ask(messages, {}, None, notes)
        options, notes = option_values(self._model.Options, decoding)
        schema = None
        if json_schema is not None and self._schema:
            schema = json_schema
            notes["json_schema"] = "requested as a schema"
        elif json_schema is not None:
            notes["json_schema"] = self._no_schema
        try:
            return self._ask(messages, options, schema, notes)
        except _SchemaRefused:
            with self._lock:
                self._schema = False
                self._no_schema = "rejected by the model; parsed from free text"
            notes["json_schema"] = self._no_schema
            return self._ask(messages, options, None, notes)

    # --- internals ------------------------------------------------------------------------

    def _shown_spec(self) -> str:
        return one_line(self.spec)[:80]

    def _resolve_key(self) -> str | None:
        """The model's key from llm's key store or its environment variable; None when the
        model needs none. A missing key is a ``UsageError`` naming ``llm keys set``."""
        import llm

        needs = _text_attribute(self._model, "needs_key")
        if not needs:
            return None
        try:
            key = self._model.get_key()
        except llm.NeedsKeyException:
            env = _text_attribute(self._model, "key_env_var")
            alternative = f" (or set {env})" if env else ""
            raise UsageError(
                f"{self._shown_spec()} needs an API key: run `llm keys set {needs}`{alternative}"
            ) from None
        register_secret(key)
        return key

    def _ask(
        self,
        messages: list[Message],
        options: dict[str, Any],
        schema: dict[str, Any] | None,
        notes: dict[str, str],
    ) -> Completion:
        system, history, prompt = _split(messages)
        kwargs: dict[str, Any] = {"system": system, "options": options, "stream": False}
        if history:
            kwargs["messages"] = _llm_messages(system, history)
        if schema is not None:
            kwargs["schema"] = schema
        if self._key is not None:
            kwargs["key"] = self._key
        try:
            response = self._model.prompt(prompt, **kwargs)
            text = response.text()
            usage = response.usage()
        except Exception as err:  # a plugin's code: every failure is classified here
            raise self._failure(err, schema is not None) from None
        return Completion(
            text=text,
            prompt_tokens=usage.input,
            completion_tokens=usage.output,
            finish_reason=_finish_reason(getattr(response, "response_json", None)),
            notes=dict(notes),
        )

    def _failure(self, err: BaseException, sent_schema: bool) -> Exception:
        """Our error for a plugin's failure: transient ones are retried, the rest are one
        line saying what to do. Texts are redacted (a server may echo the key)."""
        import llm

        spec = self._shown_spec()
        status = _status(err)
        text = _message(err)
        if sent_schema and status in (400, 422, 500) and _about_schema(text):
            return _SchemaRefused()
        if isinstance(err, llm.NeedsKeyException):
            needs = _text_attribute(self._model, "needs_key") or "NAME"
            return ProviderError(f"{spec} needs an API key: run `llm keys set {needs}`")
        if status in _TRANSIENT_STATUS:
            return TransientProviderError(
                f"{spec}: HTTP {status}: {text}", retry_after=_retry_after(err)
            )
        if status in (401, 403):
            needs = _text_attribute(self._model, "needs_key") or "NAME"
            return ProviderError(
                f"{spec}: the key was rejected (HTTP {status}): {text}; "
                f"store the right one with `llm keys set {needs}`"
            )
        if status == 404:
            return ProviderError(f"{spec}: HTTP 404, check the model's name: {text}")
        if _refused(err) and self._on_loopback():
            where = redact_url(self._api_base or "")
            return ProviderError(f"{spec}: connection refused: is the server at {where} running?")
        if _connection_trouble(err):
            return TransientProviderError(f"{spec}: {type(err).__name__}: {text}")
        return ProviderError(f"{spec} failed: {type(err).__name__}: {text}")

    def _on_loopback(self) -> bool:
        if not self._api_base:
            return False
        try:
            return urlsplit(self._api_base).hostname in _LOOPBACK
        except ValueError:
            return False


class _SchemaRefused(Exception):
    """The endpoint refused the JSON schema: ask again without one."""


def _split(messages: list[Message]) -> tuple[str | None, list[Message], str]:
    """(system text, the turns before the last, the last user message's text)."""
    turns = list(messages)
    system = None
    if turns and turns[0].get("role") == "system":
        system = turns.pop(0).get("content", "")
    if not turns or turns[-1].get("role") != "user":
        raise UsageError("a conversation for the llm: backend must end with a user message")
    return system, turns[:-1], turns[-1].get("content", "")


def _llm_messages(system: str | None, history: list[Message]) -> list[Any]:
    """llm's message objects for the system text and the earlier turns; llm appends the
    prompt itself as the last user message."""
    import llm

    build = {"system": llm.system, "user": llm.user, "assistant": llm.assistant}
    found = [llm.system(system)] if system else []
    for turn in history:
        role = turn.get("role", "user")
        if role not in build:
            raise UsageError(f"the llm: backend cannot send a {one_line(role)!r} message")
        found.append(build[role](turn.get("content", "")))
    return found


def _text_attribute(model: Any, name: str) -> str | None:
    """A model attribute that should be text (a key name, a base URL), or None."""
    value = getattr(model, name, None)
    return value if isinstance(value, str) and value else None


def _status(err: BaseException) -> int | None:
    """The HTTP status an SDK's error carries (openai, anthropic and httpx name it alike)."""
    for holder in (err, getattr(err, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _retry_after(err: BaseException) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        return parse_retry_after(headers.get("retry-after"))
    except Exception:  # headers of an unknown SDK's own type
        return None


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from (an SDK wraps httpx, which wraps OSError)."""
    found: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _refused(err: BaseException) -> bool:
    return any(
        isinstance(e, ConnectionRefusedError) or "connection refused" in str(e).lower()
        for e in _chain(err)
    )


def _connection_trouble(err: BaseException) -> bool:
    """A timeout or a dropped connection, by type: SDKs name theirs ``...Timeout...`` or
    ``...Connection...`` (openai's APIConnectionError, httpx's ConnectError)."""
    for e in _chain(err):
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if any(word in cls.__name__ for cls in type(e).__mro__ for word in ("Timeout", "Connect")):
            return True
    return False


def _message(err: BaseException) -> str:
    # Redacted before it is cut short: a secret cut in half would no longer be recognised.
    text = " ".join(redact(err).split())
    return text[:_MESSAGE_CHARS] or "(no message)"


def _about_schema(text: str) -> bool:
    lowered = text.lower()
    return any(w in lowered for w in ("response_format", "json_schema", "schema"))


def _finish_reason(data: Any) -> str | None:
    """``finish_reason`` from an OpenAI-style raw response, when the plugin kept one."""
    if not isinstance(data, dict):
        return None
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None
