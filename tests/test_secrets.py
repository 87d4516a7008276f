"""Credentials never reach a file or the terminal, even from an endpoint that echoes them back;
and with both an API key and user:password in the base URL, the key is what is sent.

The endpoint is a small HTTP server on loopback standing in for a remote API that rejects every
request with a 401 quoting the credentials it received: as the whole Authorization header, as
the bare token, and (for HTTP Basic) decoded to ``user:password``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Not key-shaped (no "sk-"): only the provider registering it can keep it out of records.
KEY = "local-key-7f3a9c2e1b"
USER, PASSWORD = "alice", "hunter2-Zq9x"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (KEY, PASSWORD, f"{USER}:{PASSWORD}", BASIC)


@dataclass
class EchoEndpoint:
    """Answers every POST with HTTP 401 and a message that repeats the request's credentials."""

    url: str = ""
    port: int = 0
    padding: int = 0
    """Characters of filler before the echo, to push it across a message length limit."""
    received: list[str | None] = field(default_factory=list)

    def with_credentials(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}/v1"


def _echo_handler(endpoint: EchoEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            header = self.headers.get("authorization")
            endpoint.received.append(header)
            scheme, _, token = (header or "").partition(" ")
            decoded = base64.b64decode(token).decode() if scheme == "Basic" else token
            filler = "x" * endpoint.padding + " " if endpoint.padding else ""
            message = f"{filler}{token} is not valid ({decoded}); you sent Authorization: {header}"
            payload = json.dumps({"error": {"message": message, "type": "auth"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def echo() -> Iterator[EchoEndpoint]:
    endpoint = EchoEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _echo_handler(endpoint))
    server.daemon_threads = True
    endpoint.port = int(server.server_address[1])
    endpoint.url = f"http://127.0.0.1:{endpoint.port}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def files_leaking(root: Path) -> dict[str, list[str]]:
    """Every file under ``root`` (manifests, SQLite ledgers, tables, pages) holding a secret."""
    found = {}
    for file in sorted(root.rglob("*")):
        if file.is_file() and (hit := leaks(file.read_bytes())):
            found[str(file.relative_to(root))] = hit
    return found


def test_an_echoed_key_and_url_password_reach_no_file_and_no_output(
    cli, monkeypatch, tmp_path: Path, echo: EchoEndpoint
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = echo.with_credentials()
    result = cli(
        "generate", "a cat", "--llm", "openai:some-model", "--base-url", url, "--out", "runs"
    )
    assert result.code == 1, result.err
    assert "HTTP 401" in result.err and "[redacted]" in result.err, result.err
    assert leaks(result.out + result.err) == []
    (manifest,) = Path("runs").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["status"] == "failed"
    assert files_leaking(tmp_path) == {}


def test_url_credentials_alone_are_sent_as_basic_and_their_echo_is_redacted(
    cli, tmp_path: Path, echo: EchoEndpoint
):
    url = echo.with_credentials()
    result = cli(
        "generate", "a cat", "--llm", "openai:some-model", "--base-url", url, "--out", "runs"
    )
    assert result.code == 1
    assert echo.received == [f"Basic {BASIC}"]
    assert "rejected the user:password of the base URL (HTTP 401)" in result.err, result.err
    assert leaks(result.out + result.err) == []
    assert files_leaking(tmp_path) == {}


def test_with_a_key_and_url_credentials_the_key_is_sent_and_a_warning_says_so_once(
    cli, caplog, monkeypatch, echo: EchoEndpoint
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = echo.with_credentials()
    for query in ("a cat", "a dog"):  # two generators, two backends for the same endpoint
        cli("generate", query, "--llm", "openai:some-model", "--base-url", url, "--out", "runs")
    assert echo.received == [f"Bearer {KEY}", f"Bearer {KEY}"]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "popcorn.llm.openai_compat" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "the key is sent as the bearer token" in warnings[0]
    assert leaks(warnings[0]) == []


def write_study(folder: Path, llm: str) -> Path:
    (folder / "q.txt").write_text("A cat learning to skateboard\nStreet food at night\n")
    path = folder / "study.toml"
    path.write_text(
        f'[study]\nllms = ["{llm}"]\nvideos = ["none"]\ncovers = ["none"]\n\n'
        '[queries]\nq = "q.txt"\n'
    )
    return path


def test_a_study_against_an_echoing_endpoint_keeps_every_record_clean(
    cli, monkeypatch, tmp_path: Path, echo: EchoEndpoint
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", echo.with_credentials())
    study = write_study(tmp_path, "openai:some-model")
    ran = cli("study", "run", str(study), "--json")
    assert leaks(ran.out + ran.err) == []
    assert echo.received == [f"Bearer {KEY}"] * 2
    reported = cli("study", "report", str(study))
    assert reported.code == 0, reported.err
    assert leaks(reported.out + reported.err) == []
    folder = tmp_path / "study.study"
    md = (folder / "report" / "report.md").read_text()
    assert "| script | 2 |" in md and "[redacted]" in md
    for name in ("ledger.sqlite", "report/results.csv", "report/report.md", "report/report.html"):
        assert (folder / name).is_file(), name
    assert files_leaking(tmp_path) == {}


def test_a_report_of_an_older_ledger_redacts_the_keys_of_this_environment(
    cli, monkeypatch, tmp_path: Path
):
    """A ledger written before errors were redacted at the source still holds the raw text; the
    report process builds no backend, so it must learn the secrets from the environment."""
    from popcorn.study.run import open_ledger
    from popcorn.study.spec import load_study

    # Secrets of their own: earlier tests registered KEY and PASSWORD in this process already.
    key, password = "report-only-key-41c9e8", "report-only-pw-93b1"
    monkeypatch.setenv("DEEPSEEK_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", f"https://bob:{password}@llm.example.com/v1")
    spec = load_study(write_study(tmp_path, "deepseek:deepseek-chat"))
    ledger = open_ledger(spec)
    try:
        ledger.add(spec.jobs())
        for job in spec.jobs():
            ledger.fail(job.key, "script", f"endpoint rejected {key} (sent bob:{password})")
    finally:
        ledger.close()
    assert cli("study", "report", str(tmp_path / "study.toml")).code == 0
    report = tmp_path / "study.study" / "report"
    for file in report.iterdir():
        assert key.encode() not in file.read_bytes(), file.name
        assert password.encode() not in file.read_bytes(), file.name
    assert "endpoint rejected [redacted] (sent [redacted])" in (report / "report.md").read_text()


def test_a_key_cut_in_half_by_the_message_limit_is_still_redacted(monkeypatch, echo: EchoEndpoint):
    from popcorn.errors import ProviderError
    from popcorn.llm.base import Decoding
    from popcorn.llm.registry import LLMOptions, create_llm

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    echo.padding = 290  # the server's text is cut at 300 characters, inside the echoed key
    llm = create_llm("openai:some-model", LLMOptions(base_url=echo.url))
    with pytest.raises(ProviderError) as caught:
        llm.complete([{"role": "user", "content": "hi"}], Decoding())
    assert echo.received == [f"Bearer {KEY}"]
    assert KEY[:9] not in str(caught.value), str(caught.value)


def test_error_line_redacts_registered_secrets_and_credential_shapes():
    from popcorn.errors import error_line
    from popcorn.safety import register_secret

    register_secret(KEY)
    line = error_line(RuntimeError(f"plugin said {KEY} and Authorization: Basic {BASIC}\nmore"))
    assert line == "RuntimeError: plugin said [redacted] and Authorization: [redacted]"


@pytest.mark.parametrize(
    "prose",
    [
        "the basic settings are fine",
        "token budget exceeded",
        "Basic Setting",
        "mode basic failed at script",
    ],
)
def test_redact_leaves_prose_that_only_looks_like_a_scheme_word(prose: str):
    from popcorn.safety import redact

    assert redact(prose) == prose


def test_redact_url_keeps_host_and_port_as_written():
    from popcorn.llm.openai_compat import redact_url

    assert redact_url("http://u:p@[::1]:8080/v1") == "http://[::1]:8080/v1"
    assert redact_url("https://u:p%40x@api.example.com/v1") == "https://api.example.com/v1"
    assert redact_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    "url", [f"http://{USER}:{PASSWORD}@[::1/v1", f"http://{USER}:{PASSWORD}@host:99999/v1"]
)
def test_a_malformed_base_url_is_a_one_line_error_without_its_password(cli, url: str):
    result = cli("generate", "a cat", "--llm", "openai:m", "--base-url", url, "--out", "runs")
    assert result.code == 1, result.err
    assert "is not an http(s) URL" in result.err and len(result.err.strip().splitlines()) == 1
    assert leaks(result.err) == []
