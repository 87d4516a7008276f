"""Hostile inputs to queries, corpus imports and ``pull``: each bad row is refused alone (listed
with its line) or the bad file is refused whole with one line, never an internal error (exit
70), and the good rows still produce their results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from popcorn.errors import UsageError
from popcorn.retrieval.corpus import MAX_CSV_FIELD, MAX_TABLE_BYTES, Corpus
from popcorn.retrieval.importers import import_table
from popcorn.writer.queries import MAX_QUERIES_BYTES, read_queries

DEEP = "[" * 100_000 + "]" * 100_000
NO_MEDIA = ("--video", "none", "--cover", "none", "--out", "runs")
# The paper profile records the quality gate's verdict without acting on it: mock:'s scripts
# repeat their query, which popcorn's gate would retry.
BATCH = ("--llm", "mock:x", "--profile", "paper", *NO_MEDIA)


def one_error(result) -> str:
    """The last stderr line if the command failed the way users should see it: exit 1 or 2,
    no traceback, no internal error, and the error on one line."""
    text = result.err.strip()
    assert result.code in (1, 2), (result.code, text)
    assert "Traceback" not in text and "internal error" not in text, text
    last = text.splitlines()[-1]
    assert last.startswith(("popcorn: error: ", "Error: ")), text
    return last


def run_queries(folder: Path = Path("runs")) -> dict[str, str]:
    """Query -> status of every run folder written."""
    found = {}
    for manifest in folder.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        found[data["query"]] = data["status"]
    return found


def printable(text: str) -> bool:
    """Whether ``text`` can be written to a terminal or a file (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- one mis-encoded query ------------------------------------------------------------------


def test_a_lone_surrogate_in_a_jsonl_batch_is_refused_alone_and_the_others_run(cli):
    Path("q.jsonl").write_text('"A cat on a skateboard"\n"\\ud800 broken"\n"Ramen at night"\n')
    result = cli("generate", "--queries", "q.jsonl", "--json", *BATCH)
    last = one_error(result)
    assert "1 row was refused" in last and "q.jsonl" in last
    assert "refused: q.jsonl line 2: the query is not valid text" in result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    refused = [line for line in lines if "error" in line]
    assert len(refused) == 1 and refused[0]["line"] == 2 and "not valid text" in refused[0]["error"]
    assert run_queries() == {"A cat on a skateboard": "done", "Ramen at night": "done"}
    assert printable(result.out + result.err)


def test_undecodable_bytes_in_a_text_batch_refuse_only_their_line(tmp_path: Path):
    f = tmp_path / "q.txt"
    f.write_bytes(b"A cat on a skateboard\nCaf\xe9 cr\xe8me in Latin-1\nRamen at night\n")
    items = read_queries(f)
    assert [i.query for i in items] == ["A cat on a skateboard", "Ramen at night"]
    assert [r.line for r in items.refused] == [2]
    assert printable(items.refused[0].reason) and printable(items.refused[0].query)


def test_undecodable_bytes_in_a_column_refuse_the_row(tmp_path: Path):
    f = tmp_path / "q.csv"
    f.write_bytes(b"prompt,type\nA cat,concrete\nRamen,abstr\xffact\n")
    items = read_queries(f)
    assert [(i.query, i.tags) for i in items] == [("A cat", {"type": "concrete"})]
    assert "q.csv line 3: the column 'type' is not valid text" in items.refused[0].reason


def test_a_query_given_as_undecodable_argv_bytes_is_one_line(cli):
    # Python hands ``\xff`` in argv over as the lone surrogate ``\udcff``.
    result = cli("generate", "caf\udcff", *BATCH)
    assert "the query is not valid text: character 4" in one_error(result)
    assert not Path("runs").exists()
    assert printable(result.out + result.err)


def test_corpus_search_of_undecodable_argv_bytes_is_one_line(cli):
    result = cli("corpus", "search", "ramen \udcff")
    assert "the query is not valid text" in one_error(result)


def test_a_batch_given_a_bad_query_refuses_it_alone(tmp_path: Path):
    """The library's batch: a query that cannot be written anywhere fails alone, in the
    batch's failures, and the others are generated."""
    from popcorn.profiles import PAPER
    from popcorn.writer.queries import QueryItem
    from popcorn.writer.writer import Generator

    generator = Generator("mock:x", out=tmp_path / "runs", profile=PAPER)
    seen: list[str] = []
    report = generator.batch(
        [QueryItem("A cat on a skateboard"), QueryItem("\ud800 broken"), QueryItem("Ramen")],
        on_result=lambda item, outcome: seen.append(item.query),
    )
    assert [r.query for r in report.results] == ["A cat on a skateboard", "Ramen"]
    assert len(report.failures) == 1 and "not valid text" in report.failures[0][1]
    assert printable(report.failures[0][0]) and len(seen) == 3


def test_a_study_with_a_mis_encoded_query_still_reports_its_status(cli, caplog):
    Path("q.jsonl").write_text('"A cat on a skateboard"\n"\\udc80 broken"\n"Ramen at night"\n')
    Path("s.toml").write_text(
        '[study]\nllms = ["mock:x"]\nvideos = ["none"]\ncovers = ["none"]\n'
        '[queries]\nq = "q.jsonl"\n'
    )
    result = cli("study", "status", "s.toml", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["jobs"] == 2  # the two readable queries
    # The row left out is said, with its line, not silently dropped.
    assert "query set 'q' leaves out 1 refused row(s), e.g. q.jsonl line 2" in caplog.text


# --- prompts that are not text --------------------------------------------------------------


def test_jsonl_prompts_that_are_not_text_are_refused_with_their_line(cli):
    rows = [{"prompt": None}, {"prompt": 12}, {"prompt": {"a": 1}}, {"prompt": "A cat"}]
    Path("q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_queries("q.jsonl")
    assert [i.query for i in items] == ["A cat"]
    assert [r.reason for r in items.refused] == [
        "q.jsonl line 1: the query is null, not text",
        "q.jsonl line 2: the query is a number, not text",
        "q.jsonl line 3: the query is an object, not text",
    ]
    result = cli("generate", "--queries", "q.jsonl", *BATCH)
    assert "3 rows were refused" in one_error(result)
    assert run_queries() == {"A cat": "done"}  # no run of "None", "12" or "{'a': 1}"


# --- files that are not files, or too big ---------------------------------------------------


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_queries_file_that_is_not_a_regular_file_is_refused(cli, kind: str):
    if kind == "device":
        os.symlink("/dev/zero", "q.txt")  # a link to a device: read forever if followed
    else:
        os.mkfifo("q.txt")  # a pipe nobody writes: blocks forever if opened plainly
    result = cli("generate", "--queries", "q.txt", "--llm", "ollama:x")
    assert "queries file 'q.txt' is not a regular file" in one_error(result)


def test_a_queries_file_over_the_cap_is_refused_naming_the_cap(cli):
    with open("q.txt", "wb") as f:
        f.truncate(MAX_QUERIES_BYTES + 1)  # sparse: costs no disk
    result = cli("generate", "--queries", "q.txt", "--llm", "ollama:x")
    assert "is larger than 64 MiB, the most popcorn reads" in one_error(result)


def test_a_corpus_table_that_is_a_device_or_too_big_is_refused(cli):
    os.symlink("/dev/zero", "zero.csv")
    result = cli("corpus", "import", "table", "zero.csv", "--corpus", "c")
    assert "table file 'zero.csv' is not a regular file" in one_error(result)
    with open("big.jsonl", "wb") as f:
        f.truncate(MAX_TABLE_BYTES + 1)
    result = cli("corpus", "import", "table", "big.jsonl", "--corpus", "c")
    assert "is larger than 2 GiB" in one_error(result)
    assert not Path("c").exists()


# --- CSV: long fields and unclosed quotes ---------------------------------------------------


def test_a_query_field_over_128_kib_is_refused_alone(tmp_path: Path):
    f = tmp_path / "q.csv"
    f.write_text(f"prompt\nA cat\n{'x' * 200_000}\nRamen\n")
    items = read_queries(f)
    assert [i.query for i in items] == ["A cat", "Ramen"]
    assert "q.csv line 3: the query has 200,000 characters" in items.refused[0].reason


def test_a_csv_field_over_the_field_cap_is_one_line_naming_the_line(cli):
    Path("q.csv").write_text(f'prompt\nA cat\n"{"x" * (MAX_CSV_FIELD + 1)}"\n')
    result = cli("generate", "--queries", "q.csv", "--llm", "ollama:x")
    assert "q.csv line 3: a field is longer than 16 MiB" in one_error(result)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            'prompt,type\n"A cat,x\nB dog,y\nC "z" ok,z\nD,w\n',
            "q.csv line 2: a quoted field runs on to line 4",
        ),
        ('prompt,type\nA cat,x\n"B dog,y\nC,z\n', "q.csv line 3: a quote opened on this line"),
    ],
)
def test_an_unclosed_quote_in_a_query_csv_is_refused_not_merged(cli, content: str, message: str):
    Path("q.csv").write_text(content)
    result = cli("generate", "--queries", "q.csv", *BATCH)
    assert message in one_error(result)
    assert not Path("runs").exists()  # no merged query was run


def test_a_corpus_table_csv_with_long_fields_and_quotes(tmp_path: Path):
    header = "video_id,title_en,partition,comment_count,caption_en\n"
    caption = "c" * 200_000  # over the csv module's own 128 KiB limit
    table = tmp_path / "t.csv"
    table.write_text(header + f'1,Ramen,food,3,{caption}\n2,Tacos,food,5,"two\nlines"\n')
    corpus, report = import_table(table)
    assert [v.caption for v in corpus.videos] == [caption, "two lines"]
    assert any("quoted field over several lines (lines 3-4)" in n for n in report.notes)

    table.write_text(header + '1,Ramen,food,3,ok\n2,Tacos,food,5,"open\n3,Pho,food,1,x\n')
    with pytest.raises(UsageError, match=r"t\.csv line 3: a quote opened on this line"):
        import_table(table)


# --- deeply nested JSON ---------------------------------------------------------------------


def test_deeply_nested_json_in_a_queries_file_is_refused_alone(tmp_path: Path):
    f = tmp_path / "q.jsonl"
    f.write_text(f'"A cat"\n{DEEP}\n"Ramen"\n')
    items = read_queries(f)
    assert [i.query for i in items] == ["A cat", "Ramen"]
    assert items.refused[0].reason == "q.jsonl line 2: JSON nested too deeply to be a query"


def test_deeply_nested_json_in_a_table_is_one_line_naming_the_line(cli):
    good = {"video_id": 1, "title_en": "Ramen", "partition": "food", "comment_count": 3}
    Path("t.jsonl").write_text(json.dumps(good) + "\n" + DEEP + "\n")
    result = cli("corpus", "import", "table", "t.jsonl", "--corpus", "c")
    assert "t.jsonl line 2: JSON nested too deeply" in one_error(result)


# --- counts ---------------------------------------------------------------------------------


def test_counts_that_are_not_finite_whole_numbers_below_2_53_are_skipped_with_a_count(cli):
    good = {"video_id": 1, "title_en": "Ramen", "partition": "food", "comment_count": 3}
    good["likes"] = None  # the first row names the columns read
    bad_counts = ["1e400", "-1e400", 1e30, "1e30", 2**53, "nan", -1, 1.5, True]
    rows = [good, {**good, "video_id": 2, "comment_count": "12.0", "likes": "1e400"}]
    rows += [{**good, "video_id": 10 + i, "comment_count": c} for i, c in enumerate(bad_counts)]
    Path("t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("corpus", "import", "table", "t.jsonl", "--corpus", "c", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["kept"] == 2 and report["skipped"] == {"bad comment_count": len(bad_counts)}
    assert any("likes or views that are not counts" in note for note in report["notes"])
    videos = Corpus.load("c").videos
    assert [(v.video_id, v.comment_count, v.likes) for v in videos] == [
        ("1", 3, None),
        ("2", 12, None),
    ]


def test_microlens_likes_beyond_2_53_are_malformed_lines(tmp_path: Path):
    from popcorn.retrieval.importers import import_microlens
    from popcorn.retrieval.synthetic import generate_microlens

    generate_microlens(tmp_path / "raw", videos=30, seed=1)
    likes = tmp_path / "raw" / "MicroLens-100k_likes_and_views.txt"
    before = import_microlens(tmp_path / "raw")[1].skipped["likes/views: malformed line"]
    lines = likes.read_text().splitlines()
    vid = lines[0].split("\t")[0]
    lines[0] = f"{vid}\t{10**30}\t5"
    likes.write_text("\n".join(lines) + "\n")
    corpus, report = import_microlens(tmp_path / "raw")
    assert report.skipped["likes/views: malformed line"] == before + 1
    assert all(v.likes is None or v.likes < 2**53 for v in corpus.videos)


@pytest.fixture
def poisoned(make_indexed_corpus, tmp_path: Path) -> Path:
    """An indexed corpus as an older popcorn left it after importing ``comment_count`` 1e30:
    its files agree with each other, and one count is far beyond 64 bits."""
    folder = Path(shutil.copytree(make_indexed_corpus(videos=66, seed=2), tmp_path / "corpus"))
    corpus = Corpus.load(folder)
    corpus.videos[5] = dataclasses.replace(corpus.videos[5], comment_count=10**30)
    corpus.save(folder, corpus_report(corpus))
    index_meta = folder / "index" / "index.json"
    meta = json.loads(index_meta.read_text())
    meta["corpus_version"] = corpus.version
    index_meta.write_text(json.dumps(meta))
    return folder


def corpus_report(corpus: Corpus):
    from popcorn.retrieval.corpus import ImportReport

    return ImportReport(source=corpus.meta["import"]["source"], kept=len(corpus.videos))


@pytest.mark.parametrize("command", ["search", "generate"])
def test_a_poisoned_corpus_on_disk_is_one_line_naming_the_file_and_the_fix(
    cli, poisoned: Path, command: str
):
    before = {p.name: p.read_bytes() for p in poisoned.iterdir() if p.is_file()}
    if command == "search":
        result = cli("corpus", "search", "ramen at home", "--corpus", str(poisoned))
    else:
        args = ("generate", "ramen at home", "--pe", "--corpus", str(poisoned), "--llm", "mock:x")
        result = cli(*args, *NO_MEDIA)
    last = one_error(result)
    assert "videos.jsonl line 6 has a comment_count of 10000000000000000000..." in last
    assert "popcorn corpus import" in last
    assert {p.name: p.read_bytes() for p in poisoned.iterdir() if p.is_file()} == before


# --- pull -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 5000, "is 5,000 characters long"),
        ("x" * 300, "is not a preset, frame encoder, embedder"),
        ("hf:owner/na me", "is not a preset, frame encoder, embedder"),
        ("ltx\x1b[2J", "holds control characters"),
        ("ltx\udcff", "is not valid UTF-8 text"),
    ],
)
def test_pull_check_refuses_a_name_no_model_can_have(cli, name: str, message: str):
    pytest.importorskip("huggingface_hub")
    result = cli("pull", "--check", "ltx", name)
    last = one_error(result)
    assert message in last and len(last) < 300
    assert printable(result.err) and "\x1b" not in result.err
