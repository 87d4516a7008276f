"""Calls from many threads answered in batches (:class:`popcorn.llm.batching.Batcher`), and a
batch of queries on an ``hf:`` model feeding it: the same answers as one query at a time."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from popcorn.llm.batching import Batcher


def _threads(batcher: Batcher[int, int], values: Sequence[int]) -> dict[int, object]:
    results: dict[int, object] = {}
    start = threading.Barrier(len(values))

    def ask(value: int) -> None:
        start.wait()
        try:
            results[value] = batcher.submit(value)
        except Exception as error:
            results[value] = error

    threads = [threading.Thread(target=ask, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_calls_share_batches_and_get_their_own_answers():
    seen: list[list[int]] = []

    def square(batch: Sequence[int]) -> list[int]:
        seen.append(list(batch))
        return [v * v for v in batch]

    batcher: Batcher[int, int] = Batcher(square, max_batch=4, linger=0.5)
    results = _threads(batcher, range(8))
    assert results == {v: v * v for v in range(8)}
    assert sum(batcher.sizes) == 8 and max(batcher.sizes) == 4  # batches, never above the cap
    assert sorted(v for batch in seen for v in batch) == list(range(8))


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    calls = 0

    def flaky(batch: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("out of memory")
        return list(batch)

    batcher: Batcher[int, int] = Batcher(flaky, max_batch=8, linger=0.5)
    first = _threads(batcher, range(4))
    assert all(isinstance(r, RuntimeError) for r in first.values())
    assert batcher.submit(9) == 9


def test_an_answer_count_that_does_not_match_is_an_error_not_a_wrong_answer():
    batcher: Batcher[int, int] = Batcher(lambda batch: [1], max_batch=8, linger=0.5)
    results = _threads(batcher, range(3))
    assert all("got 1 answers" in str(r) for r in results.values())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from popcorn.writer.prompts import basic_messages
    from toys.llm import save_tiny_llama

    texts = [m["content"] for q in QUERIES for m in basic_messages(q)]
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts)


QUERIES = [
    "A cat learning to skateboard",
    "Street food in Bangkok at night",
    "Sunrise yoga on a rooftop",
    "Grandma reviews energy drinks",
    "Speed painting a galaxy",
    "Lego city timelapse",
]


def _answers(runs: Path) -> dict[str, list[str]]:
    """Each query's raw model answers, from the run folders' transcripts."""
    answers = {}
    for transcript in runs.rglob("transcript.json"):
        data = json.loads(transcript.read_text(encoding="utf-8"))
        query = json.loads((transcript.parent / "manifest.json").read_text())["query"]
        answers[query] = [a["raw"] for a in data["attempts"]]
    return answers


@pytest.mark.usefixtures("torch_one_thread")
def test_a_batch_of_queries_on_an_hf_model_generates_them_together(tiny: Path, tmp_path: Path):
    """``generate --queries`` with ``--concurrency 4`` on an ``hf:`` model: its calls meet in
    the model's batcher, and every query gets the answers it gets one at a time."""
    from popcorn.llm.base import Decoding
    from popcorn.llm.registry import LLMOptions, create_llm
    from popcorn.writer.queries import QueryItem
    from popcorn.writer.writer import Generator

    answers = {}
    for concurrency in (1, 4):
        llm = create_llm(f"hf:{tiny}", LLMOptions(device_map="cpu", batch_size=4))
        assert llm.concurrent and getattr(llm, "batched", False)
        out = tmp_path / f"c{concurrency}"
        generator = Generator(llm, out=out, attempts=1, decoding=Decoding(max_tokens=16))
        report = generator.batch([QueryItem(q) for q in QUERIES], concurrency=concurrency)
        assert len(report.results) + len(report.failures) == len(QUERIES)
        sizes = llm._batcher.sizes  # type: ignore[attr-defined]
        assert sum(sizes) == len(QUERIES)
        if concurrency == 1:
            assert set(sizes) == {1}
        else:
            assert max(sizes) > 1  # queries went to the model together
        answers[concurrency] = _answers(out)
    assert len(answers[1]) == len(QUERIES) and answers[4] == answers[1]
