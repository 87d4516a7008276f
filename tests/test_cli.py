"""The command line: fast start, and one-line errors for every user mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FaultProxy, free_port

HEAVY = ("torch", "transformers", "llama_cpp", "diffusers")


def error_line(result) -> str:
    """The message of a failed command if it failed the way users should see: a non-zero exit
    and one line on stderr, no traceback. Anything else gives ''."""
    text = result.err.strip()
    if result.code == 0 or "Traceback" in text or "\n" in text:
        return ""
    return text


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["llms"]])
def test_help_and_listing_import_no_heavy_library(args: list[str]):
    code = (
        "import sys\nfrom popcorn.cli.main import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_llms_lists_every_backend_form(cli):
    result = cli("llms")
    assert result.code == 0
    for form in (
        "embedded",
        "gguf:PATH",
        "openai:MODEL",
        "deepseek:MODEL",
        "ollama:MODEL",
        "hf:MODEL_ID",
    ):
        assert form in result.out


@pytest.mark.parametrize("query", ["", "   \t  "])
def test_empty_query(cli, query: str):
    line = error_line(cli("generate", query))
    assert line and "the query is empty" in line, line


def test_query_over_2000_characters(cli):
    line = error_line(cli("generate", "x" * 2001))
    assert line and "2,001 characters" in line and "2,000" in line, line


def test_unknown_llm_lists_valid_forms(cli):
    line = error_line(cli("generate", "a cat", "--llm", "gpt5"))
    assert (
        line and "unknown LLM 'gpt5'" in line and "openai:MODEL" in line and "hf:MODEL_ID" in line
    ), line


def test_provider_needs_its_argument(cli):
    line = error_line(cli("generate", "a cat", "--llm", "openai:"))
    assert line and "openai:MODEL" in line, line


@pytest.mark.parametrize(
    ("spec", "variable"),
    [("openai:gpt-4o", "OPENAI_API_KEY"), ("deepseek:deepseek-chat", "DEEPSEEK_API_KEY")],
)
def test_missing_api_key_names_the_variable(cli, spec: str, variable: str):
    line = error_line(cli("generate", "a cat", "--llm", spec))
    assert line and variable in line, line


def test_query_and_queries_file_are_exclusive(cli, tmp_path: Path):
    line = error_line(cli("generate"))
    assert line and "give either a QUERY or --queries FILE" in line, line
    f = tmp_path / "q.txt"
    f.write_text("a\n")
    line = error_line(cli("generate", "a", "--queries", str(f)))
    assert line and "give either" in line, line


def test_missing_queries_file(cli):
    line = error_line(cli("generate", "--queries", "nope.csv", "--llm", "ollama:x"))
    assert line and "queries file not found" in line and "nope.csv" in line, line


def test_missing_gguf_file(cli):
    line = error_line(cli("generate", "a cat", "--llm", "gguf:/no/such/model.gguf"))
    assert line and "no model file" in line and "/no/such/model.gguf" in line, line


def test_file_that_is_not_gguf(cli, tmp_path: Path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    line = error_line(cli("generate", "a cat", "--llm", f"gguf:{fake}"))
    assert line and "not a GGUF file" in line, line


def test_missing_hf_folder(cli):
    line = error_line(cli("generate", "a cat", "--llm", "hf:./no-such-model"))
    assert line and "no model folder" in line, line


def test_bad_config_value(cli, tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[run]\nconcurrency = 0\n")
    line = error_line(cli("generate", "a cat", "--config", str(cfg)))
    assert line and "run.concurrency" in line, line


def test_a_local_server_that_is_not_running_fails_at_once_in_one_line(cli, monkeypatch):
    # Retrying a refused connection to this machine would not start the server.
    monkeypatch.setenv("POPCORN_LLM_RETRIES", "2")
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = cli("generate", "a cat", "--llm", "openai:m", "--base-url", url, "--out", "runs")
    line = error_line(result)
    assert line and f"is the server at {url} running?" in line, line
    assert "retrying" not in result.err and "attempts" not in line
    manifests = list(Path("runs").glob("*/manifest.json"))
    assert len(manifests) == 1 and '"status": "failed"' in manifests[0].read_text()


def test_rejected_key_is_fatal_and_never_echoed(cli, monkeypatch, fault_proxy: FaultProxy):
    secret = "sk-test-DO-NOT-LEAK-7f3a9"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    fault_proxy.fail_next(401, '{"error": {"message": "Incorrect API key provided"}}')
    result = cli(
        "generate", "a cat", "--llm", "openai:m", "--base-url", fault_proxy.url, "--out", "runs"
    )
    line = error_line(result)
    assert line and "rejected the key in OPENAI_API_KEY" in line and "HTTP 401" in line, line
    assert secret not in result.err + result.out
    assert len(fault_proxy.requests) == 1  # fatal: not retried
    assert fault_proxy.requests[0]["authorization"] == f"Bearer {secret}"
    for file in Path("runs").rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes()


def test_endpoint_that_keeps_failing_gives_up(cli, monkeypatch, fault_proxy: FaultProxy):
    monkeypatch.setenv("POPCORN_LLM_RETRIES", "3")
    for _ in range(3):
        fault_proxy.fail_next(503, retry_after="0")
    result = cli("generate", "a cat", "--llm", "openai:m", "--base-url", fault_proxy.url)
    line = error_line(result)
    assert line and "HTTP 503" in line and "gave up after 3 attempts" in line, line
    assert len(fault_proxy.requests) == 3


def test_user_password_in_base_url_is_redacted(cli, fault_proxy: FaultProxy):
    fault_proxy.fail_next(403)
    url = fault_proxy.url.replace("http://", "http://alice:hunter2@")
    result = cli("generate", "a cat", "--llm", "openai:m", "--base-url", url, "--out", "runs")
    line = error_line(result)
    assert line and "HTTP 403" in line, line
    assert "hunter2" not in result.err
    for file in Path("runs").rglob("*"):
        assert not file.is_file() or b"hunter2" not in file.read_bytes()


def test_endpoint_that_times_out_is_retried_then_fails(cli, monkeypatch, fault_proxy: FaultProxy):
    monkeypatch.setenv("POPCORN_LLM_RETRIES", "2")
    fault_proxy.delay = 1.0
    result = cli(
        "generate", "a cat", "--llm", "openai:m", "--base-url", fault_proxy.url, "--timeout", "0.2"
    )
    line = error_line(result)
    assert line and "timed out" in line and "gave up after 2 attempts" in line, line
    assert len(fault_proxy.requests) == 2
