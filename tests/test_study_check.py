"""A study is checked before its first job: every reason its jobs cannot run is said at once,
one line each, and nothing runs; only what is still to do is checked; ``--no-check`` runs it
anyway; ``study status`` says why each configuration's jobs failed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import free_port
from popcorn.study.check import check_study
from popcorn.study.spec import load_study


def write(folder: Path, body: str, queries: str = "A cat learning to skateboard\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.txt").write_text(queries)
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(body).lstrip() + '\n[queries]\nq = "q.txt"\n')
    return path


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub cannot be reached, as on a machine without network, whatever this one has."""
    import huggingface_hub.constants

    from popcorn import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_reachable", None)  # asked again, and found offline


def test_a_study_that_cannot_run_is_refused_with_every_reason_one_line_each(
    cli, tmp_path: Path, hub_offline: None
):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    path = write(
        tmp_path,
        f"""
        [study]
        llms = ["embedded", "deepseek:deepseek-chat", "openai:local", "hf:nobody/no-such-llm"]
        modes = ["basic"]
        videos = ["ltx"]
        predictor = "no-predictor"
        [llm]
        base_url = "{closed}"
        [media]
        video_model = "nobody/no-such-video-model"
        """,
    )
    result = cli("study", "run", str(path))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[0] == (
        "popcorn: error: study.toml: 6 problems, nothing was run (fix them and run again; "
        "--no-check runs it anyway):"
    )
    problems = "\n".join(lines[1:])
    for expected in (
        "the study's predictor",  # not trained
        "LLM 'embedded': profile 'paper' sends no JSON grammar",  # SmolLM2 needs one
        "DEEPSEEK_API_KEY",
        f"LLM 'openai:local': cannot reach {closed}",
        "LLM 'hf:nobody/no-such-llm': nobody/no-such-llm is not in the hub's cache",
        "`popcorn pull hf:nobody/no-such-llm`",
        "clip generator 'ltx': nobody/no-such-video-model is not in the hub's cache",
    ):
        assert expected in problems, expected
    assert len(lines) == 7 and all(line.startswith("  - ") for line in lines[1:])
    assert "Traceback" not in result.err
    assert not (tmp_path / "study.study" / "ledger.sqlite").exists()  # nothing ran


def test_one_problem_is_one_line_and_json_lists_the_problems(cli, tmp_path: Path):
    path = write(
        tmp_path,
        """
        [study]
        profile = "popcorn"
        llms = ["mock:m"]
        modes = ["basic", "pe:3"]
        corpus = "no-corpus"
        """,
    )
    result = cli("study", "run", str(path))
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "popcorn: error: PE (pe:3): no corpus in "
        f"{str(tmp_path / 'no-corpus')!r}: import one with 'popcorn corpus import microlens "
        "DIR' (or 'table FILE', 'hf DATASET_ID')"
    ]
    checked = cli("study", "check", str(path), "--json")
    assert checked.code == 1
    assert json.loads(checked.out) == {
        "ready": False,
        "problems": [result.err.strip().removeprefix("popcorn: error: ")],
    }


def test_the_embedded_model_under_paper_is_accepted_when_failures_score_as_blank(tmp_path: Path):
    # The study's own handling: a failed answer is scored as a blank script, so every job ends.
    body = '[study]\nllms = ["embedded"]\nvideos = ["none"]\nfailures = "blank"\n'
    assert check_study(load_study(write(tmp_path, body))) == []
    assert check_study(load_study(write(tmp_path / "omit", body.replace("blank", "omit"))))


def test_a_ready_study_says_so_and_runs(cli, tmp_path: Path, indexed_corpus: Path):
    path = write(
        tmp_path,
        f"""
        [study]
        profile = "popcorn"
        llms = ["mock:m"]
        modes = ["basic", "pe:3"]
        covers = ["none"]
        corpus = "{indexed_corpus}"
        [gate]
        enabled = false
        """,
    )
    checked = cli("study", "check", str(path))
    assert checked.code == 0 and checked.out.strip() == "study.toml: ready to run"
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["ran"]["script"] == 2


def test_only_what_is_still_to_do_is_checked(
    cli, tmp_path: Path, fault_proxy, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(
        '{"title": "Skate cat", "cover_prompt": "A cat on a board", '
        '"video_prompt": "A cat rolls down a ramp"}'
    )
    body = '[study]\nprofile = "popcorn"\nllms = ["openai:m"]\nvideos = ["none"]\n'
    body += "[gate]\nenabled = false\n"
    path = write(tmp_path, body)
    assert cli("study", "run", str(path)).code == 0
    # The server is gone: a finished study needs no LLM, a new query does.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    assert cli("study", "check", str(path)).code == 0
    (tmp_path / "q.txt").write_text("A cat learning to skateboard\nA dog surfing\n")
    again = cli("study", "check", str(path))
    assert again.code == 1 and "LLM 'openai:m': cannot reach http://127.0.0.1:" in again.err


def test_no_check_runs_anyway_and_status_says_why_jobs_failed(cli, tmp_path: Path):
    path = write(
        tmp_path,
        """
        [study]
        profile = "popcorn"
        llms = ["mock:m", "gguf:missing.gguf"]
        videos = ["none"]
        covers = ["none"]
        """,
        "A cat learning to skateboard\nA dog surfing a wave\n",
    )
    refused = cli("study", "run", str(path))
    assert refused.code == 1 and "gguf: no model file at 'missing.gguf'" in refused.err
    ran = cli("study", "run", str(path), "--no-check", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["failed"] == {"script": 2}

    found = json.loads(cli("study", "status", str(path), "--json").out)
    failures = found["failures"]["gguf:missing.gguf | basic | none | none"]
    assert failures["failed"] == 2
    (reason,) = failures["reasons"]
    assert reason["stage"] == "script" and reason["jobs"] == 2
    assert reason["reason"] == "UsageError" and "missing.gguf" in reason["example"]

    shown = cli("study", "status", str(path)).out.splitlines()
    assert "most common failure reasons (per configuration):" in shown
    line = next(s for s in shown if s.startswith("  gguf:missing.gguf"))
    assert "2 failed: script UsageError (2): gguf: no model file at 'missing.gguf'" in line
