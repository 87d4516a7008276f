"""``hf:`` generation one conversation at a time against batches of 8 and 16, in one run.

Run on the CPU (a tiny random Llama built here, two layers 64 wide)::

    .venv/bin/python benchmarks/hf_batch.py

or on a GPU with a saved model folder (e.g. one built by ``benchmarks/hf_gpu.py``'s ``build``)::

    python benchmarks/hf_batch.py --model PATH --device cuda --batches 1,16,64

The same requests (the study's decoding, one seed each, ``--new-tokens`` new tokens) go through
``complete_batch`` with ``batch_size`` set to each size in turn, after one warm-up call; reported:
new tokens per second and the ratio to batch 1 of the same run. Answers are checked to be the
same at every batch size (the reproducibility the batching promises). On the tiny CPU model a
batch saves ``generate``'s fixed cost per step (Python, one small kernel after another), not
arithmetic: a stand-in for the GPU, where a batch also fills the hardware a single sequence
leaves idle.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _toys  # noqa: F401  (tests/toys on the path)
from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.writer.prompts import basic_messages

QUERIES = [
    "A cat learning to skateboard",
    "Street food in Bangkok at night",
    "Sunrise yoga on a cliff",
    "A golden retriever surfing at dawn",
    "Grandma reviews energy drinks",
    "Tiny house tour in the forest",
    "Speed painting a galaxy",
    "Lego city timelapse",
]


def measure(
    model: str, device: str, size: int, count: int, new_tokens: int
) -> tuple[float, list[str]]:
    """New tokens per second over ``count`` requests at batch ``size``, and the answers."""
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    llm = create_llm(f"hf:{model}", LLMOptions(device_map=device, dtype=dtype, batch_size=size))
    decoding = Decoding(max_tokens=new_tokens)
    requests = [
        (basic_messages(QUERIES[i % len(QUERIES)]), decoding.with_seed(i), None)
        for i in range(count)
    ]
    llm.complete(*requests[0])  # loads the model and warms the kernels
    _sync(device)
    started = time.perf_counter()
    answers = llm.complete_batch(requests)  # type: ignore[attr-defined]
    _sync(device)
    seconds = time.perf_counter() - started
    return sum(a.completion_tokens or 0 for a in answers) / seconds, [a.text for a in answers]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved model folder [default: a tiny Llama built here]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,8,16", help="batch sizes, the first the baseline")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # steadier figures on a shared CPU
    sizes = [int(s) for s in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from toys.llm import save_tiny_llama

            texts = [m["content"] for q in QUERIES for m in basic_messages(q)]
            model = str(save_tiny_llama(Path(tmp) / "tiny", texts))
        count = max(sizes)
        rates: dict[int, float] = {}
        texts_seen: dict[int, list[str]] = {}
        for size in sizes:
            rates[size], texts_seen[size] = measure(
                model, args.device, size, count, args.new_tokens
            )
    base = sizes[0]
    same = all(texts_seen[s] == texts_seen[base] for s in sizes)
    where = "tiny random Llama (2 layers, 64 wide)" if args.model is None else args.model
    print(f"{where} on {args.device}: {count} requests, {args.new_tokens} new tokens each")
    for size in sizes:
        print(f"batch {size:>3}: {rates[size]:8.1f} tokens/s  {rates[size] / rates[base]:5.2f}x")
    print(f"answers identical at every batch size: {same}")


if __name__ == "__main__":
    main()
