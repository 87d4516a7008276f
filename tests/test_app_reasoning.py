"""The web app shows PE's reasoning, as its PE heading promises."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from conftest import FaultProxy


def test_an_opened_pe_run_carries_its_reasoning(
    fault_proxy: FaultProxy, indexed_corpus: Path, tmp_path: Path
):
    from popcorn.app.requests import AppConfig
    from popcorn.app.server import create_app
    from popcorn.config import load_settings
    from popcorn.pipeline import Pipeline

    answer = {
        "reasoning": "Popular cooking clips show the dish in the first second; slow ones talk.",
        "title": "Ramen in Sixty Seconds",
        "cover_prompt": "A glossy bowl of ramen with a soft egg, steam rising, top-down shot",
        "video_prompt": "Noodles lifted from the broth in slow motion, steam curling, warm light",
    }
    fault_proxy.answer_next(json.dumps(answer))
    settings = load_settings(
        None,
        {
            "llm": {"spec": "openai:m", "base_url": fault_proxy.url},
            "run": {"out": str(tmp_path / "runs")},
            "pe": {"corpus": str(indexed_corpus), "refs": 4},
        },
    )
    done = Pipeline(settings, pe=True).run("How to cook ramen at home")
    folders = settings.predictor.model_copy(update={"path": tmp_path / "none"})
    config = AppConfig(llms=["m"], settings=settings.model_copy(update={"predictor": folders}))
    with TestClient(create_app(config), "http://127.0.0.1") as client:
        opened = client.get(f"/api/runs/{done.run_dir.name}").json()
    assert opened["reasoning"] == answer["reasoning"]
    assert len(opened["references"]) == 4
