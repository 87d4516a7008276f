"""Studies end to end on the embedded defaults: a handful of queries x basic/PE x the preview
renderer x a tiny trained predictor; resumption after SIGKILL; the Ray executor; the report.

These studies run the ``popcorn`` profile: the harness is what they test, and the embedded
SmolLM2 writes parseable scripts only under its JSON grammar (the paper profile sends no
schema; tests/test_profile_study.py runs the paper profile)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popcorn.study.spec import load_study

pytestmark = pytest.mark.slow

# Queries whose scripts the embedded SmolLM2 writes in both modes (for "A cat learning to
# skateboard" its PE answers repeat the prompt, which the quality gate rightly refuses).
QUERIES = """prompt,type
A dog surfing a wave at sunset,concrete
Why minimalism makes people happier,abstract
"""
COMPARED = ("query", "type", "llm", "mode", "refs", "video", "status", "title", "score")


@pytest.fixture(scope="module")
def corpus_dir(make_indexed_corpus) -> Path:
    return make_indexed_corpus()


def write_study(
    folder: Path, corpus: Path, predictor: Path, modes: str = '"basic", "pe:3"'
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "queries.csv").write_text(QUERIES)
    path = folder / "study.toml"
    path.write_text(
        f"""[study]
name = "demo"
profile = "popcorn"
llms = ["embedded"]
modes = [{modes}]
videos = ["preview"]
covers = ["preview"]
seeds = [42]
predictor = "{predictor}"
corpus = "{corpus}"

[queries]
demo = "queries.csv"
"""
    )
    return path


def table(study_file: Path) -> list[tuple[str, ...]]:
    with (study_file.parent / "study.study" / "report" / "results.csv").open() as f:
        rows = [tuple(r[c] for c in COMPARED) for r in csv.DictReader(f)]
    return sorted(rows)


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, small_predictor: Path
) -> Path:
    """An uninterrupted local run of the study, with its report."""
    from click.testing import CliRunner

    from popcorn.cli.main import cli

    path = write_study(tmp_path_factory.mktemp("reference"), corpus_dir, small_predictor)
    ran = CliRunner().invoke(cli, ["study", "run", str(path), "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["ran"] == {"script": 4, "media": 4, "score": 4}
    reported = CliRunner().invoke(cli, ["study", "report", str(path), "--json"])
    assert reported.exit_code == 0, reported.output
    return path


def test_the_study_writes_a_report_with_tables_and_plots(reference: Path):
    report = reference.parent / "study.study" / "report"
    for name in (
        "report.md",
        "report.html",
        "results.csv",
        "results.parquet",
        "distributions.png",
        "distributions.svg",
    ):
        assert (report / name).stat().st_size > 0, name
    md = (report / "report.md").read_text()
    assert "## Predicted popularity: concrete" in md and "## Predicted popularity: abstract" in md
    assert "human (held-out real videos)" in md
    assert "| embedded | pe:3 | 2 |" in md  # PE against basic, paired over the two queries
    assert "PREVIEW" in md
    rows = table(reference)
    assert len(rows) == 4 and all(r[6] == "done" and float(r[8]) > 0 for r in rows)
    import pyarrow.parquet as pq

    assert pq.read_table(report / "results.parquet").num_rows == 4
    assert "Holm" in md and "| LLM | PE mode | queries | dropped |" in md


def test_the_distribution_plot_shows_every_clip_and_names_its_markers(tmp_path: Path):
    import re

    from popcorn.study.report import _figures

    rows = [
        {"llm": "m", "mode": mode, "video": "preview", "score": float(i), "refs": 3,
         "categories": 1}
        for mode, count in (("basic", 4), ("pe:3", 7))
        for i in range(count)
    ]  # fmt: skip
    assert _figures({"concrete": rows}, None, tmp_path)[0] == "distributions.png"
    svg = (tmp_path / "distributions.svg").read_text()
    points = [
        g.count("<use") for g in re.findall(r'<g id="PathCollection_\d+">(.*?)</g>', svg, re.S)
    ]
    assert sorted(points) == [4, 7]  # one dot per clip, beside its box
    assert {"mean", "median"} <= set(re.findall(r"<!-- (.*?) -->", svg))  # the legend


def test_a_rerun_does_nothing_twice(cli, reference: Path):
    result = cli("study", "run", str(reference), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["ran"] == {}
    status = json.loads(cli("study", "status", str(reference), "--json").out)
    assert status["overall"] == {"done": 4}


def test_a_killed_study_resumes_to_the_same_results(
    cli, reference: Path, corpus_dir: Path, small_predictor: Path, tmp_path: Path
):
    path = write_study(tmp_path / "killed", corpus_dir, small_predictor)
    ledger = path.parent / "study.study" / "ledger.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-m", "popcorn.cli.main", "study", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if ledger.exists() and _scripts_done(ledger) >= 1:
                break
            time.sleep(0.2)
        assert child.poll() is None, "the study finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    before = _finished_runs(path)
    assert 1 <= len(before) < 4
    resumed = cli("study", "run", str(path), "--json")
    assert resumed.code == 0, resumed.err
    summary = json.loads(resumed.out)
    assert summary["ran"]["script"] <= 4 - len(before) + 1  # the job caught mid-write at most
    after = _finished_runs(path)
    assert {k: after[k] for k in before} == before  # finished scripts were not written again
    assert cli("study", "report", str(path)).code == 0
    assert table(path) == table(reference)


def _scripts_done(ledger: Path) -> int:
    with sqlite3.connect(ledger, timeout=5) as db:
        try:
            found = db.execute("SELECT COUNT(*) FROM jobs WHERE stage != 'script'").fetchone()
        except sqlite3.OperationalError:  # the child has created the file, not the table yet
            return 0
        return int(found[0])


def _finished_runs(study_file: Path) -> dict[str, str]:
    """Run folder -> the time its script was written, for runs with a script."""
    runs = study_file.parent / "study.study" / "runs"
    out = {}
    for manifest in runs.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        if data["files"].get("script"):
            out[manifest.parent.name] = data["created_at"]
    return out


def test_the_ray_executor_gives_the_same_results_table(
    cli, reference: Path, corpus_dir: Path, small_predictor: Path, tmp_path: Path
):
    pytest.importorskip("ray")
    path = write_study(tmp_path / "ray", corpus_dir, small_predictor)
    try:
        result = cli("study", "run", str(path), "--executor", "ray", "--json")
    finally:
        import ray

        ray.shutdown()
    assert result.code == 0, result.err
    assert json.loads(result.out)["ran"] == {"script": 4, "media": 4, "score": 4}, result.out
    assert cli("study", "report", str(path)).code == 0
    assert table(path) == table(reference)


def test_a_changed_study_runs_only_its_new_cells(cli, reference: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "changed"
    shutil.copytree(reference.parent, copy)
    text = (copy / "study.toml").read_text().replace('"basic", "pe:3"', '"basic", "pe:3", "pe:5"')
    (copy / "study.toml").write_text(text)
    result = cli("study", "run", str(copy / "study.toml"), "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["new"] == 2 and summary["ran"] == {"script": 2, "media": 2, "score": 2}


def test_failing_jobs_are_recorded_and_the_study_goes_on(cli, tmp_path: Path):
    (tmp_path / "q.txt").write_text("A cat learning to skateboard\n")
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nprofile = "popcorn"\nllms = ["embedded", "gguf:missing.gguf"]\n'
        'videos = ["preview"]\ncovers = ["none"]\n\n[queries]\nq = "q.txt"\n'
    )
    # The check before the first job would refuse the missing file; run past it.
    result = cli("study", "run", str(study), "--json", "--no-check")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["failed"] == {"script": 1} and summary["ran"]["media"] == 1
    assert cli("study", "report", str(study)).code == 0
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert "| script | 1 | UsageError |" in md  # stage, jobs, reason


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[study]\nllm = ["embedded"]\n[queries]\nq = "q.txt"\n', "line 2: unknown key 'llm'"),
        ('[study]\nmodes = ["pe:x"]\n[queries]\nq = "q.txt"\n', "line 2: mode 'pe:x'"),
        ('[study]\nvideos = ["sora"]\n[queries]\nq = "q.txt"\n', "line 2: unknown generator"),
        ('[study]\n[queries]\nq = "missing.txt"\n', "line 3: query set 'q'"),
        ('[study]\nseeds = [-1]\n[queries]\nq = "q.txt"\n', "line 2: seeds must be"),
        ('[study]\nllms = ["gpt5"]\n[queries]\nq = "q.txt"\n', "line 2: unknown LLM 'gpt5'"),
        ('[stuff]\n[queries]\nq = "q.txt"\n', "line 1: unknown section"),
        ("[study\n", "study.toml"),
    ],
)
def test_bad_study_files_name_the_line(cli, tmp_path: Path, body: str, message: str):
    (tmp_path / "q.txt").write_text("A cat learning to skateboard\n")
    (tmp_path / "study.toml").write_text(body)
    result = cli("study", "run", str(tmp_path / "study.toml"))
    assert result.code == 1
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_jobs_have_content_addressed_keys(tmp_path: Path):
    (tmp_path / "q.txt").write_text("A\nB\n")
    (tmp_path / "study.toml").write_text(
        '[study]\nmodes = ["basic", "pe:10:2"]\nseeds = [1, 2]\n[queries]\nq = "q.txt"\n'
    )
    jobs = load_study(tmp_path / "study.toml").jobs()
    assert len(jobs) == 2 * 2 * 2 and len({j.key for j in jobs}) == 8
    again = load_study(tmp_path / "study.toml").jobs()
    assert [j.key for j in jobs] == [j.key for j in again]
    assert jobs[2].mode.refs == 10 and jobs[2].mode.categories == 2


def test_a_best_of_n_study_keeps_each_jobs_best_candidate(
    cli, corpus_dir: Path, small_predictor: Path, tmp_path: Path
):
    path = write_study(tmp_path / "best", corpus_dir, small_predictor, modes='"basic"')
    path.write_text(path.read_text().replace("seeds = [42]", "seeds = [42]\ncandidates = 2"))
    (path.parent / "queries.csv").write_text("prompt,type\nA cat learning to skateboard,concrete\n")
    result = cli("study", "run", str(path), "--json")
    assert result.code == 0, result.err
    assert cli("study", "report", str(path)).code == 0
    with (path.parent / "study.study" / "report" / "results.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    saved = json.loads((Path(row["run_dir"]) / "candidates.json").read_text())
    scores = [c["score"] for c in saved["candidates"] if c["rendered"]]
    assert len(saved["candidates"]) == 2 and row["candidates"] == "2"
    assert float(row["score"]) == pytest.approx(max(scores), abs=1e-3)
    assert saved["winner"] == row["run_dir"]


def test_a_full_ledger_is_a_one_line_error_and_keeps_what_was_committed(tmp_path: Path):
    from popcorn.errors import PopcornError
    from popcorn.study.ledger import Ledger

    (tmp_path / "q.txt").write_text("".join(f"Idea {i}\n" for i in range(300)))
    (tmp_path / "study.toml").write_text('[study]\n[queries]\nq = "q.txt"\n')
    jobs = load_study(tmp_path / "study.toml").jobs()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add(jobs[:5])
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    ledger.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    with pytest.raises(PopcornError, match=r"cannot write the study ledger .*full"):
        ledger.add(jobs[5:])
    assert ledger.count() == 5 and not ledger.db.in_transaction
    ledger.close()
