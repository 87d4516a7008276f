"""OpenAI-compatible chat completions over HTTP: OpenAI, DeepSeek, Ollama, vLLM, llama.cpp, ...

The API key is read from the environment when the backend is built and lives only in the
request header: it is never part of :meth:`identity`, an error message or a log line. It is
registered with :func:`popcorn.safety.register_secret`, as are the password of a base URL
(``http://user:password@host/v1``) and its HTTP Basic form, and every error message is built
through :func:`popcorn.safety.redact`, so an endpoint that echoes the credentials it was sent
(a 401 body quoting the Authorization header) cannot carry them into a manifest, a ledger, a
report or the terminal.

Credentials: one Authorization header can carry one of them. An API key wins: it is sent as
the bearer token, and user:password in the base URL is used (as HTTP Basic) only when there is
no key; when both are given, a warning says so once.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from popcorn.errors import ProviderError, TransientProviderError, UsageError
from popcorn.llm.base import Completion, Decoding, LLMOptions, Message
from popcorn.safety import redact, register_secret, register_url_credentials

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
DEEPSEEK_URL = "https://api.deepseek.com/v1"
OLLAMA_URL = "http://localhost:11434/v1"

JsonMode = Literal["json_schema", "json_object", "none"]
_FALLBACK: dict[JsonMode, JsonMode] = {
    "json_schema": "json_object",
    "json_object": "none",
    "none": "none",
}
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_MESSAGE_CHARS = 300

# Base URLs already warned about (a study builds one backend per cell: one warning is enough).
_warned: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class EndpointTraits:
    """What an endpoint accepts beyond the core OpenAI parameters."""

    json_mode: JsonMode
    repetition_penalty: bool
    """Send ``repetition_penalty`` (vLLM) and ``repeat_penalty`` (llama.cpp)."""
    strict_schema: bool
    """OpenAI's strict structured outputs: no length keywords allowed in the schema."""


def redact_url(url: str) -> str:
    """The URL without user:password, for manifests and messages."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Everything after the last "@" is host[:port] exactly as written (IPv6 brackets too).
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urlunsplit(parts)


def url_credentials(url: str) -> tuple[str, str] | None:
    """(user, password), percent-decoded, when ``url`` carries ``user:password@``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatible:
    """One model on one OpenAI-compatible endpoint. Thread-safe: one pooled HTTP client.

    ``api_key`` is sent as ``Authorization: Bearer``. user:password in ``base_url`` is sent as
    HTTP Basic only when there is no key (an API key wins; a warning says so when both are set).
    """

    concurrent = True

    def __init__(
        self,
        *,
        spec: str,
        model: str,
        base_url: str,
        api_key: str | None,
        key_env: str | None,
        traits: EndpointTraits,
        timeout: float,
        sampling: bool = True,
    ) -> None:
        register_secret(api_key)
        register_url_credentials(base_url)
        self.spec = spec
        self.model = model
        # Requests go to the URL without user:password: httpx would otherwise turn them into a
        # Basic Authorization header that silently replaces the bearer key.
        self.base_url = redact_url(base_url).rstrip("/")
        self._key_env = key_env
        self._traits = traits
        self._json_mode: JsonMode = traits.json_mode
        # OpenAI's reasoning models take max_completion_tokens and refuse max_tokens; others
        # (and most compatible servers) take max_tokens. A 400 naming it switches for good.
        self._token_param = "max_completion_tokens" if _reasoning_model(model) else "max_tokens"
        self.sampling = sampling
        credentials = url_credentials(base_url)
        self._sends = "key" if api_key else "url" if credentials else "nothing"
        if api_key and credentials:
            _warn_once(self.base_url, key_env)
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            auth=httpx.BasicAuth(*credentials) if credentials and not api_key else None,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    # --- presets --------------------------------------------------------------------------

    @classmethod
    def for_openai(cls, model: str, base_url: str | None, options: LLMOptions) -> OpenAICompatible:
        base_url = _checked_url(base_url or OPENAI_URL)
        official = urlsplit(base_url).hostname == "api.openai.com"
        key = os.environ.get("OPENAI_API_KEY") or None
        if official and not key:
            raise UsageError(
                "openai: needs an API key in the OPENAI_API_KEY environment variable "
                "(or --base-url for a local server that needs none)"
            )
        traits = (
            EndpointTraits("json_schema", repetition_penalty=False, strict_schema=True)
            if official
            else EndpointTraits("json_schema", repetition_penalty=True, strict_schema=False)
        )
        return cls(
            spec=f"openai:{model}",
            model=model,
            base_url=base_url,
            api_key=key,
            key_env="OPENAI_API_KEY",
            traits=traits,
            timeout=options.timeout,
            sampling=options.sampling,
        )

    @classmethod
    def for_deepseek(cls, model: str, options: LLMOptions) -> OpenAICompatible:
        key = os.environ.get("DEEPSEEK_API_KEY") or None
        if not key:
            raise UsageError(
                "deepseek: needs an API key in the DEEPSEEK_API_KEY environment variable"
            )
        # deepseek-reasoner (R1) rejects response_format; deepseek-chat (V3) takes json_object.
        mode: JsonMode = "none" if "reasoner" in model else "json_object"
        return cls(
            spec=f"deepseek:{model}",
            model=model,
            base_url=_checked_url(options.base_url or DEEPSEEK_URL),
            api_key=key,
            key_env="DEEPSEEK_API_KEY",
            traits=EndpointTraits(mode, repetition_penalty=False, strict_schema=False),
            timeout=options.timeout,
            sampling=options.sampling,
        )

    @classmethod
    def for_ollama(cls, model: str, options: LLMOptions) -> OpenAICompatible:
        host = os.environ.get("OLLAMA_HOST")
        default = OLLAMA_URL
        if host:
            host = host if "://" in host else f"http://{host}"
            default = host.rstrip("/") + "/v1"
        return cls(
            spec=f"ollama:{model}",
            model=model,
            base_url=_checked_url(options.base_url or default),
            api_key=None,
            key_env=None,
            traits=EndpointTraits("json_schema", repetition_penalty=True, strict_schema=False),
            timeout=options.timeout,
            sampling=options.sampling,
        )

    # --- LLM interface --------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "provider": "openai-compatible",
            "model": self.model,
            "base_url": redact_url(self.base_url),
        }

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if not self.sampling:
            # As the study called its API models: provider defaults for everything else.
            plain = self._post({"model": self.model, "messages": messages})
            assert plain is not None  # None only answers a request that had response_format
            return _completion(plain, {"request": "model and messages only (no sampling, no JSON)"})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "seed": decoding.seed,
            self._token_param: decoding.max_tokens,
        }
        notes: dict[str, str] = {}
        if self._traits.repetition_penalty:
            body["repetition_penalty"] = decoding.repetition_penalty
            body["repeat_penalty"] = decoding.repetition_penalty
        else:
            notes["repetition_penalty"] = "not supported by this endpoint; not sent"
        if json_schema is not None and self._json_mode != "none":
            body["response_format"] = self._response_format(json_schema)
            notes["json_schema"] = f"requested as {self._json_mode}"
        elif json_schema is not None:
            notes["json_schema"] = "not enforced by this endpoint; parsed from free text"

        try:
            data = self._post(body)
        except _TokenParameter:
            # The endpoint named the token limit's other name: use it from now on.
            self._token_param = "max_completion_tokens"
            body["max_completion_tokens"] = body.pop("max_tokens")
            notes["max_tokens"] = "sent as max_completion_tokens (the endpoint asked for it)"
            data = self._post(body)
        while data is None:
            # The endpoint refused this response_format: step down (json_schema -> json_object
            # with the schema, as llama.cpp takes it -> none), remember, and ask again.
            self._json_mode = _FALLBACK[self._json_mode]
            if self._json_mode == "none" or json_schema is None:
                body.pop("response_format", None)
                notes["json_schema"] = "rejected by the endpoint; parsed from free text"
            else:
                body["response_format"] = self._response_format(json_schema)
                notes["json_schema"] = f"requested as {self._json_mode}"
            data = self._post(body)
        return _completion(data, notes)

    def close(self) -> None:
        self._client.close()

    # --- internals ------------------------------------------------------------------------

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self._json_mode == "json_object":
            # OpenAI and DeepSeek ignore "schema" here; llama.cpp servers turn it into a grammar.
            return {"type": "json_object", "schema": schema}
        if self._traits.strict_schema:
            schema = _without_length_keywords(schema)
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "script",
                "schema": schema,
                "strict": self._traits.strict_schema,
            },
        }

    def _post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST the request; None means 'rejected because of response_format'."""
        where = self.base_url
        try:
            response = self._client.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as err:
            raise TransientProviderError(f"{where} timed out ({type(err).__name__})") from None
        except httpx.TransportError as err:
            if _refused(err) and _is_loopback(self.base_url):
                raise ProviderError(self._not_running()) from None
            raise TransientProviderError(f"cannot reach {where} ({type(err).__name__})") from None
        status = response.status_code
        if status == 200:
            try:
                data = response.json()
            except ValueError:
                raise TransientProviderError(f"{where} sent a reply that is not JSON") from None
            if not isinstance(data, dict) or not data.get("choices"):
                raise ProviderError(
                    redact(f"{where} sent a reply with no choices: {_server_message(response)}")
                )
            return data
        message = _server_message(response)
        if status == 400 and "max_tokens" in body and "max_completion_tokens" in message:
            raise _TokenParameter()
        if "response_format" in body and status in (400, 422, 500) and _about_format(message):
            # llama-cpp-python's server answers an unsupported format with a 500.
            return None
        raise self._http_error(status, message, response.headers.get("retry-after"))

    def _not_running(self) -> str:
        """What a refused connection to this machine's own server means, and what to do."""
        if self.spec.startswith("ollama:"):
            return f"connection refused at {self.base_url}: is `ollama serve` running?"
        return f"connection refused: is the server at {self.base_url} running?"

    def _http_error(self, status: int, message: str, retry_after: str | None) -> ProviderError:
        """The error for a failed HTTP answer; its text passes through :func:`redact`."""
        where = self.base_url
        if status in _TRANSIENT_STATUS:
            return TransientProviderError(
                redact(f"{where} answered HTTP {status}: {message}"),
                retry_after=parse_retry_after(retry_after),
            )
        if status in (401, 403):
            return ProviderError(
                redact(f"{where} rejected {self._credentials_used()} (HTTP {status}): {message}")
            )
        if status == 404:
            return ProviderError(
                redact(
                    f"{where} answered HTTP 404 for model {self.model!r}: check the model name "
                    f"and --base-url ({message})"
                )
            )
        return ProviderError(redact(f"{where} answered HTTP {status}: {message}"))

    def _credentials_used(self) -> str:
        if self._sends == "key":
            return f"the key in {self._key_env}" if self._key_env else "the API key"
        if self._sends == "url":
            return "the user:password of the base URL"
        return f"the request (no key: set {self._key_env}?)" if self._key_env else "the request"


def _warn_once(base_url: str, key_env: str | None) -> None:
    with _warned_lock:
        if base_url in _warned:
            return
        _warned.add(base_url)
    log.warning(
        "%s: both an API key (%s) and user:password in the URL are given; the key is sent as "
        "the bearer token and the URL's user:password is not used",
        base_url,
        key_env or "api_key",
    )


def _refused(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a refused connection: no server on that port."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine, where a refused connection means the server is
    not running, and waiting for it would not start it (a remote host may be restarting)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (a bad port raises here, not in the middle of a request)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        valid = False
    if not valid:
        # redact, not redact_url: the URL may be one urlsplit cannot take apart.
        raise UsageError(
            f"base URL {redact(url)!r} is not an http(s) URL such as http://localhost:8000/v1"
        )
    return url


def _server_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        text = response.text
    else:
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            text = str(err.get("message") or err)
        elif err:
            text = str(err)
        else:
            text = str(data.get("detail") or data) if isinstance(data, dict) else str(data)
    # Redacted before it is cut short: a secret cut in half would no longer be recognised.
    text = " ".join(redact(text).split())
    return text[:_MESSAGE_CHARS] or "(no message)"


class _TokenParameter(Exception):
    """The endpoint refused ``max_tokens`` and named ``max_completion_tokens`` instead."""


def _reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models (o1, o3, o4-mini, gpt-5, ...), which take
    ``max_completion_tokens`` only."""
    name = model.lower().rsplit("/", 1)[-1]
    return name.startswith(("o1", "o3", "o4", "gpt-5"))


def _about_format(message: str) -> bool:
    lowered = message.lower()
    return any(w in lowered for w in ("response_format", "json_schema", "json_object"))


def _without_length_keywords(schema: dict[str, Any]) -> dict[str, Any]:
    drop = {"minLength", "maxLength"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in drop:
            continue
        if isinstance(value, dict):
            value = _without_length_keywords(value)
        out[key] = value
    return out


def _completion(data: dict[str, Any], notes: dict[str, str]) -> Completion:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    # DeepSeek-R1 and vLLM's reasoning parsers return the chain of thought separately.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        text = f"<think>{reasoning}</think>\n{text}"
    usage = data.get("usage") or {}
    return Completion(
        text=text,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        finish_reason=choice.get("finish_reason"),
        notes=notes,
    )
