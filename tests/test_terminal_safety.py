"""What reaches the terminal: text from a model, a corpus, a file or the user is shown as
written, never read as Rich markup, and never carries escape sequences or control characters
(a screen clear, a window title, a hyperlink) to the user's terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conftest import FaultProxy
from popcorn.safety import one_line, plain, shown

# What a hostile or confused model writes: a markup closing tag with nothing to close, markup
# that would colour (and vanish), a screen clear, a window title set by OSC, a bell.
HOSTILE = "[/] [red]x[/red]\x1b[2J\x1b]0;pwned\x07"
# The same, as a terminal must show it.
LITERAL = "[/] [red]x[/red]"

SCRIPT = {
    "title": f"Skate {HOSTILE}",
    "cover_prompt": "A kitten on a skateboard \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "video_prompt": "The kitten rolls :cat: [bold]down[/bold] the ramp\x9b31m"
    " and\r lands in close-up",
}


def assert_terminal_safe(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich lays out for 200 columns, so no shown value is folded across lines."""
    monkeypatch.setenv("COLUMNS", "200")


# --- popcorn.safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x1b[2Jb", "ab"),  # CSI: clear screen
        ("a\x1b[38;5;196mred\x1b[0m", "ared"),  # CSI: colour
        ("a\x1b]0;pwned\x07b", "ab"),  # OSC window title ended by BEL
        ("a\x1b]0;pwned\x1b\\b", "ab"),  # ... ended by ESC \
        ("a\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # OSC 8 hyperlink
        ("a\x1bP1$r\x1b\\b", "ab"),  # DCS
        ("a\x9b2Jb", "ab"),  # 8-bit CSI
        ("a\x9d0;pwned\x9cb", "ab"),  # 8-bit OSC ended by 8-bit ST
        ("a\rb\x08c\x00d\x7fe", "abcde"),  # carriage return, backspace, NUL, DEL
        ("a\u202eb\u2066c", "abc"),  # bidi override and isolate
    ],
)
def test_plain_removes_escape_sequences_and_control_characters(raw: str, expected: str):
    assert plain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x1bcb", "ab"),  # full reset (RIS)
        ("a\x1b(0b", "ab"),  # switch to the line-drawing character set
        ("a\x1b#8b", "ab"),  # fill the screen with E (DECALN)
        ("a\x1b7b\x1b8", "ab"),  # save and restore the cursor
    ],
)
def test_plain_leaves_no_remnant_of_other_escapes(raw: str, expected: str):
    assert plain(raw) == expected


def test_osc_ended_by_the_8_bit_terminator_keeps_the_text_after_it():
    assert plain("\x1b]0;pwned\x9cvisible") == "visible"
    assert plain("\x1bPdata\x9cvisible") == "visible"


def test_plain_keeps_text_newlines_tabs_and_every_script():
    text = "Kätzchen auf Rollen\n\tスケボー 🐱 [/] :cat: \\ 100%"
    assert plain(text) == text
    assert plain(42) == "42"


def test_one_line_folds_every_line_break():
    assert one_line("first\nsecond\r\n\tthird\x1b[2J") == "first second third"


def test_shown_is_printed_literally_even_on_a_colour_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=200)
    console.print(shown(f"{HOSTILE} :cat:"))
    printed = buffer.getvalue()
    assert printed == f"{LITERAL} :cat:\n", repr(printed)


# --- popcorn generate -------------------------------------------------------------------------


def generate(cli, proxy: FaultProxy, *extra: str):
    return cli(
        "generate",
        "A cat learning to skateboard",
        "--llm",
        "openai:m",
        "--base-url",
        proxy.url,
        "--out",
        "runs",
        "--video",
        "none",
        "--cover",
        "none",
        *extra,
    )


def test_generate_shows_a_hostile_title_literally(cli, wide, fault_proxy: FaultProxy):
    fault_proxy.answer_next(json.dumps(SCRIPT))
    result = generate(cli, fault_proxy)
    assert result.code == 0, result.err
    assert f"Skate {LITERAL}" in result.out
    assert "[bold]down[/bold]" in result.out and ":cat:" in result.out
    assert "click" in result.out  # the hyperlink's text stays, its target does not
    assert "evil.example" not in result.out
    assert_terminal_safe(result.out + result.err)

    # The run was saved with the model's words as written; the cached answer shows the same.
    again = generate(cli, fault_proxy)
    assert again.code == 0, again.err
    assert len(fault_proxy.requests) == 1
    assert f"Skate {LITERAL}" in again.out and "already done" in again.out
    assert_terminal_safe(again.out + again.err)


def test_generate_on_a_colour_terminal_sends_no_escape_from_the_model(
    cli, wide, monkeypatch: pytest.MonkeyPatch, fault_proxy: FaultProxy
):
    monkeypatch.setenv("FORCE_COLOR", "1")
    fault_proxy.answer_next(json.dumps(SCRIPT))
    result = generate(cli, fault_proxy)
    assert result.code == 0, result.err
    assert "\x1b[" in result.out  # a terminal indeed: Rich styles the labels
    assert f"Skate {LITERAL}" in result.out
    for sequence in ("\x1b[2J", "\x1b]", "\x07", "\x9b", "\r"):
        assert sequence not in result.out + result.err, repr(sequence)


def test_generate_batch_shows_hostile_queries_and_paths_literally(
    cli, wide, tmp_path: Path, fault_proxy: FaultProxy
):
    queries = tmp_path / "queries.txt"
    queries.write_text(f"Cats on skateboards {HOSTILE}\nDogs surfing at dawn\n")
    # A 400 is fatal: the batch stops at the first query, and says why.
    fault_proxy.fail_next(400, json.dumps({"error": {"message": f"refused {HOSTILE}"}}))
    result = cli(
        "generate",
        "--queries",
        str(queries),
        "--llm",
        "openai:m",
        "--base-url",
        fault_proxy.url,
        "--out",
        "runs [/]",
        "--concurrency",
        "1",
        "--video",
        "none",
        "--cover",
        "none",
    )
    assert result.code == 1, result.err
    assert "runs in runs [/]" in result.err  # the summary, with the user's folder as typed
    assert f"failed: 'Cats on skateboards {LITERAL}'" in result.err
    assert f"refused {LITERAL}" in result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("popcorn: error: batch stopped early: ") and LITERAL in last
    assert_terminal_safe(result.out + result.err)


# --- errors -----------------------------------------------------------------------------------


def test_error_quoting_a_server_reply_is_one_clean_line(cli, fault_proxy: FaultProxy):
    fault_proxy.fail_next(400, json.dumps({"error": {"message": f"bad request {HOSTILE}\nmore"}}))
    result = generate(cli, fault_proxy)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popcorn: error: "), result.err
    assert f"bad request {LITERAL}" in lines[0]
    assert_terminal_safe(result.err)


def test_error_quoting_a_file_drops_escapes_and_credentials(cli, tmp_path: Path):
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    queries = tmp_path / "queries.csv"
    queries.write_text(f"title,\x1b]0;pwned\x07notes\x1b[2J,{key}\nA cat,x,y\n")
    result = cli("generate", "--queries", str(queries))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "has no 'prompt' column" in lines[0], result.err
    assert "(columns: title, notes, [redacted])" in lines[0]
    assert key not in result.err
    assert_terminal_safe(result.err)


def test_click_error_echoing_what_was_typed_drops_escapes(cli):
    # click quotes extra arguments as typed (pasted text can hold escapes).
    result = cli("generate", "a cat", "\x1b]0;pwned\x07on a skateboard\x1b[2J")
    assert result.code == 2
    assert "Got unexpected extra argument (on a skateboard)" in result.err
    assert_terminal_safe(result.err)


def test_logged_retry_quoting_a_server_reply_drops_escapes(fault_proxy: FaultProxy, tmp_path):
    # A real process: the log handler is the one the CLI installs (pytest replaces it in-process).
    fault_proxy.fail_next(
        503, json.dumps({"error": {"message": f"busy {HOSTILE}"}}), retry_after="0"
    )
    fault_proxy.answer_next(json.dumps(SCRIPT))
    args = [
        "generate",
        "A cat",
        "--llm",
        "openai:m",
        "--base-url",
        fault_proxy.url,
        "--out",
        str(tmp_path / "runs"),
        "--video",
        "none",
        "--cover",
        "none",
        "--json",
    ]
    code = f"from popcorn.cli.main import main\nmain({args!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"busy {LITERAL}; retrying in" in done.stderr
    assert_terminal_safe(done.stderr)


# --- popcorn corpus ---------------------------------------------------------------------------


def hostile_table(folder: Path) -> Path:
    """A small pre-joined table whose titles, captions and category names hold markup and
    escapes."""
    rows = []
    for n in range(12):
        category = f"food {HOSTILE}" if n % 2 == 0 else "pets"
        rows.append(
            {
                "video_id": f"v{n}",
                "title_en": f"Ramen bowl {n} {HOSTILE}",
                "cover_desc": "a steaming bowl of noodles",
                "caption_en": f"cooking noodles at home \x1b]8;;https://evil.example\x1b\\{n}",
                "partition": category,
                "likes": n,
                "views": 10 * n,
                "comment_count": n,
            }
        )
    table = folder / "table.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table


@pytest.fixture
def hostile_corpus(tmp_path: Path) -> Path:
    """That table imported and indexed (with the embedded MiniLM) the way the tests of the
    corpus build theirs."""
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_table
    from popcorn.retrieval.index import build_index

    corpus, report = import_table(hostile_table(tmp_path))
    corpus.save(tmp_path / "corpus", report)
    build_index(tmp_path / "corpus", Embedder())
    return tmp_path / "corpus"


def test_corpus_search_shows_corpus_text_literally(cli, wide, hostile_corpus: Path):
    result = cli(
        "corpus",
        "search",
        "How to cook ramen",
        "--corpus",
        str(hostile_corpus),
        "--refs",
        "4",
        "--categories",
        "2",
    )
    assert result.code == 0, result.err
    assert f"food {LITERAL} (" in result.out  # the routed category, by its name
    assert "Ramen bowl" in result.out and LITERAL in result.out  # the references' titles
    assert "cooking noodles at home" in result.out and "evil.example" not in result.out
    assert_terminal_safe(result.out + result.err)

    info = cli("corpus", "info", "--corpus", str(hostile_corpus))
    assert info.code == 0, info.err
    assert_terminal_safe(info.out + info.err)


def test_corpus_import_and_index_show_the_folder_as_typed(cli, wide, tmp_path: Path):
    table = hostile_table(tmp_path)
    imported = cli("corpus", "import", "table", str(table), "--corpus", "c [/]")
    assert imported.code == 0, imported.err
    assert "-> c [/] (version" in imported.out and "--corpus c [/]" in imported.out
    indexed = cli("corpus", "index", "--corpus", "c [/]")
    assert indexed.code == 0, indexed.err
    assert "-> c [/]/index" in indexed.out


# --- popcorn score ----------------------------------------------------------------------------


def test_score_shows_a_typed_title_literally(cli, wide, small_predictor: Path):
    result = cli(
        "score", "--text-only", "--title", f"Kitten {HOSTILE}", "--predictor", str(small_predictor)
    )
    assert result.code == 0, result.err
    assert f"Kitten {LITERAL}" in result.out
    assert_terminal_safe(result.out + result.err)


@pytest.fixture(autouse=True)
def _gate_records_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests show hostile model text in the terminal; the quality gate would (rightly)
    refuse such titles, so here it records its verdict without retrying."""
    monkeypatch.setenv("POPCORN_GATE_ENABLED", "false")
