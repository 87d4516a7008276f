"""The built-in backends: one small factory each, importing its heavy module only when called.

They are registered in :mod:`popcorn.llm.registry` by name (``"popcorn.llm.providers:NAME"``),
exactly as a plugin's entry point names its factory, so this module is imported only when one
of them is built."""

from __future__ import annotations

import os
from importlib.util import find_spec

from popcorn.errors import MissingDependencyError
from popcorn.llm.base import LLM, LLMOptions


def _require(module: str, package: str, extra: str, purpose: str) -> None:
    if find_spec(module) is None:
        raise MissingDependencyError(package, extra, purpose)


def embedded(_: str, options: LLMOptions) -> LLM:
    _require("llama_cpp", "llama-cpp-python", "embedded", "The embedded LLM")
    from popcorn.llm.llamacpp import LlamaCppLLM, smollm2_path

    return LlamaCppLLM(smollm2_path(), options, spec="embedded")


def gguf(path: str, options: LLMOptions) -> LLM:
    _require("llama_cpp", "llama-cpp-python", "embedded", "A GGUF model")
    from popcorn.llm.llamacpp import LlamaCppLLM, local_gguf

    return LlamaCppLLM(local_gguf(path), options, spec=f"gguf:{path}")


def openai(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    base_url = options.base_url or os.environ.get("OPENAI_BASE_URL") or None
    return OpenAICompatible.for_openai(model, base_url, options)


def deepseek(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    return OpenAICompatible.for_deepseek(model, options)


def ollama(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    return OpenAICompatible.for_ollama(model, options)


def hf(model_id: str, options: LLMOptions) -> LLM:
    _require("torch", "torch", "hf", "A Hugging Face model")
    _require("transformers", "transformers", "hf", "A Hugging Face model")
    from popcorn.llm.hf import TransformersLLM

    return TransformersLLM(model_id, options)


def vllm(model_id: str, options: LLMOptions) -> LLM:
    # vllm itself is imported on the first call, so `popcorn llms` and key computation work
    # on machines without it; the call then says which extra to install.
    from popcorn.llm.vllm_engine import VLLMEngine

    return VLLMEngine(model_id, options)
