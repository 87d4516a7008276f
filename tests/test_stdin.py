"""Queries piped in: ``popcorn generate -`` and ``--queries -`` read standard input, as a
script or a scheduler would feed them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MOCK = ["--llm", "mock:x", "--profile", "paper", "--video", "none", "--cover", "none"]


def _generate(tmp_path: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popcorn.cli.main", "generate", *args, *MOCK,
         "--out", str(tmp_path / "runs"), "--json"],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_query_piped_into_generate_dash_is_the_query(tmp_path: Path):
    done = _generate(tmp_path, "A cat learning to skateboard\n", "-")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["query"] == "A cat learning to skateboard"  # not "-"


def test_generate_dash_refuses_several_lines_and_points_to_queries_dash(tmp_path: Path):
    done = _generate(tmp_path, "A cat\nA dog\n", "-")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "popcorn: error: standard input holds 2 lines: QUERY '-' reads one line "
        "(--queries - reads one query a line)"
    ]
    assert not (tmp_path / "runs").exists()  # nothing was asked of the model


def test_queries_dash_reads_one_query_a_line_or_json_lines(tmp_path: Path):
    lines = _generate(tmp_path, "A cat learning to skateboard\n# a comment\nRamen at night\n",
                      "--queries", "-")  # fmt: skip
    assert lines.returncode == 0, lines.stderr
    found = {json.loads(line)["query"] for line in lines.stdout.splitlines()}
    assert found == {"A cat learning to skateboard", "Ramen at night"}

    rows = '{"prompt": "Street food in Bangkok", "type": "concrete"}\n{"prompt": 12}\n'
    jsonl = _generate(tmp_path / "j", rows, "--queries", "-")
    outcomes = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [o["query"] for o in outcomes if "error" not in o] == ["Street food in Bangkok"]
    assert any("standard input line 2" in o.get("error", "") for o in outcomes)
