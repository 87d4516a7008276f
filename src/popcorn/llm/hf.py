"""Hugging Face transformers chat models (``hf:MODEL_ID``), optionally 4-bit or 8-bit.

The study ran Llama-3.3-70B-Instruct, Qwen2.5-72B-Instruct and Mistral-Large-Instruct-2411 this
way in 4-bit. The chat template comes from the tokenizer; nothing is hard-coded per model.
Under the paper profile a model loads in 4-bit fp4 by default, as the study's always did
(:func:`paper_quantization`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from popcorn import hub
from popcorn.errors import MissingDependencyError, ProviderError, UsageError
from popcorn.llm.base import Completion, Decoding, LLMOptions, Message
from popcorn.llm.batching import Batcher
from popcorn.residency import MODELS
from popcorn.safety import redact, register_secret

log = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "float16", "bfloat16")
_warned: set[str] = set()
_generate_lock = threading.Lock()  # one generate at a time, whichever object asks


def _looks_local(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().exists()


def load_model(model_id: str, options: LLMOptions) -> tuple[Any, Any]:
    """(tokenizer, model), loaded once per process for the same id and options (role ``llm``
    of :data:`~popcorn.residency.MODELS`)."""
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
    key = (
        "hf",
        source,
        options.dtype,
        options.device_map,
        options.load_in_4bit,
        options.load_in_8bit,
        options.four_bit,
    )
    return MODELS.get("llm", key, lambda: _load(source, options), what=f"hf:{model_id}")


def _load(source: str, options: LLMOptions) -> tuple[Any, Any]:
    try:
        if Path(source).is_dir():
            tokenizer, model = _from_pretrained(source, options, local_only=False)
        else:  # a hub id: from the cache when it is there, failing fast when the hub is not
            tokenizer, model = hub.load(
                source,
                "config.json",
                f"hf:{source}",
                lambda local_only: _from_pretrained(source, options, local_only),
            )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProviderError(
            redact(f"hf: cannot load {source!r}: {first} (offline? pass a local folder instead)")
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise ProviderError(f"hf: the tokenizer of {source!r} has no chat template")
    model.eval()
    return tokenizer, model


def _from_pretrained(source: str, options: LLMOptions, local_only: bool) -> tuple[Any, Any]:
    """(tokenizer, model) of ``source``; torch and transformers are imported only here, after
    :func:`popcorn.hub.load` has seen that the model can be had."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if options.dtype != "auto":
        kwargs["dtype"] = getattr(torch, options.dtype)
    if options.device_map not in ("", "none"):
        kwargs["device_map"] = options.device_map
    if options.load_in_4bit or options.load_in_8bit:
        from importlib.util import find_spec

        if find_spec("bitsandbytes") is None:
            raise MissingDependencyError("bitsandbytes", "quant", "4-bit or 8-bit loading")
        kwargs["quantization_config"] = quantization_config(options)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return tokenizer, AutoModelForCausalLM.from_pretrained(source, **kwargs)


def paper_quantization(
    options: LLMOptions, *, cuda: bool, bitsandbytes: bool
) -> tuple[LLMOptions, str | None]:
    """The options an ``hf:`` model loads with, and a warning when the paper profile's 4-bit
    default cannot be kept.

    The study loaded every local model in bitsandbytes' 4-bit fp4, so under the paper profile
    (the only one whose ``four_bit`` is fp4, which the writer hands every backend) a model that
    names no quantisation and no ``--dtype`` loads in 4-bit. An explicit ``--load-in-4bit``,
    ``--load-in-8bit`` or ``--dtype`` is the user's choice and is kept. Without CUDA or
    bitsandbytes the model loads unquantised, and the warning says its answers are not the
    study's conditions."""
    chosen = options.load_in_4bit or options.load_in_8bit or options.dtype != "auto"
    if options.four_bit != "fp4" or chosen:
        return options, None
    if cuda and bitsandbytes:
        return replace(options, load_in_4bit=True), None
    missing = "no CUDA GPU" if not cuda else "bitsandbytes is not installed"
    return options, (
        f"loads unquantised ({missing}), not in 4-bit fp4 as the study's models did; its "
        "answers are not under the paper profile's conditions"
    )


def _paper_options(model_id: str, options: LLMOptions) -> LLMOptions:
    """:func:`paper_quantization` on this machine, warning once per model."""
    if options.four_bit != "fp4":
        return options  # not the paper profile: nothing to decide, and no torch to import
    from importlib.util import find_spec

    bitsandbytes = find_spec("bitsandbytes") is not None
    cuda = False
    if options.device_map not in ("cpu", "mps"):
        import torch

        cuda = torch.cuda.is_available()
    chosen, warning = paper_quantization(options, cuda=cuda, bitsandbytes=bitsandbytes)
    if warning is not None and model_id not in _warned:
        _warned.add(model_id)
        log.warning("hf:%s %s", model_id, warning)
    return chosen


def quantization_config(options: LLMOptions) -> Any:
    """The ``BitsAndBytesConfig`` for ``options``, None when the model is not quantised.

    fp4 (the paper profile) is ``load_in_4bit=True`` and nothing else, bitsandbytes' defaults
    as the study loaded its models; nf4 computes in bfloat16."""
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if options.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    if options.four_bit == "fp4":
        return BitsAndBytesConfig(load_in_4bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )


def generate_kwargs(decoding: Decoding, pad_token_id: int | None) -> dict[str, Any]:
    """The sampling keyword arguments ``model.generate`` gets for ``decoding``."""
    sample = decoding.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": decoding.max_tokens,
        "do_sample": sample,
        "repetition_penalty": decoding.repetition_penalty,
        "pad_token_id": pad_token_id,
    }
    if sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p)
    return kwargs


CPU_BATCH = 4
"""Conversations per ``generate`` on the CPU, where a bigger batch gains little."""
MAX_BATCH = 64


def auto_batch_size(free_bytes: int, config: Any, tokens: int, prompt: int, itemsize: int) -> int:
    """How many sequences of ``tokens`` (``prompt`` of them read at once) fit in ``free_bytes``
    of GPU memory: the key/value cache of each, the prefill's largest activations and the
    sampler's copies of the logits, within 70% of what is free (the rest is headroom for the
    allocator); from 1 to :data:`MAX_BATCH`."""
    layers = int(getattr(config, "num_hidden_layers", 32))
    heads = int(getattr(config, "num_attention_heads", 32))
    hidden = int(getattr(config, "hidden_size", 4096))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(config, "vocab_size", 32000))
    cache = 2 * layers * kv_heads * head_dim * itemsize * tokens
    prefill = prompt * (3 * inter + 4 * hidden) * itemsize
    logits = 6 * vocab * 4  # float32 logits, sorted, cumulated and masked copies
    per_sequence = cache + prefill + logits
    return max(1, min(MAX_BATCH, int(free_bytes * 0.7) // per_sequence))


class RowSampler:
    """The sampling step of a batch, one random stream per row: a row's token is drawn with
    its own request's seed, so its text does not depend on which others share its batch.

    It runs as a logits processor after transformers' repetition penalty and applies what
    sampling does (temperature, top-k, top-p), then draws by inverse CDF over the candidates,
    likeliest first, with a uniform from the row's own generator (kept on the CPU: the same
    draws on every device). It returns scores that keep only the drawn token, so the sampling
    transformers does next picks it with certainty."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[-1]:  # the k likeliest, in order: no full sort
            ranked, tokens = torch.topk(logits, self.top_k, dim=-1)
        else:
            ranked, tokens = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = torch.softmax(ranked, dim=-1)
        if self.top_p < 1.0:
            before = torch.cumsum(probs, dim=-1) - probs  # the mass of the likelier tokens
            probs = probs.masked_fill(before >= self.top_p, 0.0)  # the first always stays
        cdf = torch.cumsum(probs, dim=-1)
        uniform = torch.stack([torch.rand((), generator=g) for g in self.generators])
        target = (uniform.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
        rank = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, tokens.gather(-1, rank), 0.0)


def left_padded(rows: list[list[int]], device: Any) -> tuple[Any, Any]:
    """(input ids, attention mask) of ``rows`` aligned on the right.

    A row's padding repeats its own first token rather than a shared pad token: the attention
    mask hides it from the model either way, but the repetition penalty reads every position,
    and a token already in the row adds nothing to what it penalises. A row's penalties are
    then the same alone and in any batch."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.empty((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : width - len(row)] = row[0]
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


Request = tuple[list[Message], Decoding, dict[str, Any] | None]


class TransformersLLM:
    """A local causal LM; conversations are generated in batches (:meth:`complete_batch`).

    :meth:`complete` may be called from many threads: calls made at about the same time are
    answered together (:class:`~popcorn.llm.batching.Batcher`), so a batch of queries or a study
    running N jobs at once feeds the model batches of up to N."""

    concurrent = True
    batched = True

    def __init__(self, model_id: str, options: LLMOptions) -> None:
        # The hub client reads these on our behalf; its errors may quote a request it made.
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            register_secret(os.environ.get(name))
        self.spec = f"hf:{model_id}"
        self.model_id = model_id
        # Decided before identity() is read: the run key says how the model was loaded.
        self.options = _paper_options(model_id, options)
        self._batcher: Batcher[Request, Completion] = Batcher(
            self.complete_batch, max_batch=MAX_BATCH
        )

    def identity(self) -> dict[str, Any]:
        quant = None
        if self.options.load_in_8bit:
            quant = "8bit"
        elif self.options.load_in_4bit:
            # Plain "4bit" is nf4, as it was before fp4 existed here: old run keys stay valid.
            quant = "4bit" if self.options.four_bit == "nf4" else f"4bit-{self.options.four_bit}"
        return {
            "provider": "transformers",
            "model": self.model_id,
            "dtype": self.options.dtype,
            "quantization": quant,
            # Draws come from each request's own seeded stream since batching: a seed gives
            # another sample than it did with one global stream, so keys made then differ.
            "sampler": "per-request",
        }

    def complete(
        self,
        messages: list[Message],
        decoding: Decoding,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        return self._batcher.submit((messages, decoding, json_schema))

    def complete_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request, in order, generating up to ``batch_size`` at once.

        Requests that share their sampling settings (all but the seed) go in the same batches,
        shortest prompts together; each keeps its own seed (:class:`RowSampler`), so an answer
        is the same whichever requests share its batch, and the same as alone."""
        tokenizer, model = load_model(self.model_id, self.options)
        prompts = [_encode(tokenizer, messages) for messages, _, _ in requests]
        groups: dict[Decoding, list[int]] = {}
        for i, (_, d, _) in enumerate(requests):
            groups.setdefault(d.with_seed(0), []).append(i)
        answers: dict[int, Completion] = {}
        for decoding, members in groups.items():
            members.sort(key=lambda i: len(prompts[i]))  # similar lengths: less padding
            size = self.batch_size(model, len(prompts[members[-1]]), decoding.max_tokens)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                rows = [prompts[i] for i in chunk]
                seeds = [requests[i][1].seed for i in chunk]
                done = self._generate(tokenizer, model, rows, seeds, decoding)
                for i, answer in zip(chunk, done, strict=True):
                    answers[i] = self._noted(answer, requests[i][2])
        return [answers[i] for i in range(len(requests))]

    def batch_size(self, model: Any, longest_prompt: int, max_new: int) -> int:
        """``[llm] batch_size``, or what fits the free memory of the model's GPU."""
        if self.options.batch_size > 0:
            return self.options.batch_size
        import torch

        device = model.device
        if device.type != "cuda":
            return CPU_BATCH
        free, _ = torch.cuda.mem_get_info(device)
        itemsize = torch.empty((), dtype=model.dtype).element_size()
        tokens = longest_prompt + max_new
        return auto_batch_size(free, model.config, tokens, longest_prompt, itemsize)

    def _generate(
        self, tokenizer: Any, model: Any, rows: list[list[int]], seeds: list[int], d: Decoding
    ) -> list[Completion]:
        """One ``generate`` for ``rows``; halves the batch and retries on running out of GPU
        memory (answers do not depend on the batch, so nothing changes but the time)."""
        import torch

        try:
            return self._generate_once(tokenizer, model, rows, seeds, d)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(rows) == 1:
                raise ProviderError(
                    f"hf: out of GPU memory generating {d.max_tokens} tokens: try "
                    "--load-in-4bit, a smaller --max-tokens or another --device"
                ) from None
        half = len(rows) // 2
        return self._generate(tokenizer, model, rows[:half], seeds[:half], d) + self._generate(
            tokenizer, model, rows[half:], seeds[half:], d
        )

    def _generate_once(
        self, tokenizer: Any, model: Any, rows: list[list[int]], seeds: list[int], d: Decoding
    ) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        ids, mask = left_padded(rows, model.device)
        pad = tokenizer.pad_token_id
        kwargs = generate_kwargs(d, tokenizer.eos_token_id if pad is None else pad)
        processors = LogitsProcessorList()
        if kwargs["do_sample"]:
            top_k = model.generation_config.top_k
            top_k = 50 if top_k is None else int(top_k)  # transformers' default when unset
            processors.append(RowSampler(seeds, d.temperature, d.top_p, top_k))
        with _generate_lock, torch.no_grad():
            output = model.generate(
                input_ids=ids, attention_mask=mask, logits_processor=processors, **kwargs
            )
        stops = _eos_ids(tokenizer, model)
        summary = " ".join(f"{k}={v}" for k, v in kwargs.items() if k != "pad_token_id")
        return [
            _completion(tokenizer, rows[i], output[i, ids.shape[1] :].tolist(), stops, summary)
            for i in range(len(rows))
        ]

    def _noted(self, answer: Completion, json_schema: dict[str, Any] | None) -> Completion:
        notes = dict(answer.notes)
        if json_schema:
            notes["json_schema"] = "not enforced; parsed from free text"
        if self.options.load_in_4bit:
            notes["quantization"] = f"bitsandbytes 4-bit {self.options.four_bit}"
        return replace(answer, notes=notes)


def _encode(tokenizer: Any, messages: list[Message]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """The tokens that end an answer: the model's generation config's, and the tokenizer's."""
    found = model.generation_config.eos_token_id
    ids = set(found if isinstance(found, list) else [] if found is None else [found])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _completion(
    tokenizer: Any, prompt: list[int], new: list[int], stops: set[int], summary: str
) -> Completion:
    """A row's answer: its new tokens up to and with the first end token (what follows is the
    batch's padding after this row finished)."""
    end = next((i for i, token in enumerate(new) if token in stops), None)
    tokens = new if end is None else new[: end + 1]
    return Completion(
        text=tokenizer.decode(tokens, skip_special_tokens=True),
        prompt_tokens=len(prompt),
        completion_tokens=len(tokens),
        finish_reason="length" if end is None else "stop",
        notes={"generate": summary},
    )
