"""Hugging Face transformers chat models (``hf:MODEL_ID``), optionally 4-bit or 8-bit.

The study ran Llama-3.3-70B-Instruct, Qwen2.5-72B-Instruct and Mistral-Large-Instruct-2411 this
way in 4-bit. The chat template comes from the tokenizer; nothing is hard-coded per model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from popcorn.errors import MissingDependencyError, ProviderError, UsageError
from popcorn.llm.base import Completion, Decoding, Message
from popcorn.llm.registry import LLMOptions

_DTYPES = ("auto", "float32", "float16", "bfloat16")
_loaded: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_loaded_lock = threading.Lock()


def _looks_local(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().exists()


def load_model(model_id: str, options: LLMOptions) -> tuple[Any, Any]:
    """(tokenizer, model), loaded once per process for the same id and options."""
    if options.dtype not in _DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(_DTYPES)}, not {options.dtype!r}")
    if options.load_in_4bit and options.load_in_8bit:
        raise UsageError("choose one of --load-in-4bit and --load-in-8bit")
    source: str = model_id
    if _looks_local(model_id):
        path = Path(model_id).expanduser()
        if not path.is_dir():
            raise UsageError(f"hf: no model folder at {str(path)!r}")
        source = str(path.resolve())
    key = (source, options.dtype, options.device_map, options.load_in_4bit, options.load_in_8bit)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = _load(source, options)
        return _loaded[key]


def release() -> None:
    """Drop the loaded models and free their GPU memory; the next call loads again."""
    import gc

    with _loaded_lock:
        _loaded.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(source: str, options: LLMOptions) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if options.dtype != "auto":
        kwargs["dtype"] = getattr(torch, options.dtype)
    if options.device_map not in ("", "none"):
        kwargs["device_map"] = options.device_map
    if options.load_in_4bit or options.load_in_8bit:
        from importlib.util import find_spec

        if find_spec("bitsandbytes") is None:
            raise MissingDependencyError("bitsandbytes", "quant", "4-bit or 8-bit loading")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
            if options.load_in_4bit
            else BitsAndBytesConfig(load_in_8bit=True)
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProviderError(
            f"hf: cannot load {source!r}: {first} (offline? pass a local folder instead)"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise ProviderError(f"hf: the tokenizer of {source!r} has no chat template")
    model.eval()
    return tokenizer, model


class TransformersLLM:
    """A local causal LM; one generation at a time."""

    concurrent = False

    def __init__(self, model_id: str, options: LLMOptions) -> None:
        self.spec = f"hf:{model_id}"
        self.model_id = model_id
        self.options = options
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        quant = (
            "4bit" if self.options.load_in_4bit else "8bit" if self.options.load_in_8bit else None
        )
        return {
            "provider": "transformers",
            "model": self.model_id,
            "dtype": self.options.dtype,
            "quantization": quant,
        }

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        import torch

        tokenizer, model = load_model(self.model_id, self.options)
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        prompt_len = int(inputs["input_ids"].shape[-1])
        sample = decoding.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": decoding.max_tokens,
            "do_sample": sample,
            "repetition_penalty": decoding.repetition_penalty,
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        }
        if sample:
            gen_kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p)
        with self._lock, torch.no_grad():
            torch.manual_seed(decoding.seed)
            output = model.generate(**inputs, **gen_kwargs)
        new_tokens = output[0, prompt_len:]
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        eos = tokenizer.eos_token_id
        finished = eos is not None and bool((new_tokens == eos).any())
        notes = {"json_schema": "not enforced; parsed from free text"} if json_schema else {}
        return Completion(
            text=text,
            prompt_tokens=prompt_len,
            completion_tokens=int(new_tokens.shape[-1]),
            finish_reason="stop" if finished else "length",
            notes=notes,
        )
