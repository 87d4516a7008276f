"""The ``hf:`` backend on a GPU: bf16 against 4-bit (bitsandbytes) through popcorn's own loader.

Run (needs a CUDA GPU and bitsandbytes): ``python benchmarks/hf_gpu.py [--preset qwen2.5-1.5b]``

No weights can be downloaded where GPUs are lent to us, so the model is built from a published
architecture (Qwen2.5's layer sizes) with random weights, with a tokenizer trained here on the
prompt; speed and memory do not depend on the weight values. Both runs load the saved folder
through ``hf:PATH`` exactly as a user's model would, then write with the study's decoding.
Reported: load time, new tokens per second, peak GPU memory, and 4-bit / bf16 ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.writer.prompts import basic_messages

# Published layer sizes (config.json of each model); vocabulary cut to the local tokenizer's.
PRESETS = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
    ),
}
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(folder: Path, preset: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = [m["content"] for m in basic_messages("A cat learning to skateboard")]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=2000,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tokenizer.chat_template = TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        torch_dtype="bfloat16",
        **PRESETS[preset],
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def measure(folder: Path, options: LLMOptions, tokens: int) -> dict[str, float]:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    llm = create_llm(f"hf:{folder}", options)
    messages = basic_messages("Street food in Bangkok at night")
    t = time.perf_counter()
    llm.complete(messages, Decoding(max_tokens=4))  # loads the model, warms the kernels
    load = time.perf_counter() - t
    t = time.perf_counter()
    out = llm.complete(messages, Decoding(max_tokens=tokens))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {
        "load_s": load,
        "tokens": float(out.completion_tokens or 0),
        "tokens_per_s": (out.completion_tokens or 0) / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-1.5b")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures the GPU path")

    from popcorn.residency import MODELS

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, args.preset)
        results = {}
        for name, options in (
            ("bf16", LLMOptions(device_map="cuda", dtype="bfloat16")),
            ("4-bit nf4", LLMOptions(device_map="cuda", load_in_4bit=True)),
        ):
            results[name] = measure(folder, options, args.tokens)
            MODELS.release("llm")  # drop the model before loading the next variant
    print(f"{torch.cuda.get_device_name()}, {args.preset} layer sizes, random weights")
    print(f"{'variant':<10} {'load s':>7} {'tokens':>7} {'tokens/s':>9} {'peak GiB':>9}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['load_s']:>7.1f} {r['tokens']:>7.0f} {r['tokens_per_s']:>9.1f} "
            f"{r['peak_gib']:>9.2f}"
        )
    b, q = results["bf16"], results["4-bit nf4"]
    print(
        f"4-bit / bf16: memory {q['peak_gib'] / b['peak_gib']:.2f}x, "
        f"speed {q['tokens_per_s'] / b['tokens_per_s']:.2f}x"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
