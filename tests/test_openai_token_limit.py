"""``openai:`` sends the token limit under the name the model takes: ``max_tokens``, or
``max_completion_tokens`` for OpenAI's reasoning models and any endpoint that asks for it."""

from __future__ import annotations

import json

from conftest import FaultProxy
from popcorn.llm.base import Decoding, LLMOptions
from popcorn.llm.registry import create_llm

SCRIPT = {
    "title": "Tiny Chef, Huge Pancake",
    "cover_prompt": "A child in a chef hat flipping a giant pancake in a sunny kitchen",
    "video_prompt": "A pancake flies up in slow motion and lands back in the pan to cheers",
}
MESSAGES = [{"role": "user", "content": "A kid cooking breakfast"}]


def _llm(model: str, proxy: FaultProxy):
    return create_llm(f"openai:{model}", LLMOptions(base_url=proxy.url))


def test_chat_models_get_max_tokens_and_reasoning_models_max_completion_tokens(
    fault_proxy: FaultProxy,
):
    for model in ("gpt-4o", "o3-mini"):
        fault_proxy.answer_next(json.dumps(SCRIPT))
        _llm(model, fault_proxy).complete(MESSAGES, Decoding(max_tokens=321))
    chat, reasoning = (r["body"] for r in fault_proxy.requests)
    assert chat["max_tokens"] == 321 and "max_completion_tokens" not in chat
    assert reasoning["max_completion_tokens"] == 321 and "max_tokens" not in reasoning


def test_an_endpoint_that_names_the_parameter_gets_it_from_then_on(fault_proxy: FaultProxy):
    refusal = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
        }
    }
    fault_proxy.fail_next(400, json.dumps(refusal))
    fault_proxy.answer_next(json.dumps(SCRIPT))
    fault_proxy.answer_next(json.dumps(SCRIPT))
    llm = _llm("my-reasoner", fault_proxy)
    first = llm.complete(MESSAGES, Decoding(max_tokens=200))
    assert "max_completion_tokens" in first.notes["max_tokens"]
    llm.complete(MESSAGES, Decoding(max_tokens=200))
    bodies = [r["body"] for r in fault_proxy.requests]
    assert "max_tokens" in bodies[0]
    assert bodies[1]["max_completion_tokens"] == 200 and "max_tokens" not in bodies[1]
    assert bodies[2]["max_completion_tokens"] == 200  # remembered
