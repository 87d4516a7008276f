"""``llm:MODEL``: models of the ``llm`` library through its Python API, tested against a real
OpenAI-compatible server on loopback (llama.cpp with SmolLM2, or the scripted fault proxy)
that llm reaches through its own ``extra-openai-models.yaml``, in a temporary LLM_USER_PATH."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from conftest import FaultProxy, free_port
from popcorn.llm.base import Decoding
from popcorn.llm.llmlib import option_values

KEY = "sk-llm-store-SECRET-0042"
GOOD = {
    "title": "Kitten Skateboards the Half-Pipe",
    "cover_prompt": "A fluffy orange kitten on a tiny skateboard in a sunny skate park",
    "video_prompt": "The kitten pushes off, rolls down the ramp and lands a wobbly ollie",
}


@pytest.fixture(autouse=True)
def llm_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """llm's user folder (models, keys) in this test's folder, never the user's own."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    return home


def configure(home: Path, api_base: str, *, key: str | None = KEY, schema: bool = True) -> None:
    """Name the loopback server as llm model ``local-smol``, as a user would in llm's YAML."""
    lines = [
        "- model_id: local-smol",
        "  model_name: smollm2",
        f"  api_base: {api_base}",
        "  api_key_name: popcorn-test",
    ]
    if schema:
        lines.append("  supports_schema: true")
    (home / "extra-openai-models.yaml").write_text("\n".join(lines) + "\n")
    if key is not None:
        (home / "keys.json").write_text(json.dumps({"popcorn-test": key}))


def files_hold(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --- option mapping -------------------------------------------------------------------------


def test_decoding_goes_under_the_names_openai_models_declare():
    import llm

    options_class = llm.get_model("gpt-4o-mini").Options
    values, notes = option_values(options_class, Decoding(0.7, 0.9, 1.1, 42, 1024))
    assert values == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024, "seed": 42}
    assert notes == {"repetition_penalty": "not an option of this model; not sent"}


class PluginOptions(BaseModel):
    """Options as another plugin might declare them: other names, a narrower range."""

    temperature: float | None = Field(default=None, ge=0, le=0.5)
    max_output_tokens: int | None = None
    repeat_penalty: float | None = None


def test_other_option_names_are_found_and_refused_values_left_out_with_a_note():
    values, notes = option_values(PluginOptions, Decoding(0.7, 0.9, 1.1, 7, 256))
    assert values == {"max_output_tokens": 256, "repeat_penalty": 1.1}
    assert notes["temperature"] == "0.7 refused by this model's options; not sent"
    assert notes["top_p"] == notes["seed"] == "not an option of this model; not sent"


# --- errors: one line naming the fix ----------------------------------------------------------


def test_unknown_model_is_one_line_pointing_at_llm_models(cli):
    result = cli("generate", "A cat learning to skateboard", "--llm", "llm:no-such-model")
    assert result.code == 1
    line = result.err.strip()
    assert "\n" not in line and "no-such-model" in line and "`llm models`" in line


def test_missing_key_names_llm_keys_set(cli, llm_home: Path, fault_proxy: FaultProxy):
    configure(llm_home, fault_proxy.url, key=None)
    result = cli("generate", "A cat learning to skateboard", "--llm", "llm:local-smol")
    assert result.code == 1
    line = result.err.strip()
    assert "\n" not in line and "`llm keys set popcorn-test`" in line
    assert fault_proxy.requests == []  # refused before any request


def test_rejected_key_is_one_line_and_the_key_is_never_shown(
    cli, llm_home: Path, fault_proxy: FaultProxy
):
    configure(llm_home, fault_proxy.url)
    # A server that echoes the credentials it was sent.
    fault_proxy.fail_next(401, json.dumps({"error": {"message": f"bad key Bearer {KEY}"}}))
    result = cli("generate", "A cat", "--llm", "llm:local-smol", "--out", "runs")
    assert result.code == 1
    assert fault_proxy.requests[0]["authorization"] == f"Bearer {KEY}"
    line = result.err.strip()
    assert "\n" not in line and "HTTP 401" in line and "`llm keys set popcorn-test`" in line
    assert KEY not in result.err + result.out
    assert list(Path("runs").rglob("manifest.json"))  # the failed run was recorded...
    assert files_hold(Path("runs"), KEY) == []  # ...without the key


def test_refused_connection_to_a_loopback_server_is_not_retried(cli, caplog, llm_home: Path):
    configure(llm_home, f"http://127.0.0.1:{free_port()}/v1")
    result = cli("generate", "A cat", "--llm", "llm:local-smol", "--out", "runs")
    assert result.code == 1
    line = result.err.strip()
    assert "\n" not in line and "connection refused" in line and "running?" in line
    assert "retrying" not in caplog.text


def test_rate_limit_is_retried_by_popcorn_after_the_sdk_gives_up(
    cli, caplog, llm_home: Path, fault_proxy: FaultProxy
):
    configure(llm_home, fault_proxy.url, schema=False)
    for _ in range(3):  # the openai SDK under llm retries twice on its own, then gives up
        fault_proxy.fail_next(429, retry_after="0.01")
    fault_proxy.answer_next(json.dumps(GOOD))
    # One attempt: the quality gate's own retries are not what this test is about.
    result = cli(
        "generate",
        "A cat learning to skateboard",
        "--llm",
        "llm:local-smol",
        "--json",
        "--attempts",
        "1",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["title"] == GOOD["title"]
    assert "HTTP 429" in caplog.text and "retrying" in caplog.text


def test_paper_profile_sends_only_the_model_and_the_messages(
    cli, llm_home: Path, fault_proxy: FaultProxy
):
    configure(llm_home, fault_proxy.url)
    fault_proxy.answer_next(json.dumps(GOOD))
    result = cli(
        "generate", "A cat", "--llm", "llm:local-smol", "--profile", "paper", "--attempts", "1"
    )
    assert result.code == 0, result.err
    body = fault_proxy.requests[0]["body"]
    assert isinstance(body, dict)
    sent = set(body) - {"stream"}
    assert sent == {"model", "messages"} and body["model"] == "smollm2"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_earlier_turns_reach_the_server_in_order(cli, llm_home: Path, fault_proxy: FaultProxy):
    configure(llm_home, fault_proxy.url, schema=False)
    long_title = "A Kitten Who Learns to Skateboard in the Big Sunny Skate Park Today"
    fault_proxy.answer_next(json.dumps({**GOOD, "title": long_title}))
    fault_proxy.answer_next(json.dumps(GOOD))
    result = cli(
        "generate",
        "A cat learning to skateboard",
        "--llm",
        "llm:local-smol",
        "--json",
        "--attempts",
        "1",
    )
    assert result.code == 0, result.err
    # The request for a shorter title carries the first exchange before it.
    body = fault_proxy.requests[1]["body"]
    assert isinstance(body, dict)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert long_title in body["messages"][2]["content"]
    assert json.loads(result.out)["title"] == GOOD["title"]


# --- end to end against llama.cpp's server ----------------------------------------------------


@pytest.mark.slow
def test_generate_through_llm_against_a_real_llama_cpp_server(
    cli, llm_home: Path, llama_proxy: FaultProxy
):
    configure(llm_home, llama_proxy.url)
    result = cli(
        "generate",
        "A cat learning to skateboard",
        "--llm",
        "llm:local-smol",
        "--out",
        "runs",
        "--json",
    )
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["llm"] == "llm:local-smol" and answer["title"]

    bodies = [r["body"] for r in llama_proxy.requests]
    assert all(r["authorization"] == f"Bearer {KEY}" for r in llama_proxy.requests)
    # llama-cpp-python's server refuses json_schema: asked again without it, for good.
    first, last = bodies[0], bodies[-1]
    assert first["response_format"]["type"] == "json_schema"
    assert "response_format" not in last
    assert first["model"] == "smollm2" and first["seed"] == 42 and first["max_tokens"] == 1024
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9

    (manifest_path,) = Path("runs").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["usage"]["prompt_tokens"] > 0  # llm's token counts reach the manifest
    llm_record = manifest["llm"]
    assert llm_record["provider"] == "llm" and llm_record["model"] == "local-smol"
    assert llm_record["model_name"] == "smollm2" and llm_record["base_url"] == llama_proxy.url
    assert llm_record["notes"]["json_schema"] == "rejected by the model; parsed from free text"
    assert llm_record["notes"]["repetition_penalty"] == "not an option of this model; not sent"
    assert files_hold(Path("runs"), KEY) == []
    assert KEY not in result.err

    # The same request again is the same job: answered from the run store.
    again = cli(
        "generate",
        "A cat learning to skateboard",
        "--llm",
        "llm:local-smol",
        "--out",
        "runs",
        "--json",
    )
    assert json.loads(again.out)["cached"] is True
