"""Shared fixtures: an isolated environment, the embedded GGUF, a real llama.cpp server on
loopback, and a fault-injecting proxy in front of it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from popcorn.cli.main import main

_ENV_PREFIXES = ("POPCORN_", "OPENAI_", "DEEPSEEK_", "OLLAMA_")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Each test runs in its own folder with none of the user's popcorn or provider settings."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".user-config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``popcorn ARGS`` in-process through the real entry point and its error boundary."""

    def run(*args: str) -> CliResult:
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from popcorn.llm.llamacpp import smollm2_path

    return smollm2_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; yields its URL once it
    answers."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/api/options", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's, driven by Playwright)."""
    import shutil

    from playwright.sync_api import sync_playwright

    found = shutil.which("chromium")
    assert found, "Debian's chromium is needed: bash scripts/setup.sh --dev installs it"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=found, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def llama_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server with SmolLM2, on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(smollm2),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama.cpp server did not start within 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class FaultProxy:
    """Forwards /v1 requests to ``upstream`` unless a scripted fault is queued first."""

    upstream: str | None
    faults: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    delay: float = 0.0
    requests: list[dict[str, object]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, body: str = "", **headers: str) -> None:
        self.faults.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def answer_next(self, content: str) -> None:
        """Queue a successful reply whose message is ``content`` (what a messy model wrote)."""
        reply = {
            "id": "scripted",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        }
        self.faults.append((200, {}, json.dumps(reply)))

    def settings(self, runs: Path, profile: Any = "popcorn") -> Any:
        """Settings for ``openai:m`` behind this endpoint, writing runs under ``runs``."""
        from popcorn.config import load_settings

        flags = {"llm": {"spec": "openai:m", "base_url": self.url}, "run": {"out": str(runs)}}
        return load_settings(flags=flags, profile=profile)


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with proxy.lock:
                proxy.requests.append(
                    {
                        "path": self.path,
                        "body": json.loads(body or b"{}"),
                        "authorization": self.headers.get("authorization"),
                    }
                )
                fault = proxy.faults.popleft() if proxy.faults else None
            if proxy.delay:
                time.sleep(proxy.delay)
            if fault is not None:
                status, headers, text = fault
                self._reply(status, headers, text.encode() or b'{"error": {"message": "injected"}}')
                return
            assert proxy.upstream is not None
            upstream = httpx.post(
                proxy.upstream + self.path.removeprefix("/v1"),
                content=body,
                headers={"content-type": "application/json"},
                timeout=300,
            )
            self._reply(upstream.status_code, {}, upstream.content)

        def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is what some tests are about


@contextlib.contextmanager
def _serve(proxy: FaultProxy) -> Iterator[FaultProxy]:
    server = _QuietServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxy]:
    """An endpoint that only answers with the faults it is given (no model behind it)."""
    with _serve(FaultProxy(None)) as proxy:
        yield proxy


@pytest.fixture
def llama_proxy(llama_server: str) -> Iterator[FaultProxy]:
    """The real llama.cpp server behind a proxy that can inject faults and latency."""
    with _serve(FaultProxy(llama_server)) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def small_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor trained briefly on 120 generated videos with tiny random encoders."""
    from toys.predictor import build_toy_predictor

    return build_toy_predictor(tmp_path_factory.mktemp("small-predictor"), videos=120, seed=3)


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """A tiny model on one CPU thread: quicker than two threads fighting over a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def install_plugin(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Install a plugin package the way pip would leave it: a module plus a ``.dist-info``
    whose ``entry_points.txt`` lists its components; the registries read it again."""
    from popcorn.llm.registry import LLMS
    from popcorn.media.registry import COVER, VIDEO
    from popcorn.predictor.encoders import ENCODERS
    from popcorn.study.executors import EXECUTORS
    from popcorn.testing.plugins import install_plugin as write_plugin

    registries = (LLMS, VIDEO, COVER, ENCODERS, EXECUTORS)

    def install(module: str, source: str, entry_points: dict[str, dict[str, str]]) -> Path:
        root = write_plugin(tmp_path_factory.mktemp("site"), module, source, entry_points)
        monkeypatch.syspath_prepend(str(root))
        # An earlier test may have imported a module of the same name: load this one.
        monkeypatch.delitem(sys.modules, module, raising=False)
        for registry in registries:
            registry.refresh()
        return root

    yield install
    for registry in registries:
        registry.refresh()


@pytest.fixture(scope="session")
def make_indexed_corpus(tmp_path_factory: pytest.TempPathFactory):
    """``make(videos, seed)``: a generated MicroLens-format corpus, imported and indexed with
    the embedded MiniLM exactly as ``popcorn corpus import microlens`` and ``popcorn corpus
    index`` do; built once per session per size and seed. Tests must not change it (copy it
    first)."""
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_microlens
    from popcorn.retrieval.index import build_index
    from popcorn.retrieval.synthetic import generate_microlens

    built: dict[tuple[int, int], Path] = {}

    def make(videos: int = 220, seed: int = 5) -> Path:
        if (videos, seed) not in built:
            root = tmp_path_factory.mktemp(f"corpus-{videos}-{seed}")
            generate_microlens(root / "raw", videos=videos, seed=seed)
            corpus, report = import_microlens(root / "raw")
            corpus.save(root / "corpus", report)
            build_index(root / "corpus", Embedder())
            built[videos, seed] = root / "corpus"
        return built[videos, seed]

    return make


@pytest.fixture(scope="session")
def indexed_corpus(make_indexed_corpus) -> Path:
    """The corpus most tests share: 220 generated videos (10 per category), indexed."""
    return make_indexed_corpus()
