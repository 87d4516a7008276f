"""``vllm:MODEL``: what our settings become in vLLM's engine and sampling parameters. vLLM
itself needs a CUDA GPU and is not installed here: these tests pin the mapping, and a stand-in
for the ``vllm`` module (the one thing that cannot run here) checks the call's shape."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from popcorn.errors import MissingDependencyError, ProviderError
from popcorn.llm.base import Decoding, LLMOptions
from popcorn.llm.registry import create_llm
from popcorn.llm.vllm_engine import VLLMEngine, engine_kwargs, sampling_kwargs

SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}}


def test_decoding_maps_to_sampling_parameters_with_a_seed_per_request():
    decoding = Decoding(temperature=0.7, top_p=0.9, repetition_penalty=1.1, seed=43, max_tokens=99)
    assert sampling_kwargs(decoding, None) == {
        "temperature": 0.7,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "seed": 43,
        "max_tokens": 99,
    }
    assert sampling_kwargs(decoding, SCHEMA)["json_schema"] == SCHEMA


def test_engine_options_map_to_vllm_quantisation():
    assert engine_kwargs("m", LLMOptions()) == {"model": "m", "seed": 0}
    four = engine_kwargs("m", LLMOptions(load_in_4bit=True, dtype="bfloat16"))
    assert four["quantization"] == "bitsandbytes" and four["dtype"] == "bfloat16"
    with pytest.raises(ProviderError, match="8-bit"):
        engine_kwargs("m", LLMOptions(load_in_8bit=True))


def test_without_vllm_the_call_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    llm = create_llm("vllm:Qwen/Qwen2.5-7B-Instruct")
    assert llm.spec == "vllm:Qwen/Qwen2.5-7B-Instruct" and llm.concurrent and llm.batched
    with pytest.raises(MissingDependencyError, match=r"popcorn-video\[vllm\]"):
        llm.complete([{"role": "user", "content": "hi"}], Decoding())


def _fake_vllm(with_structured_outputs: bool) -> tuple[types.ModuleType, list[Any]]:
    calls: list[Any] = []

    class Output:
        def __init__(self, n: int) -> None:
            self.prompt_token_ids = [1, 2, 3]
            first = types.SimpleNamespace(
                text=f"answer {n}", token_ids=[4, 5], finish_reason="stop"
            )
            self.outputs = [first]

    class Engine:
        def __init__(self, **kwargs: Any) -> None:
            calls.append(("engine", kwargs))

        def chat(self, conversations: list[Any], params: list[Any], use_tqdm: bool) -> list[Any]:
            calls.append(("chat", conversations, params))
            return [Output(n) for n in range(len(conversations))]

    params = types.SimpleNamespace()
    if with_structured_outputs:
        params.StructuredOutputsParams = lambda json: ("structured", json)
    else:
        params.GuidedDecodingParams = lambda json: ("guided", json)
    module = types.ModuleType("vllm")
    module.LLM = Engine  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kw: kw  # type: ignore[attr-defined]
    module.sampling_params = params  # type: ignore[attr-defined]
    return module, calls


@pytest.mark.parametrize("structured", [True, False])
def test_a_batch_is_one_engine_call_with_each_requests_own_parameters(
    monkeypatch: pytest.MonkeyPatch, structured: bool
):
    module, calls = _fake_vllm(structured)
    monkeypatch.setitem(sys.modules, "vllm", module)
    llm = VLLMEngine("m", LLMOptions())
    requests = [
        ([{"role": "user", "content": f"q{i}"}], Decoding(seed=42 + i), SCHEMA) for i in range(3)
    ]
    answers = llm.complete_batch(requests)
    assert [a.text for a in answers] == ["answer 0", "answer 1", "answer 2"]
    assert answers[0].completion_tokens == 2 and answers[0].prompt_tokens == 3
    chats = [c for c in calls if c[0] == "chat"]
    assert len(chats) == 1  # one engine call for the batch
    _, conversations, params = chats[0]
    assert [c[0]["content"] for c in conversations] == ["q0", "q1", "q2"]
    assert [p["seed"] for p in params] == [42, 43, 44]
    key = "structured_outputs" if structured else "guided_decoding"
    assert all(p[key][1] == SCHEMA for p in params)
    assert len([c for c in calls if c[0] == "engine"]) == 1
    llm.complete(*requests[0])
    assert len([c for c in calls if c[0] == "engine"]) == 1  # loaded once


def test_vllm_is_listed(cli):
    assert "vllm:MODEL_ID" in cli("llms").out
