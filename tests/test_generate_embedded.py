"""`popcorn generate` end to end on the embedded SmolLM2, offline, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import popcorn

pytestmark = pytest.mark.slow

QUERY = "A cat learning to skateboard"


def test_generate_json_prints_one_object_and_writes_a_run_folder(cli):
    result = cli("generate", QUERY, "--json", "--out", "runs")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert {"query", "title", "cover_prompt", "video_prompt", "mode", "llm", "run_dir"} <= set(obj)
    assert obj["query"] == QUERY and obj["mode"] == "basic" and obj["llm"] == "embedded"
    assert 0 < len(obj["title"]) <= 50
    assert obj["cover_prompt"].strip() and obj["video_prompt"].strip()

    run_dir = Path(obj["run_dir"])
    assert run_dir.parent == Path("runs")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["schema_version"] == 1
    assert manifest["decoding"] == {
        "temperature": 0.3,  # the popcorn profile's for a small local model
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "seed": 42,
        "max_tokens": 1024,
    }
    assert manifest["usage"]["completion_tokens"] > 0
    assert manifest["timings"]["llm_seconds"] > 0
    assert "llama-cpp-python" in manifest["versions"]
    assert manifest["llm"]["notes"]["json_schema"] == "enforced by grammar"
    script = json.loads((run_dir / "script.json").read_text())["script"]
    assert script["title"] == obj["title"]
    transcript = json.loads((run_dir / "transcript.json").read_text())
    attempt = transcript["attempts"][-1]
    # Popcorn's wording names the query first and again last, where small models look.
    assert attempt["messages"][-1]["content"].count(QUERY) == 2
    assert attempt["raw"] and attempt["outcome"] == {"ok": True}


def test_human_output_and_rerun_is_served_from_the_run_folder(cli):
    first = cli("generate", QUERY, "--out", "runs")
    assert first.code == 0, first.err
    assert "Title" in first.out and "Video prompt" in first.out and "Run folder" in first.out
    manifest = next(Path("runs").glob("*/manifest.json"))
    before = manifest.read_text()
    second = cli("generate", QUERY, "--out", "runs", "--json")
    assert json.loads(second.out)["cached"] is True
    assert manifest.read_text() == before


def test_same_seed_same_script_and_another_seed_another_run(tmp_path: Path):
    a = popcorn.write_script(QUERY, out=tmp_path / "a")
    b = popcorn.write_script(QUERY, out=tmp_path / "b")
    assert a.script == b.script and not b.cached
    c = popcorn.write_script(QUERY, out=tmp_path / "a", decoding=popcorn.Decoding(seed=7))
    assert c.run_dir != a.run_dir


def test_batch_with_local_model_runs_one_at_a_time_and_resumes(cli, tmp_path: Path):
    queries = tmp_path / "q.csv"
    queries.write_text(
        'prompt,type\n"A cat learning to skateboard",concrete\n'
        '"Discuss how anime portrays futuristic cities",abstract\n'
        '"A cat learning to skateboard",concrete\n'
    )
    first = cli("generate", "--queries", str(queries), "--out", "runs", "--concurrency", "4")
    assert first.code == 0, first.err
    assert "one query at a time" in first.err
    assert "2 of 2 done (2 new, 0 already done)" in first.err
    assert "1 duplicate" in first.err
    tags = sorted(
        json.loads(m.read_text())["tags"]["type"] for m in Path("runs").glob("*/manifest.json")
    )
    assert tags == ["abstract", "concrete"]
    again = cli("generate", "--queries", str(queries), "--out", "runs", "--json")
    assert again.code == 0
    assert [json.loads(line)["cached"] for line in again.out.splitlines()] == [True, True]
