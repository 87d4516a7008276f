"""The example study (examples/study.toml, shown in the README) runs as written: the commands
in its header comment, one after the other, in a copy of its folder, on the embedded LLM."""

from __future__ import annotations

import csv
import json
import shlex
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the embedded LLM writes four scripts for real

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def header_commands(study_file: Path) -> list[list[str]]:
    """The ``popcorn ...`` commands of the file's header comment, as argument lists."""
    commands = []
    for line in study_file.read_text().splitlines():
        text = line.lstrip("#").strip()
        if line.startswith("#") and text.startswith("popcorn "):
            commands.append(shlex.split(text, comments=True)[1:])
    return commands


def test_the_example_study_runs_as_written(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns(*_made()))
    monkeypatch.chdir(folder)
    commands = header_commands(folder / "study.toml")
    assert [c[:2] for c in commands] == [
        ["corpus", "synth"],
        ["corpus", "import"],
        ["corpus", "index"],
        ["study", "run"],
        ["study", "status"],
        ["study", "report"],
    ]
    for command in commands:
        result = cli(*command)
        assert result.code == 0, (command, result.err)

    status = json.loads(cli("study", "status", "study.toml", "--json").out)
    assert status["overall"] == {"done": 4} and status["failures"] == {}
    with (folder / "study.study" / "report" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["mode"], r["status"]) for r in rows} == {("basic", "done"), ("pe:3", "done")}
    assert all(r["title"].strip() for r in rows)
    assert (folder / "study.study" / "report" / "report.html").stat().st_size > 0


def _made() -> list[str]:
    """What the commands make beside the file (examples/.gitignore lists them): a copy taken
    after someone ran the example locally must start afresh."""
    ignored = (EXAMPLES / ".gitignore").read_text().splitlines()
    return [line.rstrip("/") for line in ignored if line and not line.startswith("#")]
