"""The pipeline's steps take batches: a list gives one typed outcome per item, in order, with a
failure as its error and the rest done; one item gives its result or raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from popcorn.config import Settings
from popcorn.errors import PopcornError, UsageError
from popcorn.pipeline import MediaResult, Pipeline, ScriptResult
from popcorn.residency import MODELS


def mock_pipeline(runs: Path, **media: object) -> Pipeline:
    settings = Settings.model_validate(
        {"llm": {"spec": "mock:m"}, "run": {"out": runs}, "media": media}
    )
    return Pipeline(settings, score="never")


def test_a_script_batch_answers_every_query_in_order_and_refuses_a_bad_one_alone(
    tmp_path: Path,
) -> None:
    pipeline = mock_pipeline(tmp_path / "runs")
    queries = ["A dog surfing a wave", "   ", "Why cats sit in boxes", "A dog surfing a wave"]

    outcomes = pipeline.script(queries)

    assert [type(o) for o in outcomes] == [ScriptResult, UsageError, ScriptResult, ScriptResult]
    first, _, other, again = outcomes
    assert isinstance(first, ScriptResult) and isinstance(again, ScriptResult)
    assert again.run_dir == first.run_dir  # a query asked twice is one run
    assert isinstance(other, ScriptResult) and other.run_dir != first.run_dir
    assert pipeline.script(queries[0]).run_dir == first.run_dir  # one query: its result
    with pytest.raises(UsageError):
        pipeline.script(queries[1])  # ...or its error, raised


def test_a_render_batch_renders_every_run_and_returns_a_failure_as_its_error(
    tmp_path: Path,
) -> None:
    pipeline = mock_pipeline(tmp_path / "runs")
    made = pipeline.script(["A dog surfing a wave", "Why cats sit in boxes"])
    runs = [o.run_dir for o in made if isinstance(o, ScriptResult)]
    missing = tmp_path / "runs" / "no-such-run"

    outcomes = pipeline.render([runs[0], missing, runs[1]])

    assert isinstance(outcomes[1], PopcornError)
    for run, outcome in ((runs[0], outcomes[0]), (runs[1], outcomes[2])):
        assert isinstance(outcome, MediaResult) and outcome.run_dir == run
        assert outcome.clip is not None and outcome.clip.is_file() and outcome.preview
    with pytest.raises(PopcornError):
        pipeline.render(missing)


def test_with_unload_stages_a_render_batch_lets_the_llms_go_once_before_it(tmp_path: Path) -> None:
    pipeline = mock_pipeline(tmp_path / "runs", unload_stages=True)
    made = pipeline.script(["A dog surfing a wave", "Why cats sit in boxes"])
    MODELS.release("llm")  # whatever earlier tests left loaded
    MODELS.adopt("llm", "weights", object())  # what an in-process LLM would hold
    releases = MODELS.releases["llm"]

    outcomes = pipeline.render([o.run_dir for o in made if isinstance(o, ScriptResult)])

    assert all(isinstance(o, MediaResult) for o in outcomes)
    assert MODELS.loaded("llm") == []
    assert MODELS.releases["llm"] - releases == 1
