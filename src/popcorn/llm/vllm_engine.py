"""``vllm:MODEL``: vLLM's offline engine in this process, for studies on a GPU.

Every call can go alone (:meth:`VLLMEngine.complete`) or many at once
(:meth:`VLLMEngine.complete_batch`): vLLM batches them continuously, and each request keeps its
own seed, so a script does not depend on which others share its batch. 4-bit loading goes
through vLLM's own quantisation options (``--load-in-4bit`` maps to its bitsandbytes loader).
The mapping from our settings to vLLM's is :func:`sampling_kwargs` and :func:`engine_kwargs`,
plain functions tested without vLLM; everything else is vLLM's (it needs a CUDA GPU and
``pip install 'popcorn-video[vllm]'``). For a shared server, run ``vllm serve MODEL`` and use
``openai:MODEL --base-url http://HOST:8000/v1`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from popcorn.errors import MissingDependencyError, ProviderError
from popcorn.llm.base import Completion, Decoding, LLMOptions, Message
from popcorn.llm.batching import Batcher

Request = tuple[list[Message], Decoding, dict[str, Any] | None]


def engine_kwargs(model: str, options: LLMOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``model`` under ``options``."""
    kwargs: dict[str, Any] = {"model": model, "seed": 0}
    if options.dtype != "auto":
        kwargs["dtype"] = options.dtype
    if options.load_in_4bit:
        kwargs["quantization"] = "bitsandbytes"
    if options.load_in_8bit:
        raise ProviderError("vllm: 8-bit loading is not offered; use --load-in-4bit or a "
                            "pre-quantised model (AWQ, GPTQ)")  # fmt: skip
    return kwargs


def sampling_kwargs(decoding: Decoding, json_schema: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request; ``json_schema`` becomes
    ``"json_schema"`` for :func:`_sampling` to turn into vLLM's structured-output option."""
    kwargs: dict[str, Any] = {
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "repetition_penalty": decoding.repetition_penalty,
        "seed": decoding.seed,
        "max_tokens": decoding.max_tokens,
    }
    if json_schema is not None:
        kwargs["json_schema"] = json_schema
    return kwargs


def _sampling(vllm: Any, kwargs: dict[str, Any]) -> Any:
    """``SamplingParams`` with the schema in whichever form this vLLM takes."""
    kwargs = dict(kwargs)
    schema = kwargs.pop("json_schema", None)
    if schema is not None:
        params = vllm.sampling_params
        if hasattr(params, "StructuredOutputsParams"):  # vLLM >= 0.10
            kwargs["structured_outputs"] = params.StructuredOutputsParams(json=schema)
        else:
            kwargs["guided_decoding"] = params.GuidedDecodingParams(json=schema)
    return vllm.SamplingParams(**kwargs)


class VLLMEngine:
    """One model in vLLM's offline engine, loaded on first use and kept."""

    # Calls from many threads are gathered into one engine call (Batcher), which vLLM
    # batches continuously; every request keeps its own seed.
    concurrent = True
    batched = True

    def __init__(self, model: str, options: LLMOptions) -> None:
        self.spec = f"vllm:{model}"
        self.model = model
        self.options = options
        self._engine: Any = None
        self._lock = threading.Lock()
        self._batcher: Batcher[Request, Completion] = Batcher(self.complete_batch)

    def identity(self) -> dict[str, Any]:
        return {
            "provider": "vllm",
            "model": self.model,
            "quantization": "bitsandbytes-4bit" if self.options.load_in_4bit else None,
        }

    def _load(self) -> tuple[Any, Any]:
        try:
            import vllm
        except ImportError:
            raise MissingDependencyError("vllm", "vllm", "The vllm: backend") from None
        if self._engine is None:
            self._engine = vllm.LLM(**engine_kwargs(self.model, self.options))
        return vllm, self._engine

    def complete(
        self, messages: list[Message], decoding: Decoding, json_schema: dict[str, Any] | None = None
    ) -> Completion:
        return self._batcher.submit((messages, decoding, json_schema))

    def complete_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request in one engine call (continuous batching); results in order."""
        with self._lock:
            vllm, engine = self._load()
            params = [_sampling(vllm, sampling_kwargs(d, s)) for _, d, s in requests]
            outputs = engine.chat([m for m, _, _ in requests], params, use_tqdm=False)
        completions = []
        for out in outputs:
            first = out.outputs[0]
            completions.append(
                Completion(
                    text=first.text,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(first.token_ids or ()),
                    finish_reason=first.finish_reason,
                    notes={"engine": "vllm"},
                )
            )
        return completions
