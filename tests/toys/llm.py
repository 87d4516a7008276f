"""A tiny Llama chat model built from a config and saved like a real one, for tests and benchmarks
of the ``hf:`` backend.

A byte-level BPE tokenizer trained on the given texts (with a chat template), and a two-layer
Llama 64 wide with random weights: it loads through popcorn's own loader in a blink and
generates on a CPU at thousands of tokens a second. Its answers are noise, which is what a
sampling test wants: every token is a real draw from a wide distribution, so a sampler that
shares its random numbers between requests shows it at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def tokenizer(texts: Iterable[str], vocab_size: int = 600) -> Any:
    """A fast BPE tokenizer trained on ``texts``, with pad and end tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        additional_special_tokens=SPECIALS[2:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(tok: Any, layers: int = 2, hidden: int = 64) -> Any:
    """A Llama with random weights over ``tok``'s vocabulary, ``layers`` deep, ``hidden`` wide."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def save_tiny_llama(
    folder: Path | str,
    texts: Iterable[str],
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
) -> Path:
    """A random tiny Llama and its tokenizer (trained on ``texts``) in ``folder``."""
    import torch

    torch.manual_seed(seed)
    tok = tokenizer(texts)
    folder = Path(folder)
    tiny_llama(tok, layers, hidden).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
