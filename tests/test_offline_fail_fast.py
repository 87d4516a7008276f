"""A missing model, server or package answers at once, in one line that names the fix.

"No network" is a hub endpoint on loopback that accepts connections and closes them without a
word (each connection counted), with an empty hub cache: what a machine without network
sees, and countable, so a retry loop would show. Each command runs in a fresh process: the hub
client reads its endpoint and cache once, at import, and going offline lasts a process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port

GUARD_S = 60
"""Far above the few seconds these take: only a guard against a hang."""


class SilentHub:
    """A port that reads each request's first line and closes the connection unanswered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(4096).decode("latin-1")
                except OSError:
                    head = ""
                self.requests.append(head.split("\r\n", 1)[0])


@pytest.fixture
def silent_hub() -> Iterator[SilentHub]:
    hub = SilentHub()
    yield hub
    hub.sock.close()


def _env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    return {**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), **extra}


def _popcorn(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=GUARD_S,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("popcorn: error: "), done.stderr
    return lines[0]


def test_an_hf_model_that_is_not_cached_fails_offline_in_one_line_without_retrying(
    tmp_path: Path, silent_hub: SilentHub
):
    done = _popcorn(
        _env(tmp_path, silent_hub.url),
        *("generate", "a cat", "--llm", "hf:Qwen/Qwen2.5-0.5B-Instruct", "--out", "runs"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "Qwen/Qwen2.5-0.5B-Instruct is not in the hub's cache" in line
    assert f"the hub ({silent_hub.url}) cannot be reached" in line
    assert "`popcorn pull hf:Qwen/Qwen2.5-0.5B-Instruct`" in line
    assert silent_hub.requests == ["HEAD / HTTP/1.1"]  # one look, then offline: no retries


def test_an_embedder_that_is_not_cached_fails_offline_in_one_line(
    tmp_path: Path, silent_hub: SilentHub, cli
):
    assert cli("corpus", "synth", "synth", "--videos", "30").code == 0
    assert cli("corpus", "import", "microlens", "synth", "--corpus", "corp").code == 0
    done = _popcorn(
        _env(tmp_path, silent_hub.url),
        *("corpus", "index", "--corpus", "corp", "--embedder", "minilm-l12"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "sentence-transformers/all-MiniLM-L12-v2 is not in the hub's cache" in line
    assert "`popcorn pull minilm-l12`" in line
    assert silent_hub.requests == ["HEAD / HTTP/1.1"]


def _finished_run(root: Path) -> Path:
    """A run folder holding a script, as ``generate`` leaves it, to render."""
    from popcorn.runs.store import RunManifest, RunStore
    from popcorn.script import Script

    run = RunStore(root).start(RunManifest(key="k" * 64, query="a cat", mode="basic"))
    script = Script("Skate cat", "A cat on a skateboard", "The cat rolls down a ramp")
    run.write_json("script", "script.json", {"schema_version": 1, "script": script.to_dict()})
    run.save(status="done")
    return run.path


@pytest.mark.parametrize(
    ("media", "pull"),
    [
        (("--video", "ltx", "--cover", "none"), "ltx"),
        (("--video", "none", "--cover", "sd15"), "sd15"),
    ],
)
def test_a_diffusion_preset_that_is_not_cached_fails_offline_in_one_line(
    tmp_path: Path, silent_hub: SilentHub, media: tuple[str, ...], pull: str
):
    run = _finished_run(tmp_path / "runs")
    done = _popcorn(_env(tmp_path, silent_hub.url), "render", str(run), *media, cwd=tmp_path)
    assert done.returncode == 1
    # A cover's call arguments import SD's pipeline class first, and transformers then says
    # that torchvision is missing: that notice is the library's, the one error is ours.
    lines = [line for line in done.stderr.splitlines() if "torchvision" not in line]
    assert len(lines) == 1 and lines[0].startswith("popcorn: error: "), done.stderr
    assert f"`popcorn pull {pull}`" in lines[0] and "stacktrace" not in done.stderr
    assert silent_hub.requests == ["HEAD / HTTP/1.1"]


def _cache(hf_home: Path, repo: str, folder: Path) -> None:
    """``folder``'s files as the hub's cache holds a downloaded copy of ``repo``."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)


def test_a_cached_hf_model_loads_offline_without_asking_the_hub(
    tmp_path: Path, silent_hub: SilentHub
):
    from toys.llm import save_tiny_llama

    _cache(tmp_path / "hf-home", "toy/llama", save_tiny_llama(tmp_path / "m", ["a cat", "a dog"]))
    code = (
        "from popcorn.llm.base import LLMOptions\n"
        "from popcorn.llm.hf import load_model\n"
        "tokenizer, model = load_model('toy/llama', LLMOptions())\n"
        "print(type(model).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path, silent_hub.url),
        timeout=GUARD_S * 2,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LlamaForCausalLM"
    # Nothing asked about the model (the hub client may fetch a registry of its own).
    assert not [r for r in silent_hub.requests if "toy/llama" in r or r.startswith("HEAD /")]


def test_a_local_ollama_that_is_not_running_fails_at_once(cli, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    result = cli("generate", "a cat", "--llm", "ollama:llama3", "--out", "runs")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("is `ollama serve` running?"), result.err


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://localhost:11434/v1", True),
        ("http://127.0.0.2:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://app.localhost/v1", True),
        ("http://10.0.0.5:8000/v1", False),
        ("https://api.example.com/v1", False),
    ],
)
def test_only_a_refused_server_on_this_machine_counts_as_not_running(url: str, local: bool):
    from popcorn.llm.openai_compat import _is_loopback

    assert _is_loopback(url) is local


def _without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose Python cannot import ``modules``, as a core install lacks them."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    blocked = ", ".join(repr(m) for m in modules)
    (shim / "sitecustomize.py").write_text(
        f"import sys\nfor name in ({blocked},):\n    sys.modules[name] = None\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", "")])
    return env


def test_a_diffusion_generator_without_torch_names_the_extra(tmp_path: Path):
    llm = f"http://127.0.0.1:{free_port()}/v1"
    done = _popcorn(
        _without(tmp_path, "torch"),
        *("generate", "a cat", "--llm", "openai:m", "--base-url", llm, "--video", "ltx"),
        *("--out", "runs"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "'torch' package" in line and "pip install 'popcorn-video[diffusion]'" in line


def test_a_missing_optional_package_anywhere_is_no_internal_error(tmp_path: Path):
    done = _popcorn(_without(tmp_path, "torch"), "predictor", "train", cwd=tmp_path)
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "this needs the 'torch' package, which is not installed" in line
    assert "diffusion, hf or predictor" in line and "internal error" not in line


def test_serve_without_uvicorn_says_so_before_announcing_anything(tmp_path: Path):
    done = _popcorn(_without(tmp_path, "uvicorn"), "serve", "--port", str(free_port()))
    assert done.returncode == 1
    line = _one_error_line(done)
    assert "'uvicorn' package" in line and "pip install 'popcorn-video[app]'" in line
    assert "serving on" not in done.stderr


def test_a_library_warning_is_printed_once(tmp_path: Path):
    # huggingface_hub prints through a handler of its own and passes records on to ours.
    code = (
        "from popcorn.cli.main import cli\n"
        "cli.main(args=['llms'], standalone_mode=False)\n"
        "from huggingface_hub.utils import logging\n"
        "logging.get_logger('huggingface_hub.file_download').warning('hub warning')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("hub warning") == 1


def test_only_an_optional_package_that_is_not_installed_is_named(monkeypatch):
    from popcorn.errors import missing_extra

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ModuleNotFoundError) as blocked:
        import uvicorn  # noqa: F401
    named = missing_extra(blocked.value)
    assert named is not None
    assert str(named) == (
        "this needs the 'uvicorn' package, which is not installed: pip install 'popcorn-video[app]'"
    )
    # A module of no extra, or a part of an installed package, is a bug to report instead.
    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    inside = ModuleNotFoundError("No module named 'torch.nope'", name="torch.nope")
    assert missing_extra(inside) is None
