"""The web app says before the click what PE and scoring need and how to get them: the page
greys out what cannot run, a skipped score says why, Basic runs alone, and a generated demo
corpus is one click away (only into an empty corpus folder)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import chromium, serve_app
from popcorn.app.requests import AppConfig
from popcorn.app.server import create_app
from popcorn.config import load_settings


def config_for(root: Path, corpus: Path | None = None, predictor: Path | None = None, **more: Any):
    flags = {
        "run": {"out": str(root / "runs"), **more.pop("run", {})},
        "pe": {"corpus": str(corpus or root / "no-corpus")},
        "predictor": {"path": str(predictor or root / "no-predictor")},
        "gate": {"enabled": False},  # the stand-in LLM's scripts are what they are
        **more,
    }
    return AppConfig(llms=["mock:m"], settings=load_settings(flags=flags))


def wait_done(client: TestClient, task: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = client.get(f"/api/requests/{task}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"request {task} did not finish")


def test_options_say_what_pe_and_scoring_need_and_how_to_get_it(tmp_path: Path):
    with TestClient(create_app(config_for(tmp_path)), "http://127.0.0.1") as client:
        options = client.get("/api/options").json()
    pe, score = options["needs"]["pe"], options["needs"]["score"]
    assert not pe["ready"] and "there is none in 'no-corpus'" in pe["reason"]
    assert pe["fix"] == [
        "popcorn corpus import microlens DIR --corpus no-corpus",
        "popcorn corpus index --corpus no-corpus",
    ]
    assert pe["demo"] is True and options["demo_corpus"] == {"state": "idle", "message": ""}
    assert not score["ready"] and "no trained predictor in 'no-predictor'" in score["reason"]
    assert score["fix"][-1] == "popcorn predictor train --predictor no-predictor"
    assert str(tmp_path) not in json.dumps(options)  # folder names only, never server paths


def test_with_an_indexed_corpus_and_a_trained_predictor_everything_can_run(
    tmp_path: Path, indexed_corpus: Path, small_predictor: Path
):
    config = config_for(tmp_path, indexed_corpus, small_predictor)
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        needs = client.get("/api/options").json()["needs"]
    assert needs["pe"]["ready"] and needs["score"]["ready"]


def test_under_paper_pe_needs_the_studys_embedder_and_no_demo_is_offered(
    tmp_path: Path, indexed_corpus: Path, small_predictor: Path
):
    config = config_for(tmp_path, indexed_corpus, small_predictor, run={"profile": "paper"})
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        pe = client.get("/api/options").json()["needs"]["pe"]
    assert not pe["ready"] and "asks for 'sentence-transformers/all-MiniLM-L12-v2'" in pe["reason"]
    assert pe["fix"] == [f"popcorn corpus index --corpus {indexed_corpus.name} --embedder "
                         "sentence-transformers/all-MiniLM-L12-v2"]  # fmt: skip
    assert pe["demo"] is False  # the demo corpus is indexed with the packaged MiniLM-L6


def test_basic_runs_alone_and_a_skipped_score_says_why(tmp_path: Path):
    with TestClient(create_app(config_for(tmp_path)), "http://127.0.0.1") as client:
        task = client.post(
            "/api/requests", json={"query": "A cat on a skateboard", "modes": ["basic"]}
        ).json()
        state = wait_done(client, task["id"])
        no_clip = client.post(
            "/api/requests",
            json={"query": "A dog surfing", "modes": ["basic"], "video": "none"},
        ).json()
        without_clip = wait_done(client, no_clip["id"])
        refused = client.post("/api/requests", json={"query": "cats", "modes": ["pe", "x"]})
    assert state["status"] == "done" and list(state["results"]) == ["basic"]
    assert [s["name"] for s in state["stages"]] == ["basic: script", "basic: media", "basic: score"]
    score = state["stages"][-1]
    assert score["state"] == "skipped"
    assert score["reason"] == (
        "no trained predictor in 'no-predictor', so clips are not scored: "
        "popcorn predictor train --predictor no-predictor"
    )
    assert without_clip["stages"][-1]["reason"] == "no clip to score (clip generator 'none')"
    assert refused.status_code == 400
    assert refused.json()["error"] == "modes must be a list of one or both of 'basic', 'pe'"


def test_the_demo_corpus_is_made_in_an_empty_corpus_folder_and_pe_can_then_run(tmp_path: Path):
    with TestClient(create_app(config_for(tmp_path)), "http://127.0.0.1") as client:
        started = client.post("/api/demo-corpus")
        assert started.status_code == 200 and started.json()["state"] == "running"
        deadline = time.monotonic() + 180
        while client.get("/api/options").json()["demo_corpus"]["state"] == "running":
            assert time.monotonic() < deadline, "the demo corpus was not made"
            time.sleep(0.5)
        options = client.get("/api/options").json()
        assert options["demo_corpus"] == {"state": "done", "message": ""}
        assert options["needs"]["pe"]["ready"]
        again = client.post("/api/demo-corpus")
        assert again.status_code == 400 and "there is a corpus in 'no-corpus'" in again.text
        task = client.post("/api/requests", json={"query": "Street food at night", "refs": 3})
        state = wait_done(client, task.json()["id"])
    assert state["status"] == "done" and set(state["results"]) == {"basic", "pe"}, state["errors"]
    assert len(state["results"]["pe"]["references"]) == 3


def test_the_demo_corpus_never_goes_into_a_folder_that_holds_anything(tmp_path: Path):
    (tmp_path / "no-corpus").mkdir()
    (tmp_path / "no-corpus" / "notes.txt").write_text("mine")
    with TestClient(create_app(config_for(tmp_path)), "http://127.0.0.1") as client:
        assert client.get("/api/options").json()["needs"]["pe"]["demo"] is False
        refused = client.post("/api/demo-corpus")
    assert refused.status_code == 400 and "is not empty" in refused.json()["error"]
    assert sorted(p.name for p in (tmp_path / "no-corpus").iterdir()) == ["notes.txt"]


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    with serve_app(create_app(config_for(tmp_path))) as url:
        yield url


@pytest.mark.slow
def test_the_page_greys_out_pe_says_how_to_get_it_and_makes_a_demo_corpus(app_url: str):
    with chromium() as browser:
        page = browser.new_page()
        page.goto(app_url)
        page.wait_for_selector("#needs li.need-pe")
        assert page.is_disabled("#run") and "PE cannot run yet" in page.inner_text("#run-why")
        needs = page.inner_text("#needs")
        assert "popcorn corpus import microlens DIR --corpus no-corpus" in needs
        assert "popcorn predictor train --predictor no-predictor" in needs
        assert page.is_disabled("#candidates")  # best-of-N needs the predictor

        page.fill("#query", "A cat learning to skateboard")
        page.click("#run-basic")
        page.wait_for_selector("#message:text('Done.')", timeout=120_000)
        assert page.inner_text("#basic .title").strip()
        skipped = page.inner_text("#stages li.skipped")
        assert "basic: score: skipped (no trained predictor in 'no-predictor'" in skipped
        assert page.is_disabled("#run") and page.is_enabled("#run-basic")

        page.click("#demo-corpus")
        page.wait_for_selector("#run:enabled", timeout=180_000)
        assert "The demo corpus is ready" in page.inner_text("#message")
        assert page.locator("#needs li.need-pe").count() == 0
