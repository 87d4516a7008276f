"""Batched generation in the ``hf:`` backend, on a tiny random Llama saved and loaded back through
popcorn's own loader: a request's answer does not depend on which others share its batch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.writer.prompts import basic_messages

# Eight queries of different lengths, so a batch pads its shorter prompts.
QUERIES = [
    "A cat learning to skateboard",
    "Street food in Bangkok at night",
    "Sunrise yoga",
    "A golden retriever surfing a small wave at dawn in Portugal",
    "Grandma reviews energy drinks",
    "Tiny house tour in the forest, under ten square metres, with a loft bed",
    "Speed painting a galaxy",
    "Lego city timelapse",
]
STUDY = Decoding(max_tokens=24)  # the study's temperature, top-p and repetition penalty


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toys.llm import save_tiny_llama

    texts = [m["content"] for q in QUERIES for m in basic_messages(q)]
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts)


def requests(decoding: Decoding) -> list[tuple[list[dict[str, str]], Decoding, None]]:
    return [(basic_messages(q), decoding.with_seed(7 + i), None) for i, q in enumerate(QUERIES)]


def test_a_query_samples_the_same_text_alone_and_in_a_batch_of_8(tiny: Path):
    llm = create_llm(f"hf:{tiny}", LLMOptions(device_map="cpu", batch_size=8))
    batch = llm.complete_batch(requests(STUDY))  # type: ignore[attr-defined]
    alone = [llm.complete(m, d) for m, d, _ in requests(STUDY)]
    assert [a.text for a in alone] == [b.text for b in batch]
    assert [a.completion_tokens for a in alone] == [b.completion_tokens for b in batch]
    assert [a.prompt_tokens for a in alone] == [b.prompt_tokens for b in batch]
    assert len({b.text for b in batch}) == len(QUERIES)  # real draws, not one answer
    # The same query in another batch position, with other companions, still says the same.
    shuffled = list(reversed(requests(STUDY)))
    again = llm.complete_batch(shuffled)  # type: ignore[attr-defined]
    assert [a.text for a in reversed(again)] == [a.text for a in alone]


def test_another_seed_samples_another_text(tiny: Path):
    llm = create_llm(f"hf:{tiny}", LLMOptions(device_map="cpu"))
    messages = basic_messages(QUERIES[0])
    assert llm.complete(messages, STUDY).text != llm.complete(messages, STUDY.with_seed(8)).text


def test_greedy_batched_equals_greedy_one_by_one(tiny: Path):
    llm = create_llm(f"hf:{tiny}", LLMOptions(device_map="cpu", batch_size=8))
    greedy = Decoding(temperature=0.0, max_tokens=24)
    batch = llm.complete_batch(requests(greedy))  # type: ignore[attr-defined]
    alone = [llm.complete(m, d) for m, d, _ in requests(greedy)]
    assert [a.text for a in alone] == [b.text for b in batch]
    assert all(b.notes["generate"].startswith("max_new_tokens=24 do_sample=False") for b in batch)


def test_batches_hold_at_most_batch_size_and_answers_keep_their_order(tiny: Path):
    from popcorn.llm.hf import load_model

    options = LLMOptions(device_map="cpu", batch_size=3)
    llm = create_llm(f"hf:{tiny}", options)
    short = Decoding(max_tokens=8)
    mixed = [(m, short if i % 4 == 0 else d, s) for i, (m, d, s) in enumerate(requests(STUDY))]
    _, model = load_model(str(tiny), options)
    prefills: list[int] = []

    def record(_: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:  # a prompt read, not a decoding step
            prefills.append(int(ids.shape[0]))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        batch = llm.complete_batch(mixed)  # type: ignore[attr-defined]
    finally:
        handle.remove()
    # Two sampling settings: six requests in two batches of 3, the other two in one.
    assert sorted(prefills) == [2, 3, 3]
    alone = [llm.complete(m, d) for m, d, _ in mixed]
    assert [a.text for a in alone] == [b.text for b in batch]
    assert [b.completion_tokens for b in batch][::4] == [8, 8]


def test_batch_size_is_a_setting_and_defaults_to_a_few_on_the_cpu(tiny: Path):
    from popcorn.config import load_settings
    from popcorn.llm.hf import CPU_BATCH, load_model

    settings = load_settings(environ={"POPCORN_LLM_BATCH_SIZE": "16"})
    assert settings.llm.options().batch_size == 16
    assert load_settings(environ={}).llm.options().batch_size == 0
    llm = create_llm(f"hf:{tiny}", LLMOptions(device_map="cpu"))
    _, model = load_model(str(tiny), LLMOptions(device_map="cpu"))
    assert llm.batch_size(model, 500, 128) == CPU_BATCH  # type: ignore[attr-defined]


def test_the_gpu_batch_follows_free_memory():
    from popcorn.llm.hf import MAX_BATCH, auto_batch_size

    # Qwen2.5-7B's published sizes, bf16, a 500-token prompt and 1,024 new tokens.
    qwen = SimpleNamespace(
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        hidden_size=3584,
        intermediate_size=18944,
        vocab_size=152064,
    )
    gib = 2**30
    sizes = [auto_batch_size(int(f * gib), qwen, 1524, 500, 2) for f in (0.1, 8, 20, 60)]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] == MAX_BATCH
    # 8 GiB free: 70% of it over (83 MiB of cache + 56 MiB of prefill + 3.5 MiB of logits)
    assert sizes[1] == int(0.7 * 8 * gib) // (
        2 * 28 * 4 * 128 * 2 * 1524 + 500 * (3 * 18944 + 4 * 3584) * 2 + 6 * 152064 * 4
    )
