"""The OpenAI-compatible backend against llama.cpp's own server on loopback (SmolLM2), with a
proxy in front that injects the faults real endpoints produce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FaultProxy

pytestmark = pytest.mark.slow

QUERIES = [
    "A cat learning to skateboard",
    "Discuss how anime portrays futuristic cities",
    "Street food in Bangkok at night",
    "Animate a battle between a samurai and a dragon",
]
GOOD = {
    "title": "Kitten Skateboards the Half-Pipe",
    "cover_prompt": "A fluffy orange kitten on a tiny skateboard in a sunny skate park",
    "video_prompt": "The kitten pushes off, rolls down the ramp and lands a"
    " wobbly ollie, low-angle shot",
}


def manifests(root: str = "runs") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob("*/manifest.json"))]


def test_generate_against_a_real_llama_cpp_server(cli, monkeypatch, llama_proxy: FaultProxy):
    secret = "sk-local-SECRET-123456"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    result = cli(
        "-v",
        "generate",
        QUERIES[0],
        "--llm",
        "openai:smollm2",
        "--base-url",
        llama_proxy.url,
        "--out",
        "runs",
        "--json",
    )
    assert result.code == 0, result.err
    obj = json.loads(result.out)
    assert obj["llm"] == "openai:smollm2" and obj["title"]
    request = llama_proxy.requests[-1]["body"]
    # The first attempt has seed 42; the gate may ask again with the next seeds (a restated
    # title, a video prompt that is no shot).
    assert llama_proxy.requests[0]["body"]["seed"] == 42 and request["seed"] in (42, 43, 44)
    assert request["temperature"] == 0.7 and request["top_p"] == 0.9
    assert request["repetition_penalty"] == 1.1
    # llama-cpp-python's server refuses json_schema (HTTP 500) and takes json_object + schema.
    assert llama_proxy.requests[0]["body"]["response_format"]["type"] == "json_schema"
    assert request["response_format"]["type"] == "json_object"
    assert request["response_format"]["schema"]["required"] == [
        "title",
        "cover_prompt",
        "video_prompt",
    ]
    (manifest,) = manifests()
    assert manifest["llm"]["base_url"] == llama_proxy.url
    assert manifest["llm"]["notes"]["json_schema"] == "requested as json_object"
    assert manifest["usage"]["prompt_tokens"] > 0
    assert secret not in result.err
    for file in Path("runs").rglob("*"):
        assert not file.is_file() or secret.encode() not in file.read_bytes()


def batch_args(tmp_path: Path, proxy: FaultProxy, concurrency: int) -> list[str]:
    """The command line of a batch of QUERIES against ``proxy``."""
    queries = tmp_path / "q.txt"
    queries.write_text("\n".join(QUERIES) + "\n")
    return [
        "generate",
        "--queries",
        str(queries),
        "--llm",
        "openai:smollm2",
        "--base-url",
        proxy.url,
        "--out",
        "runs",
        "--concurrency",
        str(concurrency),
    ]


def test_batch_runs_concurrently_and_resumes(cli, tmp_path: Path, llama_proxy: FaultProxy):
    args = batch_args(tmp_path, llama_proxy, concurrency=3)
    first = cli(*args)
    assert first.code == 0, first.err
    assert "4 of 4 done (4 new, 0 already done), 0 failed" in first.err
    sent = len(llama_proxy.requests)

    again = cli(*args)
    assert "4 of 4 done (0 new, 4 already done)" in again.err
    assert len(llama_proxy.requests) == sent  # nothing asked twice

    # A run cut off mid-way (status still "running") is redone; finished ones are not.
    cut = next(Path("runs").glob("street-food*/manifest.json"))
    data = json.loads(cut.read_text())
    data["status"] = "running"
    cut.write_text(json.dumps(data))
    third = cli(*args)
    assert "4 of 4 done (1 new, 3 already done)" in third.err
    redone = [r["body"]["messages"][-1]["content"] for r in llama_proxy.requests[sent:]]
    assert redone and all("Street food in Bangkok" in m for m in redone)


def test_rate_limit_is_retried_after_the_servers_delay(cli, caplog, llama_proxy: FaultProxy):
    llama_proxy.fail_next(429, '{"error": {"message": "slow down"}}', retry_after="1")
    llama_proxy.fail_next(503)
    result = cli(
        "generate",
        QUERIES[0],
        "--llm",
        "openai:smollm2",
        "--base-url",
        llama_proxy.url,
        "--json",
        "--out",
        "runs",
    )
    assert result.code == 0, result.err
    assert "HTTP 429: slow down; retrying in 1.0 s" in caplog.text
    assert "HTTP 503" in caplog.text
    assert len(llama_proxy.requests) >= 3


def test_ctrl_c_in_a_batch_keeps_finished_runs_and_rerun_resumes(
    cli, tmp_path: Path, llama_proxy: FaultProxy
):
    llama_proxy.delay = 0.5
    popcorn = Path(sys.executable).with_name("popcorn")
    args = batch_args(tmp_path, llama_proxy, concurrency=1)
    proc = subprocess.Popen(
        [str(popcorn), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    deadline = time.monotonic() + 120
    while not any(m["status"] == "done" for m in manifests()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted after" in err and "Traceback" not in err
    done_before = sum(m["status"] == "done" for m in manifests())
    assert 1 <= done_before < len(QUERIES)

    llama_proxy.delay = 0
    resumed = cli(*args)
    assert resumed.code == 0, resumed.err
    assert f"({len(QUERIES) - done_before} new, {done_before} already done)" in resumed.err


def scripted(cli, proxy: FaultProxy, *answers: str, attempts: int = 3):
    for answer in answers:
        proxy.answer_next(answer)
    return cli(
        "generate",
        QUERIES[0],
        "--llm",
        "openai:m",
        "--base-url",
        proxy.url,
        "--json",
        "--out",
        "runs",
        "--attempts",
        str(attempts),
    )


def test_long_title_is_asked_again_once(cli, fault_proxy: FaultProxy):
    long = dict(GOOD, title="An Extremely Long Title About A Kitten Who Learns To Skate Today")
    result = scripted(cli, fault_proxy, json.dumps(long), json.dumps(GOOD))
    obj = json.loads(result.out)
    assert obj["title"] == GOOD["title"] and obj["flags"] == []
    follow_up = fault_proxy.requests[1]["body"]["messages"]
    assert "the limit is 50" in follow_up[-1]["content"]


def test_long_title_twice_is_shortened_at_a_word_and_flagged(cli, fault_proxy: FaultProxy):
    long = dict(GOOD, title="An Extremely Long Title About A Kitten Who Learns To Skate Today")
    result = scripted(cli, fault_proxy, json.dumps(long), json.dumps(long))
    obj = json.loads(result.out)
    assert obj["title"] == "An Extremely Long Title About A Kitten Who Learns"
    assert obj["flags"] == ["title_shortened"]
    transcript = json.loads(Path(obj["run_dir"], "transcript.json").read_text())
    assert transcript["attempts"][0]["title_retry"]["raw"] == json.dumps(long)


def test_unusable_answers_end_in_an_error_naming_the_reason(cli, fault_proxy: FaultProxy):
    answers = [
        "I'm sorry, but I can't help with that.",
        '{"title": "Kitten", "cover_pro',
        "<think>Let me think about {this}",
    ]
    result = scripted(cli, fault_proxy, *answers)
    assert result.code == 1 and "Traceback" not in result.err
    assert "no usable script after 3 attempt(s)" in result.err
    assert "unclosed <think> block" in result.err and "transcript.json" in result.err
    (manifest,) = manifests()
    assert manifest["status"] == "failed" and manifest["error"]["reason"] == "truncated"
    run_dir = next(Path("runs").iterdir())
    transcript = json.loads((run_dir / "transcript.json").read_text())
    assert [a["raw"] for a in transcript["attempts"]] == answers
    assert [a["outcome"]["reason"] for a in transcript["attempts"]] == [
        "refusal",
        "truncated",
        "truncated",
    ]
    assert [a["seed"] for a in transcript["attempts"]] == [42, 43, 44]


def test_reasoning_is_kept_beside_the_script(cli, fault_proxy: FaultProxy):
    answer = (
        "<think>Cats + skateboards = views. {draft}</think>\n```json\n" + json.dumps(GOOD) + "\n```"
    )
    result = scripted(cli, fault_proxy, answer)
    obj = json.loads(result.out)
    saved = json.loads(Path(obj["run_dir"], "script.json").read_text())
    assert saved["reasoning"].startswith("Cats + skateboards")
    assert saved["script"]["title"] == GOOD["title"]


def test_endpoint_without_json_schema_support_falls_back(cli, fault_proxy: FaultProxy):
    refusal = '{"error": {"message": "response_format: this type is not supported"}}'
    fault_proxy.fail_next(400, refusal)
    fault_proxy.fail_next(422, refusal)
    result = scripted(cli, fault_proxy, json.dumps(GOOD))
    assert result.code == 0, result.err
    formats = [r["body"].get("response_format", {}).get("type") for r in fault_proxy.requests]
    assert formats == ["json_schema", "json_object", None]
    (manifest,) = manifests()
    assert manifest["llm"]["notes"]["json_schema"].startswith("rejected by the endpoint")
