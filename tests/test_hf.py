"""The ``hf:`` backend on a tiny Llama built here: a tokenizer trained on the prompt, a model
trained for a few seconds to answer one query with a JSON script, both saved with
``save_pretrained`` and loaded back through popcorn's own loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popcorn.llm.base import Decoding
from popcorn.llm.registry import LLMOptions, create_llm
from popcorn.writer.prompts import basic_messages

pytestmark = pytest.mark.slow

QUERY = "A cat learning to skateboard"
ANSWER = {
    "title": "Kitten Skateboards the Half-Pipe",
    "cover_prompt": "A fluffy orange kitten on a tiny skateboard in a sunny skate park",
    "video_prompt": "The kitten pushes off, rolls down the ramp and lands a"
    " wobbly ollie, low-angle shot",
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from toys.llm import tiny_llama as random_llama
    from toys.llm import tokenizer as train_tokenizer

    torch.manual_seed(0)
    messages = basic_messages(QUERY)
    answer = json.dumps(ANSWER)
    tokenizer = train_tokenizer([m["content"] for m in messages] + [answer])
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt + answer + "<|end|>", return_tensors="pt")["input_ids"]
    n_prompt = len(tokenizer(prompt)["input_ids"])
    model = random_llama(tokenizer)
    labels = ids.clone()
    labels[:, :n_prompt] = -100  # learn the answer, not the prompt
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
        if loss.item() < 0.002:
            break
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_hf_model_from_a_local_folder_writes_the_script(cli, tiny_llama: Path):
    result = cli(
        "generate",
        QUERY,
        "--llm",
        f"hf:{tiny_llama}",
        "--device-map",
        "cpu",
        "--max-tokens",
        "200",
        "--out",
        "runs",
        "--json",
    )
    assert result.code == 0, result.err
    obj = json.loads(result.out)
    assert (obj["title"], obj["cover_prompt"], obj["video_prompt"]) == tuple(ANSWER.values())
    manifest = json.loads(Path(obj["run_dir"], "manifest.json").read_text())
    assert manifest["llm"]["provider"] == "transformers"
    assert manifest["usage"]["completion_tokens"] > 0
    assert "transformers" in manifest["versions"] and "torch" in manifest["versions"]


def test_hf_sampling_is_reproducible_with_a_seed(tiny_llama: Path):
    llm = create_llm(f"hf:{tiny_llama}", LLMOptions(device_map="cpu"))
    messages = basic_messages("Street food in Bangkok at night")  # not what it was trained on
    hot = Decoding(temperature=1.5, top_p=1.0, max_tokens=24)
    a = llm.complete(messages, hot)
    b = llm.complete(messages, hot)
    assert a.text == b.text and a.completion_tokens == b.completion_tokens
    assert a.prompt_tokens and a.prompt_tokens > 100
    assert a.finish_reason in {"stop", "length"}


def test_4bit_without_bitsandbytes_names_the_extra(cli, tiny_llama: Path):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    result = cli("generate", QUERY, "--llm", f"hf:{tiny_llama}", "--load-in-4bit")
    assert result.code == 1
    assert "pip install 'popcorn-video[quant]'" in result.err and "Traceback" not in result.err


def test_folder_without_a_model_is_a_clear_error(cli, tmp_path: Path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    result = cli("generate", QUERY, "--llm", f"hf:{empty}")
    assert result.code == 1 and "Traceback" not in result.err
    assert "hf: cannot load" in result.err
