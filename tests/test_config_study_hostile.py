"""Settings files and study files as a careless or hostile user leaves them.

A config file that is binary, UTF-16, a FIFO, a device or nested past the parser's depth, and a
study file whose keys hold the wrong shape (``study = 5``, a top-level ``queries``, ``seeds =
[true]``), each end in one line naming the file (and for a study file the line) with exit 1;
nothing is written and the file is left as it was. A study's name and its model names reach the
terminal and the report as text, never as terminal escapes, Rich markup or HTML.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliResult, FaultProxy
from popcorn.config import load_settings
from popcorn.errors import ConfigError

RunCli = Callable[..., CliResult]
HOSTILE = "[/] [red]x[/red]\x1b[2J\x1b]0;pwned\x07"
DEEP_TOML = "a = " + "[" * 5000 + "]" * 5000 + "\n"
QUERY = "A cat learning to skateboard"
SCRIPT = {
    "title": "The Kickflip Kitten",
    "cover_prompt": "A grey kitten balancing on a skateboard in a sunny park",
    "video_prompt": "A grey kitten pushes off, wobbles and rolls across the park"
    " on a skateboard, handheld",
}


def assert_one_clean_line(text: str) -> None:
    assert len(text.strip().splitlines()) == 1, text
    assert "internal error" not in text and "please report it" not in text, text
    assert "\x1b" not in text and "\x07" not in text, repr(text)


# --- config files -----------------------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8", "NUL bytes", id="binary"),
    pytest.param(b"\xff\xfeb\x00a\x00d\x00", "NUL bytes", id="utf-16-bom"),
    pytest.param('[llm]\nspec = "x"\n'.encode("utf-16-le"), "NUL bytes", id="utf-16-no-bom"),
    pytest.param(b'[llm]\nspec = "\xff\xfe"\n', "not UTF-8 text", id="latin-1"),
    pytest.param(DEEP_TOML.encode(), "nested too deeply", id="deeply-nested"),
    pytest.param(b"[llm]\nspec = '" + b"x" * 2**20 + b"'\n", "more than the", id="huge"),
]


@pytest.mark.parametrize(("content", "message"), BAD_CONFIGS)
def test_a_project_file_that_is_not_toml_text_is_a_one_line_error_naming_it(
    tmp_path: Path, content: bytes, message: str
) -> None:
    cfg = tmp_path / "popcorn.toml"
    cfg.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(cfg, environ={})
    assert str(cfg) in str(err.value) and "\n" not in str(err.value)
    assert cfg.read_bytes() == content


@pytest.mark.parametrize(("content", "message"), BAD_CONFIGS[:5])
def test_a_bad_user_file_stops_the_cli_with_one_line_and_is_kept(
    cli: RunCli, isolated: Path, content: bytes, message: str
) -> None:
    user = isolated / ".user-config" / "popcorn" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_bytes(content)
    result = cli("generate", QUERY, "--video", "none", "--cover", "none")
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert message in result.err and "config.toml" in result.err
    assert user.read_bytes() == content
    assert not (isolated / "popcorn-runs").exists()


def test_a_config_that_is_a_fifo_or_a_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "popcorn.toml"
    os.mkfifo(fifo)  # opening it to read would wait forever for a writer
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="not a regular file") as err:
            load_settings(path, environ={})
        assert str(path) in str(err.value)


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    cfg = tmp_path / "popcorn.toml"
    cfg.write_bytes(b'\xef\xbb\xbf[llm]\nspec = "ollama:llama3"\n')
    assert load_settings(cfg, environ={}).llm.spec == "ollama:llama3"


# --- study files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('study = 5\n[queries]\nq = "q.txt"\n', "line 1: 'study' must be a [study] section"),
        ('queries = "q.txt"\n', "line 1: 'queries' must be a [queries] section"),
        ('[study]\nseeds = [true]\n[queries]\nq = "q.txt"\n', "line 2: seeds must be"),
        ('[study]\nseeds = [4294967296]\n[queries]\nq = "q.txt"\n', "line 2: seeds must be"),
        ('[study]\nconcurrency = true\n[queries]\nq = "q.txt"\n', "line 2: concurrency must be"),
        ('[study]\ncandidates = true\n[queries]\nq = "q.txt"\n', "line 2: candidates must be"),
        ('[study]\nname = ["a"]\n[queries]\nq = "q.txt"\n', "line 2: name must be a string"),
        ('[study]\ncorpus = "c\\u0000"\n[queries]\nq = "q.txt"\n', "line 2: corpus must be"),
        ('[study]\n[queries]\nq = "q\\u0000.txt"\n', "line 3: query set 'q' must be a file"),
        ('[study]\n[queries]\n"q\\u001b[2J" = "q.txt"\n', "line 1: query set name"),
        ('[study]\nllms = ["openai"]\n[queries]\nq = "q.txt"\n', "line 2: LLM 'openai' needs"),
        ("[study]\nseeds = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_a_study_file_with_a_wrong_shape_names_the_key_and_line(
    cli: RunCli, tmp_path: Path, body: str, message: str
) -> None:
    (tmp_path / "q.txt").write_text(QUERY + "\n")
    study = tmp_path / "study.toml"
    study.write_text(body)
    for command in ("status", "run"):
        result = cli("study", command, str(study))
        assert result.code == 1, result.err
        assert_one_clean_line(result.err)
        assert message in result.err
    assert study.read_text() == body
    assert not (tmp_path / "study.study").exists()


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01binary\xff", "[study]\n".encode("utf-16"), b"[study]\nname = '\xe9'\n"],
    ids=["binary", "utf-16", "latin-1"],
)
def test_a_study_file_that_is_not_utf8_text_is_a_one_line_error(
    cli: RunCli, tmp_path: Path, content: bytes
) -> None:
    study = tmp_path / "study.toml"
    study.write_bytes(content)
    result = cli("study", "status", str(study))
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert "cannot read study file" in result.err and "UTF-8" in result.err
    assert study.read_bytes() == content


def test_a_study_file_that_is_a_device_is_refused_without_reading_it(cli: RunCli) -> None:
    result = cli("study", "status", "/dev/zero")
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert "not a regular file" in result.err


# --- what a study's own text may hold ---------------------------------------------------------


def write_hostile_study(folder: Path) -> Path:
    (folder / "q.txt").write_text(QUERY + "\n")
    study = folder / "study.toml"
    name = HOSTILE.replace("\x1b", "\\u001b").replace("\x07", "\\u0007")
    study.write_text(
        f'[study]\nname = "{name} </title><script>alert(1)</script>"\nprofile = "popcorn"\n'
        'llms = ["openai:[bold]m[/bold]\\u001b]0;t\\u0007"]\nvideos = ["none"]\n'
        'covers = ["none"]\n[queries]\nq = "q.txt"\n'
    )
    return study


def test_study_status_shows_model_names_literally(
    cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault_proxy: FaultProxy
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no folding of the shown configuration
    monkeypatch.setenv("OPENAI_BASE_URL", fault_proxy.url)
    fault_proxy.answer_next(json.dumps(SCRIPT))
    study = write_hostile_study(tmp_path)
    assert cli("study", "run", str(study)).code == 0
    result = cli("study", "status", str(study))
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "openai:[bold]m[/bold] | basic | none | none" in result.out


def test_the_report_keeps_escapes_and_html_of_the_study_name_out(
    cli: RunCli, tmp_path: Path
) -> None:
    study = write_hostile_study(tmp_path)
    result = cli("study", "report", str(study))
    assert result.code == 0, result.err
    report = tmp_path / "study.study" / "report"
    md = (report / "report.md").read_text()
    page = (report / "report.html").read_text()
    for text in (md, page, result.out):
        assert "\x1b" not in text and "\x07" not in text
    assert md.startswith("# Study report: [/] [red]x[/red] &lt;/title&gt;&lt;script&gt;")
    assert "<script>" not in page
    assert "<title>Study report: [/] [red]x[/red] &lt;/title&gt;&lt;script&gt;" in page


def test_an_unreadable_human_scores_file_is_noted_and_the_report_is_written(
    cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "predictor").mkdir()
    human = tmp_path / "predictor" / "human.json"
    human.write_text('{"scores": [1.0, "NaN?"]}')
    (tmp_path / "q.txt").write_text(QUERY + "\n")
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nprofile = "popcorn"\nllms = ["openai:m"]\nvideos = ["none"]\n'
        'covers = ["none"]\npredictor = "predictor"\n[queries]\nq = "q.txt"\n'
    )
    result = cli("study", "report", str(study))
    assert result.code == 0, result.err
    md = (tmp_path / "study.study" / "report" / "report.md").read_text()
    assert "The human row is left out" in md and "human.json" in md
    assert human.read_text() == '{"scores": [1.0, "NaN?"]}'
