"""The web app against hostile or unlucky conditions: a model process that crashes (a real
SIGILL, from an LLM plugin loaded through the ``popcorn.llm`` entry points), links in the run
store, damaged runs, odd request bodies and Host names, a taken port, and many PE settings."""

from __future__ import annotations

import io
import json
import os
import socket
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import FaultProxy
from popcorn.app.process import LLMS_KEPT, Models
from popcorn.app.requests import AppConfig, Request
from popcorn.app.server import create_app
from popcorn.config import Settings
from popcorn.runs.keys import job_key
from popcorn.runs.store import Run, RunManifest, RunStore

SCRIPT = {
    "title": "Skateboarding Cat Lands Its First Kickflip",
    "cover_prompt": "A tabby cat mid-air on a skateboard at a sunny skate park",
    "video_prompt": "A cat pushes off, rolls down a ramp and lands a kickflip in slow motion",
}

# An LLM plugin as a third-party package would ship one: a module registering a provider, and
# a .dist-info that lists it under the popcorn.llm entry points. Its model dies the way
# llama.cpp does on a CPU without the instructions it was built for.
CRASHING_PLUGIN = textwrap.dedent(
    """
    import os
    import resource
    import signal

    from popcorn.llm.registry import provider


    class CrashingLLM:
        spec = "crashing:sigill"
        concurrent = False

        def identity(self):
            return {"model": "crashing"}

        def complete(self, messages, decoding, json_schema=None):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from the test
            os.kill(os.getpid(), signal.SIGILL)


    @provider("crashing", form="crashing:ANY", summary="dies with SIGILL (a test plugin)")
    def _crashing(argument, options):
        return CrashingLLM()
    """
)


def folders(runs: Path, corpus: Path, predictor: Path) -> Settings:
    """The default settings, with the app's run store, corpus and predictor folders."""
    return Settings.model_validate(
        {"run": {"out": runs}, "pe": {"corpus": corpus}, "predictor": {"path": predictor}}
    )


def config_for(root: Path, llms: list[str], host: str = "127.0.0.1") -> AppConfig:
    settings = folders(root / "runs", root / "no-corpus", root / "no-predictor")
    return AppConfig(llms=llms, host=host, settings=settings)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(config_for(tmp_path, ["embedded"])), "http://127.0.0.1") as c:
        yield c


def make_run(store: Path, query: str) -> Run:
    """A finished run folder, written through the run store as generate writes one."""
    key = job_key({"query": query})
    run = RunStore(store).start(RunManifest(key=key, query=query, mode="basic"))
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT})
    run.write_bytes("cover", "cover.png", b"\x89PNG cover bytes")
    run.save(status="done")
    return run


def wait_done(client: TestClient, task: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = client.get(f"/api/requests/{task}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"request {task} did not finish")


# --- a crash in the model process -------------------------------------------------------------


@pytest.fixture
def crashing_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the plugin above on sys.path; the spawned model process inherits sys.path."""
    site = tmp_path / "plugins"
    (site / "crashing_llm-1.0.dist-info").mkdir(parents=True)
    (site / "crashing_llm.py").write_text(CRASHING_PLUGIN)
    (site / "crashing_llm-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: crashing-llm\nVersion: 1.0\n"
    )
    (site / "crashing_llm-1.0.dist-info" / "entry_points.txt").write_text(
        "[popcorn.llm]\ncrashing = crashing_llm\n"
    )
    monkeypatch.syspath_prepend(str(site))


def test_a_crash_in_the_model_process_fails_its_request_and_the_queue_goes_on(
    tmp_path: Path,
    crashing_plugin: None,
    fault_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    for _ in range(3):
        fault_proxy.answer_next(json.dumps(SCRIPT))
    config = config_for(tmp_path, ["crashing:sigill", "openai:scripted"])
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        body = {"video": "none", "cover": "none"}
        crashing = client.post(
            "/api/requests", json={"query": "Cats", "llm": "crashing:sigill", **body}
        )
        queued = client.post(
            "/api/requests",
            json={"query": "A cat learning to skateboard", "llm": "openai:scripted", **body},
        )
        assert crashing.status_code == queued.status_code == 200
        assert queued.json()["ahead"] == 1

        crashed = wait_done(client, crashing.json()["id"])
        assert crashed["status"] == "failed"
        for mode in ("basic", "pe"):
            assert (
                "the model process crashed (SIGILL, illegal instruction)" in crashed["errors"][mode]
            )
        states = {s["name"]: s["state"] for s in crashed["stages"]}
        assert states["basic: script"] == "failed"  # it was running when the process died
        assert states["basic: media"] == "skipped"

        done = wait_done(client, queued.json()["id"])
        assert done["results"]["basic"]["title"] == SCRIPT["title"], done["errors"]
        assert done["status"] == "done"
        assert {s["name"]: s["state"] for s in done["stages"]}["basic: script"] == "done"
        assert client.get("/api/options").status_code == 200  # still serving

    runs = {run.manifest.query: run for run in RunStore(config.out)}
    left = runs["Cats"]  # the folder the crash left behind says so instead of "running"
    assert left.status == "failed"
    assert left.manifest.error is not None and "SIGILL" in left.manifest.error["message"]


# --- links in the run store -------------------------------------------------------------------


def test_a_listed_file_that_is_a_link_is_not_served(client: TestClient, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    (run.path / "cover.png").unlink()
    (run.path / "cover.png").symlink_to(secret)
    name = run.path.name
    assert client.get(f"/api/runs/{name}/files/script.json").status_code == 200
    answer = client.get(f"/api/runs/{name}/files/cover.png")
    assert answer.status_code == 404 and "root:x" not in answer.text


def test_a_run_folder_that_is_a_link_is_not_served(client: TestClient, tmp_path: Path):
    elsewhere = make_run(tmp_path / "elsewhere", "Cats on skateboards")
    (tmp_path / "runs").mkdir()
    link = tmp_path / "runs" / elsewhere.path.name
    link.symlink_to(elsewhere.path, target_is_directory=True)
    for path in ("", "/files/script.json", "/download"):
        assert client.get(f"/api/runs/{link.name}{path}").status_code == 404, path
    assert client.get("/api/runs").json() == []


def test_the_download_zips_only_regular_files_the_manifest_lists(
    client: TestClient, tmp_path: Path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    (run.path / "cover.png").unlink()
    (run.path / "cover.png").symlink_to(secret)  # listed, but a link
    (run.path / "passwd").symlink_to(secret)  # a link the manifest does not list
    (run.path / "notes.txt").write_text("not part of the run")  # a file it does not list
    answer = client.get(f"/api/runs/{run.path.name}/download")
    assert answer.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = sorted(archive.namelist())
    assert names == [f"{run.path.name}/manifest.json", f"{run.path.name}/script.json"]
    assert all(b"root:x" not in archive.read(n) for n in names)


# --- damaged runs, request bodies, Host names, error texts --------------------------------------


def test_a_damaged_script_is_a_clear_error_without_server_paths(client: TestClient, tmp_path: Path):
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    (run.path / "script.json").write_text('{"schema_version": 1, "scr')
    answer = client.get(f"/api/runs/{run.path.name}")
    assert answer.status_code == 409
    message = answer.json()["error"]
    assert f"run {run.path.name} is damaged: its script.json cannot be read" in message
    (run.path / "manifest.json").write_text("{not json")
    answer = client.get(f"/api/runs/{run.path.name}")
    assert answer.status_code == 409
    assert "manifest.json" in answer.json()["error"]
    assert str(tmp_path) not in answer.json()["error"]


def test_an_opened_run_names_no_server_folder(client: TestClient, tmp_path: Path):
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    predictor = {"folder": str(tmp_path / "models" / "predictor"), "weights": "abc"}
    run.save(stages={"score": {"score": 3.5, "predictor": predictor}})
    answer = client.get(f"/api/runs/{run.path.name}")
    assert answer.status_code == 200
    assert answer.json()["score"]["predictor"]["folder"] == "predictor"
    assert str(tmp_path) not in answer.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": {"title": "cats"}}, "query must be a string"),
        ({"query": ["cats"]}, "query must be a string"),
        ({"query": 42}, "query must be a string"),
        ({"query": "cats", "refs": True}, "refs must be a whole number from 0 to 500"),
        ({"query": "cats", "llm": 7}, "llm must be a string"),
        ({"query": "cats", "admin": True}, "unknown field 'admin'"),
        (["cats"], "the request must be a JSON object"),
    ],
)
def test_a_request_body_of_the_wrong_shape_is_refused(client: TestClient, body: Any, message: str):
    answer = client.post("/api/requests", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert client.get("/api/requests/t1").status_code == 404  # nothing was queued


def test_a_body_that_is_not_json_is_refused(client: TestClient):
    answer = client.post("/api/requests", content=b"query=cats")
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example"])
def test_a_foreign_host_name_is_refused(client: TestClient, host: str):
    answer = client.get("/api/options", headers={"host": host})
    assert answer.status_code == 400
    assert "this app answers only to 127.0.0.1, ::1, localhost" in answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"])
def test_loopback_names_are_answered_on_a_loopback_address(client: TestClient, host: str):
    assert client.get("/api/options", headers={"host": host}).status_code == 200


def test_bound_to_every_address_any_host_name_is_answered(tmp_path: Path):
    app = create_app(config_for(tmp_path, ["embedded"], host="0.0.0.0"))
    with TestClient(app, "http://popcorn.lan") as client:
        assert client.get("/api/options").status_code == 200


def test_errors_of_a_request_name_no_server_folder(tmp_path: Path):
    model = tmp_path / "models" / "missing.gguf"
    config = config_for(tmp_path, [f"gguf:{model}"])
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        task = client.post("/api/requests", json={"query": "Cats", "video": "none"}).json()
        state = wait_done(client, task["id"])
    assert state["status"] == "failed"
    assert "missing.gguf" in state["errors"]["basic"]
    assert "no corpus in 'no-corpus'" in state["errors"]["pe"]
    assert str(tmp_path) not in json.dumps(state)


def test_serve_on_a_taken_port_says_so_and_exits_1(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert result.code == 1
    assert f"port {port} on 127.0.0.1 is taken" in result.err
    assert "serving on" not in result.err
    assert len(result.err.strip().splitlines()) == 1


# --- memory: one index per corpus, a bounded number of LLMs ---------------------------------------


def test_many_pe_settings_share_one_loaded_index(
    tmp_path: Path, indexed_corpus: Path, monkeypatch: pytest.MonkeyPatch
):
    from popcorn.residency import MODELS

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # never called here
    config = AppConfig(["openai:m"], settings=folders(tmp_path / "runs", indexed_corpus, tmp_path))
    models = Models(config)
    MODELS.release("retriever")
    loads = MODELS.loads["retriever"]

    made = [
        models.pipeline(Request("Cats", llm="openai:m", refs=n, categories=k), "pe").generator
        for n in (1, 5, 10, 20, 40)
        for k in (1, 2, 3, 4)
    ]
    assert len({id(g.enhancer.retriever) for g in made}) == 1  # one loaded index for all
    assert MODELS.loads["retriever"] - loads == 1


def test_asking_for_more_llms_than_are_kept_lets_the_loaded_ones_go(tmp_path: Path):
    from popcorn.residency import MODELS

    specs = [f"openai:m{i}" for i in range(LLMS_KEPT + 1)]
    config = AppConfig(specs, settings=folders(tmp_path / "runs", tmp_path, tmp_path))
    models = Models(config)
    MODELS.release("llm")
    weights = object()  # what an in-process backend would have loaded for the first LLM
    MODELS.adopt("llm", "weights", weights)

    for spec in specs[:LLMS_KEPT]:
        models.pipeline(Request("Cats", llm=spec), "basic")
    assert MODELS.loaded("llm") == ["weights"]  # switching among the kept ones keeps them
    models.pipeline(Request("Cats", llm=specs[-1]), "basic")
    assert MODELS.loaded("llm") == []


def test_the_model_process_is_ended_with_the_app(tmp_path: Path):
    config = config_for(tmp_path, ["gguf:missing.gguf"])
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        task = client.post("/api/requests", json={"query": "Cats"}).json()
        wait_done(client, task["id"])
        pid = client.app.state.worker.model_pid  # type: ignore[attr-defined]
        assert pid is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped) is not running either.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
