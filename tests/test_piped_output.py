"""Output that pipes: progress lines a log can read, lists one row a line, ``--json`` where a
script wants it, and one line (no opener noise) when there is no desktop to open a file on."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from conftest import FaultProxy

MOCK = ["--llm", "mock:x", "--profile", "paper", "--video", "none", "--cover", "none"]
ESCAPES = re.compile(r"[\x1b\r\x9b]")
SCRIPT = {
    "title": "Bangkok Noodles in Wok Fire",
    "cover_prompt": "Steam rising from a wok at a crowded Bangkok night market, neon signs",
    "video_prompt": "A cook flips noodles in a flaming wok as the camera pushes in through steam",
}


def popcorn(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """``popcorn ARGS`` in a child process whose stdout and stderr are pipes, as under nohup."""
    return subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
    )  # fmt: skip


def test_a_piped_batch_prints_plain_progress_lines_with_counts_and_time_left(tmp_path: Path):
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"A cat learning trick number {n}\n" for n in range(1, 41)))
    done = popcorn("generate", "--queries", str(queries), *MOCK, "--out", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert not ESCAPES.search(done.stderr)  # no colours, no bar redrawn with carriage returns
    lines = done.stderr.splitlines()
    progress = [line for line in lines if line.startswith("popcorn: generating: ")]
    counts = [int(re.search(r"generating: (\d+)/40 ", line)[1]) for line in progress]
    # One line per 5% of the 40 queries (every second one), from the start to the end.
    assert counts == list(range(0, 41, 2)), counts
    assert all(", 0 failed, " in line and " elapsed" in line for line in progress)
    assert all(" left" in line for line in progress[1:-1])  # an ETA while work remains
    assert progress[-1].startswith("popcorn: generating: 40/40 (100%), 0 failed, ")
    # The summary after it is one whole line, not hard-wrapped at 80 columns.
    summary = lines[-1]
    assert summary.startswith("40 of 40 done (40 new, 0 already done), 0 failed; runs in ")
    assert summary.endswith(str(tmp_path / "runs")) and len(summary) > 80


def test_runs_list_piped_is_one_run_a_line_with_whole_names(tmp_path: Path):
    queries = tmp_path / "queries.txt"
    long = "A very long idea about a cat who learns to ride a skateboard down the hill at dawn"
    queries.write_text(f"{long}\nRamen at night\n")
    runs = str(tmp_path / "runs")
    assert popcorn("generate", "--queries", str(queries), *MOCK, "--out", runs).returncode == 0
    listed = popcorn("runs", "list", "--out", runs)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0] == ["created", "status", "mode", "score", "title / query", "run"]
    assert len(rows) == 3 and all(len(row) == 6 for row in rows)  # one run a line, no wrapping
    names = {row[5] for row in rows[1:]}
    assert names == {p.name for p in Path(runs).iterdir()}  # whole names, as folders are called
    assert not ESCAPES.search(listed.stdout) and "  \n" not in listed.stdout


def test_llms_and_generators_list_as_json_lines(cli):
    llms = [json.loads(line) for line in cli("llms", "--json").out.splitlines()]
    forms = {row["form"] for row in llms if "form" in row}
    assert {"embedded", "openai:MODEL", "hf:MODEL_ID", "mock:NAME"} <= forms
    assert all(isinstance(row.get("options", {}), dict) for row in llms)

    found = cli("generators", "--json")
    assert found.code == 0, found.err
    rows = [json.loads(line) for line in found.out.splitlines()]
    by_name = {(row["kind"], row["name"]): row for row in rows}
    assert by_name["video", "preview"]["model"] is None
    ltx = by_name["video", "ltx"]
    assert ltx["model"] == "Lightricks/LTX-Video" and ltx["notes"][0].startswith("the study")
    assert ("cover", "sd15") in by_name


def test_corpus_info_as_json(cli, make_indexed_corpus):
    folder = make_indexed_corpus(videos=220, seed=5)
    found = cli("corpus", "info", "--corpus", str(folder), "--json")
    assert found.code == 0, found.err
    info = json.loads(found.out)
    assert info["corpus"] == str(folder) and info["videos"] == 220
    assert info["categories"] > 1 and info["source"].startswith("microlens")
    assert info["index"]["usable"] and info["index"]["embedder"] == "minilm-l6"
    assert info["index"]["videos"] == 220


def test_a_failed_single_query_with_json_prints_query_and_error(cli, fault_proxy: FaultProxy):
    fault_proxy.answer_next("I would rather not write JSON today.")
    failed = cli(
        "generate", "A cat learning to skateboard", "--llm", "openai:m", "--base-url",
        fault_proxy.url, "--attempts", "1", "--video", "none", "--cover", "none", "--json",
    )  # fmt: skip
    assert failed.code == 1
    outcome = json.loads(failed.out)
    assert outcome["query"] == "A cat learning to skateboard" and outcome["error"]
    assert set(outcome) == {"query", "error"}
    assert failed.err.count("\n") == 1 and failed.err.startswith("popcorn: error: ")


def _one_run(cli, fault_proxy: FaultProxy, *answers: str) -> Path:
    for answer in [*answers, json.dumps(SCRIPT)]:
        fault_proxy.answer_next(answer)
    done = cli(
        "generate", "Street food in Bangkok at night", "--llm", "openai:m", "--base-url",
        fault_proxy.url, "--json", "--video", "none",
    )  # fmt: skip
    assert done.code == 0, done.err
    return Path(json.loads(done.out)["run_dir"])


def _desktopless_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, **extra}


def test_runs_open_with_no_display_is_one_line_naming_the_file(cli, fault_proxy, tmp_path):
    run = _one_run(cli, fault_proxy)
    cover = run / json.loads((run / "manifest.json").read_text())["files"]["cover"]
    opened = popcorn("runs", "open", run.name, env=_desktopless_env(), cwd=tmp_path)
    assert opened.returncode == 1
    assert opened.stderr.count("\n") == 1 and "no display" in opened.stderr
    assert f"open {cover} by hand" in opened.stderr  # the path as the run store names it


def test_runs_open_when_the_opener_fails_hides_its_noise(cli, fault_proxy, tmp_path: Path):
    """A desktop cannot run here: an ``xdg-open`` that complains and fails stands in for one
    whose session has gone."""
    run = _one_run(cli, fault_proxy)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"
    opener.write_text("#!/bin/sh\necho 'xdg-open: no method available for opening' >&2\nexit 3\n")
    opener.chmod(opener.stat().st_mode | stat.S_IXUSR)
    env = _desktopless_env(DISPLAY=":0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opened = popcorn("runs", "open", run.name, "--folder", env=env, cwd=tmp_path)
    assert opened.returncode == 1
    assert opened.stderr.count("\n") == 1 and "no method available" not in opened.stderr
    assert "xdg-open could not open it (exit status 3)" in opened.stderr
    assert f"open {run} by hand" in opened.stderr


def test_runs_show_transcript_shows_the_conversation_as_plain_text(cli, fault_proxy):
    hostile = "Here it is [red]\x1b]0;pwned\x07 (no JSON, sorry)"
    run = _one_run(cli, fault_proxy, hostile)  # refused, then the script of the second attempt
    shown = cli("runs", "show", run.name, "--transcript")
    assert shown.code == 0, shown.err
    text = shown.out
    first, second = text.split("=== attempt 2 ")
    assert first.startswith("=== attempt 1 (seed ")
    assert "--- system\n" in first and "--- user\n" in first and "Street food in Bangkok" in first
    # The model's words literally (no markup read), without the escape that retitles a window.
    assert "--- answer\nHere it is [red] (no JSON, sorry)\n" in first
    assert "\x1b" not in text and "\x07" not in text
    assert "--- outcome: not kept (" in first
    assert "Bangkok Noodles in Wok Fire" in second and "--- outcome: kept" in second
    whole = json.loads(cli("runs", "show", run.name, "--transcript", "--json").out)
    assert whole["attempts"][0]["raw"] == hostile

    (run / "transcript.json").unlink()
    gone = cli("runs", "show", run.name, "--transcript")
    assert gone.code == 1 and gone.err.count("\n") == 1 and "has no transcript.json" in gone.err


def test_a_piped_study_prints_a_progress_line_per_job_of_each_stage(tmp_path: Path):
    (tmp_path / "queries.csv").write_text("prompt\nA cat on a skateboard\nRamen at night\n")
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nname = "piped"\nprofile = "popcorn"\nllms = ["mock:m"]\nmodes = ["basic"]\n'
        'videos = ["none"]\ncovers = ["none"]\n\n[queries]\nq = "queries.csv"\n'
    )
    done = popcorn("study", "run", str(study), "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not ESCAPES.search(done.stderr)
    lines = done.stderr.splitlines()
    steps = [line.split(" (")[0] for line in lines if line.startswith("popcorn: ")]
    assert steps == [
        "popcorn: script: 1/2",
        "popcorn: script: 2/2",
        "popcorn: media: 1/2",
        "popcorn: media: 2/2",
    ]
    assert lines[-1].startswith("2 jobs (2 new, 0 resumed after a stop; profile popcorn): ran ")
