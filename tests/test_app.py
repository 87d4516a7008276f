"""The web app in a real browser (Playwright driving Debian's Chromium, headless) against the
app started by the test, on the embedded defaults with the preview renderer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import chromium, serve_app
from popcorn.app.requests import AppConfig
from popcorn.app.server import create_app
from popcorn.config import load_settings

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / ".test-artifacts"


@pytest.fixture(scope="module")
def pe_corpus(make_indexed_corpus) -> Path:
    return make_indexed_corpus()


@pytest.fixture(scope="module")
def app_url(
    tmp_path_factory: pytest.TempPathFactory, pe_corpus: Path, small_predictor: Path
) -> Iterator[str]:
    # The page's flow is under test here, not the quality gate: it records its verdicts but
    # does not retry, so the tiny embedded model's answer always reaches the page.
    flags = {
        "gate": {"enabled": False},
        "run": {"out": str(tmp_path_factory.mktemp("app-runs"))},
        "pe": {"corpus": str(pe_corpus)},
        "predictor": {"path": str(small_predictor)},
    }
    config = AppConfig(llms=["embedded", "gguf:missing.gguf"], settings=load_settings(flags=flags))
    with serve_app(create_app(config)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as instance:
        yield instance


def wait_done(url: str, task: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{url}/api/requests/{task}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.3)
    raise AssertionError("the request did not finish")


def test_a_query_runs_basic_and_pe_side_by_side_in_the_browser(browser, app_url: str):
    page = browser.new_page()
    page.goto(app_url)
    page.fill("#query", "A cat learning to skateboard")
    page.select_option("#llm", "embedded")
    page.fill("#refs", "5")
    page.click("#run")
    page.wait_for_selector("#message:text('Done.')", timeout=300_000)
    assert page.inner_text("#basic .title").strip()
    assert page.inner_text("#pe .title").strip()
    rows = page.locator("#pe table.references tr")
    assert rows.count() == 6  # header + the 5 references
    assert "comments" in page.inner_text("#pe table.references")
    for side in ("basic", "pe"):
        video = page.locator(f"#{side} video")
        assert video.count() == 1
        fetch = f"fetch(document.querySelector('#{side} video').src).then(r => r.status)"
        assert page.evaluate(fetch) in (200, 206)  # 206: the browser asked for a byte range
        assert "Predicted popularity" in page.inner_text(f"#{side} .score")
        assert page.locator(f"#{side} svg.plot rect").count() > 0
        assert "PREVIEW" in page.inner_text(f"#{side}")
    assert page.locator("#stages li.done").count() == 6
    assert page.locator("#history li").count() >= 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000
    page.close()


def test_an_empty_query_is_a_message_in_the_page(browser, app_url: str):
    page = browser.new_page()
    page.goto(app_url)
    page.click("#run")
    page.wait_for_selector("#message.error")
    assert "the query is empty" in page.inner_text("#message")
    assert page.is_enabled("#run")
    page.close()


def test_bad_requests_get_clear_messages(app_url: str):
    too_long = httpx.post(f"{app_url}/api/requests", json={"query": "x" * 5000})
    assert too_long.status_code == 400 and "characters; the limit is" in too_long.json()["error"]
    bad_llm = httpx.post(f"{app_url}/api/requests", json={"query": "cats", "llm": "gpt-9"})
    assert bad_llm.status_code == 400 and "unknown llm 'gpt-9'" in bad_llm.json()["error"]
    bad_refs = httpx.post(f"{app_url}/api/requests", json={"query": "cats", "refs": 999})
    assert bad_refs.status_code == 400 and "refs must be" in bad_refs.json()["error"]
    for path in ("/api/runs/..%2F..%2Fetc", "/api/runs/nothing/files/manifest.json"):
        assert httpx.get(app_url + path).status_code == 404


def test_a_failing_llm_is_shown_and_the_app_keeps_serving(app_url: str):
    slow = httpx.post(
        f"{app_url}/api/requests", json={"query": "Dogs surfing", "video": "none", "cover": "none"}
    ).json()
    failing = httpx.post(
        f"{app_url}/api/requests", json={"query": "Dogs surfing", "llm": "gguf:missing.gguf"}
    ).json()
    assert failing["ahead"] >= 1  # a second request waits its turn instead of failing
    state = wait_done(app_url, failing["id"])
    assert state["status"] == "failed"
    assert "missing.gguf" in state["errors"]["basic"] and "missing.gguf" in state["errors"]["pe"]
    assert {s["state"] for s in state["stages"]} <= {"failed", "skipped"}
    first = wait_done(app_url, slow["id"])
    assert first["status"] == "done", first["errors"]
    assert first["results"]["basic"]["title"]
    assert httpx.get(f"{app_url}/api/options").status_code == 200  # still serving


def test_a_request_is_cancelled_from_the_page(browser, app_url: str):
    page = browser.new_page()
    page.goto(app_url)
    assert not page.is_visible("#cancel")  # nothing to cancel yet
    page.fill("#query", "A dog learning to surf")
    page.click("#run")
    page.click("#cancel")  # waits for the button to show, as it does once the request is sent
    page.wait_for_selector("#message:text('Cancelled.')", timeout=60_000)
    assert page.is_enabled("#run") and not page.is_visible("#cancel")
    assert "cancelled" in page.inner_text("#basic .err")
    assert httpx.get(f"{app_url}/api/health").json()["ok"] is True
    page.close()
