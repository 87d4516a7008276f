"""A paper study is scored by MMRA's recipe or says otherwise, and best-of-N is refused under it
(issue 23, sections 1 and 5): the judge may not pick the winner it then scores."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from popcorn.errors import UsageError
from popcorn.predictor.folder import PredictorFolder
from popcorn.study.judge import JudgeError, check_judge, judge_header
from popcorn.study.spec import load_study


def write(folder: Path, study: str, queries: tuple[str, ...] = ("A cat on a skateboard",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.txt").write_text("".join(f"{q}\n" for q in queries))
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(study).lstrip() + '[queries]\nq = "q.txt"\n')
    return path


@pytest.fixture(scope="module")
def mmra_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor trained briefly with MMRA's recipe on generated videos and toy encoders."""
    from toys.predictor import build_toy_predictor

    return build_toy_predictor(
        tmp_path_factory.mktemp("mmra-judge"), videos=30, seed=4, epochs=2, recipe="mmra"
    )


def test_a_paper_study_refuses_a_predictor_not_trained_with_mmras_recipe(
    small_predictor: Path, tmp_path: Path
):
    study = load_study(write(tmp_path, f'[study]\npredictor = "{small_predictor}"\n'))
    assert study.profile == "paper"
    with pytest.raises(JudgeError) as refused:
        check_judge(study)
    message = str(refused.value)
    assert "'popcorn' recipe" in message and 'allow_judge = "popcorn"' in message
    assert "\n" not in message


def test_the_study_run_command_refuses_it_in_one_line(cli, small_predictor: Path, tmp_path: Path):
    path = write(tmp_path, f'[study]\nllms = ["mock:x"]\npredictor = "{small_predictor}"\n')
    result = cli("study", "run", str(path))
    assert result.code == 1 and "profile 'paper' scores with MMRA's predictor" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "study.study" / "ledger.sqlite").exists()  # refused before a job


def test_the_popcorn_profile_scores_with_any_recipe(small_predictor: Path, tmp_path: Path):
    body = f'[study]\nprofile = "popcorn"\npredictor = "{small_predictor}"\n'
    check_judge(load_study(write(tmp_path, body)))


def test_an_mmra_predictor_judges_a_paper_study_and_the_report_names_it(
    mmra_predictor: Path, tmp_path: Path
):
    study = load_study(write(tmp_path, f'[study]\npredictor = "{mmra_predictor}"\n'))
    check_judge(study)
    record = PredictorFolder.read(mmra_predictor)
    (line,) = judge_header(study)
    assert "recipe mmra" in line
    assert f"split {record.split.sha256[:16]}" in line
    assert f"weights {record.weights_sha256[:16]}" in line


def test_allow_judge_lets_a_paper_study_score_with_popcorns_recipe_and_the_report_says_so(
    cli, small_predictor: Path, tmp_path: Path
):
    path = write(
        tmp_path,
        f"""
        [study]
        llms = ["mock:x"]
        covers = ["none"]
        predictor = "{small_predictor}"
        allow_judge = "popcorn"
        """,
    )
    ran = cli("study", "run", str(path), "--json")
    assert ran.code == 0, ran.err
    assert cli("study", "report", str(path)).code == 0
    report = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert "recipe popcorn" in report
    assert 'Judge override: allow_judge = "popcorn"' in report


def test_allow_judge_naming_another_recipe_still_refuses(small_predictor: Path, tmp_path: Path):
    body = f'[study]\npredictor = "{small_predictor}"\nallow_judge = "something-else"\n'
    with pytest.raises(JudgeError):
        check_judge(load_study(write(tmp_path, body)))


def test_best_of_n_is_refused_at_load_in_a_paper_study(small_predictor: Path, tmp_path: Path):
    body = f'[study]\ncandidates = 3\npredictor = "{small_predictor}"\n'
    with pytest.raises(UsageError, match=r"study.toml line 2: best-of-N .* under profile 'paper'"):
        load_study(write(tmp_path, body))
    popcorn = body.replace("[study]\n", '[study]\nprofile = "popcorn"\n')
    assert load_study(write(tmp_path / "popcorn", popcorn)).candidates == 3
