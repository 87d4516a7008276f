"""The web app keeps serving whatever one request, run folder or model process does: a crashed,
stopped or hung model process costs only its own request; unreadable run folders are skipped;
requests can be cancelled; the worker's health can be asked; and finished requests are not kept
for ever."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import CliResult, FaultProxy, free_port
from popcorn.app.requests import AppConfig
from popcorn.app.server import create_app
from popcorn.app.work import FINISHED_KEPT
from popcorn.config import load_settings
from popcorn.runs.keys import job_key
from popcorn.runs.store import Run, RunManifest, RunStore

SCRIPT = {
    "title": "Skateboarding Cat Lands Its First Kickflip",
    "cover_prompt": "A tabby cat mid-air on a skateboard at a sunny skate park",
    "video_prompt": "A cat pushes off, rolls down a ramp and lands a kickflip in slow motion",
}
NESTED = "[" * 100_000 + "]" * 100_000
NESTED_BODY = "[" * 30_000 + "]" * 30_000  # under the body limit, far over any parser's depth
BINARY = b"\xff\xfe\x00\x01 not a manifest \x80\x81"
NO_MEDIA = {"video": "none", "cover": "none"}
RunCli = Callable[..., CliResult]


def config_for(root: Path, llms: list[str], **changes: Any) -> AppConfig:
    # The quality gate would ask the scripted endpoint again; these tests count its answers.
    folders = {
        "run": {"out": str(root / "runs")},
        "pe": {"corpus": str(root / "no-corpus")},
        "predictor": {"path": str(root / "no-predictor")},
    }
    settings = load_settings(flags={"gate": {"enabled": False}, **folders})
    return AppConfig(llms=llms, settings=settings, **changes)


@pytest.fixture
def scripted(fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> FaultProxy:
    """``openai:scripted`` answers what the test queues on this endpoint."""
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    return fault_proxy


@pytest.fixture
def app(tmp_path: Path, scripted: FaultProxy) -> Iterator[TestClient]:
    with TestClient(create_app(config_for(tmp_path, ["openai:scripted"])), "http://127.0.0.1") as c:
        yield c


def make_run(store: Path, query: str) -> Run:
    """A finished run folder, written through the run store as generate writes one."""
    run = RunStore(store).start(
        RunManifest(key=job_key({"query": query}), query=query, mode="basic")
    )
    run.write_json("script", "script.json", {"schema_version": 1, "script": SCRIPT})
    run.write_bytes("cover", "cover.png", b"\x89PNG cover bytes")
    run.save(status="done")
    return run


def plant_bad_folders(store: Path) -> dict[str, Path]:
    """Run folders nobody can read: a manifest nested 100,000 deep, a binary one, and (for a
    user other than root, who reads anything) a folder of mode 000."""
    store.mkdir(parents=True, exist_ok=True)
    planted = {}
    for name, content in (("nested-0001", NESTED.encode()), ("binary-0002", BINARY)):
        folder = store / name
        folder.mkdir()
        (folder / "manifest.json").write_bytes(content)
        planted[name] = folder
    locked = make_run(store, "Locked away").path
    locked.chmod(0)
    planted["locked"] = locked
    return planted


def unchanged(planted: dict[str, Path]) -> None:
    assert (planted["nested-0001"] / "manifest.json").read_text() == NESTED
    assert (planted["binary-0002"] / "manifest.json").read_bytes() == BINARY
    assert planted["locked"].stat().st_mode & 0o777 == 0


@pytest.fixture
def restore_modes() -> Iterator[list[Path]]:
    """Folders a test made unreadable, made readable again so pytest can delete them."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        folder.chmod(0o755)


def wait(client: TestClient, task: str, until: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = client.get(f"/api/requests/{task}").json()
        if until(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"request {task} never reached the state waited for: {state}")


def finished(state: dict[str, Any]) -> bool:
    return state["status"] in ("done", "failed", "cancelled")


def waiting_on_its_llm(proxy: FaultProxy, asked_before: int = 0) -> Any:
    """A condition for :func:`wait`: the request's model process has asked the LLM (so its run
    folder is started) and waits for the answer."""

    def check(state: dict[str, Any]) -> bool:
        assert not finished(state), state  # it must still be waiting on the LLM when we act
        return len(proxy.requests) > asked_before

    return check


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped) is not running either
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_named(store: Path, query: str) -> Run:
    return next(run for run in RunStore(store) if run.manifest.query == query)


def submit(client: TestClient, query: str) -> str:
    answer = client.post("/api/requests", json={"query": query, **NO_MEDIA})
    assert answer.status_code == 200, answer.text
    task: str = answer.json()["id"]
    return task


def runs_to_done(client: TestClient, proxy: FaultProxy, query: str) -> dict[str, Any]:
    proxy.delay = 0
    proxy.answer_next(json.dumps(SCRIPT))
    state = wait(client, submit(client, query), finished)
    assert state["status"] == "done", state["errors"]
    assert state["results"]["basic"]["title"] == SCRIPT["title"]
    return state


# --- the queue outlives its model process -------------------------------------------------------


def test_a_killed_model_process_fails_its_request_and_the_next_one_runs_despite_bad_folders(
    app: TestClient, scripted: FaultProxy, tmp_path: Path, restore_modes: list[Path]
) -> None:
    store = tmp_path / "runs"
    planted = plant_bad_folders(store)
    restore_modes.append(planted["locked"])
    kept = make_run(store, "Cats on skateboards")
    scripted.delay = 60  # the model waits on its LLM until it is killed
    scripted.answer_next(json.dumps(SCRIPT))
    task = submit(app, "Cats")
    wait(app, task, waiting_on_its_llm(scripted))
    pid = app.app.state.worker.model_pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)

    crashed = wait(app, task, finished)
    assert crashed["status"] == "failed"
    assert "the model process crashed (SIGKILL" in crashed["errors"]["basic"]
    health = app.get("/api/health").json()
    assert health["worker"] == "alive" and health["ok"] is True
    # The crash's clean-up read the store past the bad folders and ended the run it left.
    left = run_named(store, "Cats")
    assert left.status == "failed" and left.manifest.error is not None
    assert left.manifest.error["reason"] == "crash"

    runs_to_done(app, scripted, "A cat learning to skateboard")
    assert app.get("/api/health").json()["model_process"] == "alive"
    listed = {r["query"] for r in app.get("/api/runs").json()}
    assert {"Cats on skateboards", "A cat learning to skateboard"} <= listed
    unchanged(planted)
    assert Run.load(kept.path).status == "done"


def test_a_stopped_model_process_is_killed_at_the_time_limit(
    scripted: FaultProxy, tmp_path: Path
) -> None:
    # A fresh model process asks its LLM within a second or two; it is stopped while it waits.
    config = config_for(tmp_path, ["openai:scripted"], timeout=6.0)
    with TestClient(create_app(config), "http://127.0.0.1") as app:
        scripted.delay = 60
        scripted.answer_next(json.dumps(SCRIPT))
        task = submit(app, "Cats")
        wait(app, task, waiting_on_its_llm(scripted))
        pid = app.app.state.worker.model_pid  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGSTOP)
        try:
            # The stop is delivered asynchronously: on a busy machine /proc shows it a moment later.
            deadline = time.monotonic() + 5
            while app.get("/api/health").json()["model_process"] != "stopped":
                assert time.monotonic() < deadline, "the health check never saw the stop"
                time.sleep(0.05)
            stopped = wait(app, task, finished)
            assert not alive(pid)
        finally:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert stopped["status"] == "failed"
        reason = stopped["errors"]["basic"]
        assert reason.startswith("stopped after 6 s, the app's time limit for a request")
        assert "(popcorn serve --timeout sets it)" in reason
        health = app.get("/api/health").json()
        assert health["ok"] is True and health["model_process"] == "none"  # a fresh one next
    left = run_named(tmp_path / "runs", "Cats")
    assert left.status == "failed"
    assert left.manifest.error == {"reason": "timeout", "message": reason}


def test_requests_can_be_cancelled_queued_or_running(
    app: TestClient, scripted: FaultProxy, tmp_path: Path
) -> None:
    scripted.delay = 60  # every model process waits on its LLM until it is cancelled
    running = submit(app, "Cats")
    queued = submit(app, "Dogs surfing")

    answer = app.post(f"/api/requests/{queued}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    dropped = app.get(f"/api/requests/{queued}").json()
    assert dropped["status"] == "cancelled"
    assert dropped["errors"]["basic"] == "cancelled before it ran"

    wait(app, running, waiting_on_its_llm(scripted))
    pid = app.app.state.worker.model_pid  # type: ignore[attr-defined]
    assert app.post(f"/api/requests/{running}/cancel").status_code == 200
    stopped = wait(app, running, finished)
    assert stopped["status"] == "cancelled"
    assert "cancelled while it ran" in stopped["errors"]["basic"]
    assert not alive(pid)
    assert run_named(tmp_path / "runs", "Cats").manifest.error == {
        "reason": "cancelled",
        "message": stopped["errors"]["basic"],
    }

    again = app.post(f"/api/requests/{running}/cancel")
    assert again.status_code == 400
    assert again.json()["error"] == f"request {running} has cancelled already: nothing to cancel"
    assert app.post("/api/requests/t999/cancel").status_code == 404

    # The queue goes on past the dropped request, in a fresh model process.
    after = submit(app, "A cat learning to skateboard")
    wait(app, after, waiting_on_its_llm(scripted, 1))
    asked = [json.dumps(r["body"]) for r in scripted.requests]
    assert "A cat learning to skateboard" in asked[-1]
    assert not any("Dogs surfing" in body for body in asked)
    assert app.post(f"/api/requests/{after}/cancel").status_code == 200


def test_the_page_offers_a_cancel_button(app: TestClient) -> None:
    page = app.get("/").text
    assert 'id="cancel"' in page and "/cancel`" in page


def test_health_says_the_worker_is_alive_before_any_request(app: TestClient) -> None:
    answer = app.get("/api/health")
    assert answer.status_code == 200
    assert answer.json() == {
        "ok": True,
        "worker": "alive",
        "model_process": "none",
        "queued": 0,
        "running": None,
        "restarts": 0,
    }


def test_only_the_most_recent_finished_requests_are_kept(app: TestClient) -> None:
    ids = []
    for number in range(FINISHED_KEPT + 30):
        ids.append(submit(app, f"Query {number}"))
        app.post(f"/api/requests/{ids[-1]}/cancel")
    wait(app, ids[-1], finished)
    worker = app.app.state.worker  # type: ignore[attr-defined]
    wait(app, ids[0], lambda _: len(worker.tasks) <= FINISHED_KEPT)
    assert app.get(f"/api/requests/{ids[0]}").status_code == 404
    assert app.get(f"/api/requests/{ids[-1]}").json()["status"] == "cancelled"
    assert app.get("/api/health").json()["ok"] is True


# --- unreadable run folders ---------------------------------------------------------------------


def test_the_history_skips_unreadable_run_folders_and_names_them(
    app: TestClient, tmp_path: Path, restore_modes: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "runs"
    planted = plant_bad_folders(store)
    restore_modes.append(planted["locked"])
    kept = make_run(store, "Cats on skateboards")

    with caplog.at_level(logging.WARNING, logger="popcorn"):
        answer = app.get("/api/runs")
    assert answer.status_code == 200
    listed = {r["run"] for r in answer.json()}
    assert kept.path.name in listed
    assert "nested-0001" not in listed and "binary-0002" not in listed
    for name in ("nested-0001", "binary-0002"):
        assert any(name in record.getMessage() for record in caplog.records), name
    if os.geteuid() != 0:  # root reads a folder of mode 000 like any other
        assert planted["locked"].name not in listed
        assert any(planted["locked"].name in r.getMessage() for r in caplog.records)
    unchanged(planted)


@pytest.mark.parametrize("name", ["nested-0001", "binary-0002"])
@pytest.mark.parametrize("path", ["", "/files/manifest.json", "/download"])
def test_a_garbage_run_folder_is_a_one_line_error_never_a_500(
    app: TestClient, tmp_path: Path, restore_modes: list[Path], name: str, path: str
) -> None:
    planted = plant_bad_folders(tmp_path / "runs")
    restore_modes.append(planted["locked"])
    answer = app.get(f"/api/runs/{name}{path}")
    assert answer.status_code == 409
    message = answer.json()["error"]
    assert "manifest.json" in message and "\n" not in message
    assert str(tmp_path) not in message
    unchanged(planted)


# --- files of a run ---------------------------------------------------------------------------


def test_a_hard_link_to_a_file_from_elsewhere_is_not_served(
    app: TestClient, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    day_ago = time.time() - 86_400
    os.utime(secret, (day_ago, day_ago))  # a file of its own, last changed before the run
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    (run.path / "cover.png").unlink()
    os.link(secret, run.path / "cover.png")  # listed in the manifest, but the secret's bytes
    name = run.path.name

    answer = app.get(f"/api/runs/{name}/files/cover.png")
    assert answer.status_code == 404 and "root:x" not in answer.text
    archive = app.get(f"/api/runs/{name}/download")
    assert archive.status_code == 200 and b"root:x" not in archive.content
    assert secret.read_text() == "root:x:0:0"


def test_a_file_the_run_wrote_is_served_though_kept_under_a_second_name(
    app: TestClient, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "runs", "Cats on skateboards")
    os.link(run.path / "cover.png", tmp_path / "my-cover.png")  # the user kept a copy
    answer = app.get(f"/api/runs/{run.path.name}/files/cover.png")
    assert answer.status_code == 200 and answer.content == b"\x89PNG cover bytes"


# --- request bodies ---------------------------------------------------------------------------


def test_a_deeply_nested_request_body_is_a_one_line_400(app: TestClient) -> None:
    answer = app.post("/api/requests", content=NESTED_BODY.encode())
    assert answer.status_code == 400
    assert answer.json() == {"error": "the request body is JSON nested too deeply"}
    assert app.get("/api/health").json()["queued"] == 0  # nothing was queued


def test_an_oversized_request_body_is_refused_unread(app: TestClient) -> None:
    body = json.dumps({"query": "cats " * 100_000}).encode()
    answer = app.post("/api/requests", content=body)
    assert answer.status_code == 413
    assert answer.json() == {"error": "the request body is over 64 KiB"}
    assert app.get("/api/health").json()["queued"] == 0


# --- popcorn serve checks before it listens ---------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus:x", "unknown LLM 'bogus:x'; valid forms: embedded, gguf:PATH, openai:MODEL"),
        ("openai", "LLM 'openai' needs an argument: write it as openai:MODEL"),
        ("embedded:big", "LLM 'embedded' takes no argument: write it as embedded"),
    ],
)
def test_serve_with_an_unknown_llm_fails_before_it_listens(
    cli: RunCli, spec: str, message: str
) -> None:
    result = cli("serve", "--port", str(free_port()), "--llm", "embedded", "--llm", spec)
    assert result.code == 1
    assert message in result.err
    assert "serving on" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_serve_without_the_app_packages_names_the_extra_before_it_listens(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    result = cli("serve", "--port", str(free_port()))
    assert result.code == 1
    assert "needs the 'uvicorn' package: pip install 'popcorn-video[app]'" in result.err
    assert "serving on" not in result.err
    assert len(result.err.strip().splitlines()) == 1
