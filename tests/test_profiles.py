"""The two profiles: the table of differences in docs/profiles.md is the code's, and settings
follow the chosen profile unless the user set them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popcorn import profiles
from popcorn.config import load_settings
from popcorn.errors import UsageError

TABLE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"


def test_the_docs_table_is_generated_from_the_profiles():
    text = TABLE_PAGE.read_text(encoding="utf-8")
    found = re.search(r"<!-- profiles:begin -->\n(.*?)\n<!-- profiles:end -->", text, re.S)
    assert found, "docs/profiles.md lost its profiles table markers"
    assert found.group(1).strip() == profiles.markdown_table(), (
        "docs/profiles.md's profiles table is stale: "
        "paste the output of 'python -m popcorn.profiles'"
    )


def test_every_difference_says_why():
    rows = profiles.differences()
    assert rows, "the profiles must differ somewhere"
    for setting, paper, ours, why in rows:
        assert paper != ours
        assert why.strip(), f"{setting}: say why Popcorn differs"


def test_the_profile_fills_only_what_the_user_left_unset(tmp_path: Path):
    paper = load_settings(profile="paper")
    assert paper.run.profile == "paper" and paper.profile is profiles.PAPER
    assert paper.decoding.max_tokens == profiles.PAPER.max_tokens
    assert paper.pe.embedder == profiles.PAPER.embedder
    ours = load_settings()
    assert ours.profile is profiles.POPCORN
    assert ours.decoding.max_tokens == profiles.POPCORN.max_tokens
    explicit = load_settings(flags={"decoding": {"max_tokens": 300}}, profile="paper")
    assert explicit.decoding.max_tokens == 300
    (tmp_path / "popcorn.toml").write_text('[run]\nprofile = "paper"\n')
    assert load_settings(tmp_path / "popcorn.toml").profile is profiles.PAPER
    assert load_settings(environ={"POPCORN_PROFILE": "paper"}).profile is profiles.PAPER


def test_an_unknown_profile_is_a_one_line_error(cli, monkeypatch: pytest.MonkeyPatch):
    result = cli("generate", "cats", "--profile", "fancy")
    assert result.code == 2 and "fancy" in result.err
    with pytest.raises(UsageError, match="choose paper or popcorn"):
        profiles.get("fancy")
    monkeypatch.setenv("POPCORN_PROFILE", "fancy")
    bad = cli("generate", "cats")
    assert bad.code == 1 and "run.profile" in bad.err
    assert bad.err.count("\n") == 1
