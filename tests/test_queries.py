"""Reading batches of queries from text, CSV and JSONL files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popcorn.errors import UsageError
from popcorn.writer.queries import read_queries


def test_text_file_one_query_a_line(tmp_path: Path):
    f = tmp_path / "q.txt"
    f.write_text("# study queries\nA cat learning to skateboard\n\n  Street food at night  \n")
    assert [i.query for i in read_queries(f)] == [
        "A cat learning to skateboard",
        "Street food at night",
    ]


def test_csv_prompt_column_and_type_tag(tmp_path: Path):
    f = tmp_path / "q.csv"
    f.write_text(
        'prompt,type\n"Discuss how anime portrays futuristic cities",abstract\n'
        '"Animate a battle between a samurai and a dragon, at dusk",concrete\n'
    )
    items = read_queries(f)
    assert items[0].tags == {"type": "abstract"}
    assert items[1].query == "Animate a battle between a samurai and a dragon, at dusk"


def test_jsonl_objects_and_strings(tmp_path: Path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"prompt": "A", "type": "concrete"}) + "\n\n" + json.dumps("B") + "\n")
    assert [(i.query, i.tags) for i in read_queries(f)] == [("A", {"type": "concrete"}), ("B", {})]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.csv", "title,type\nx,y\n", "no 'prompt' column"),
        ("q.txt", "\n# only comments\n", "no queries"),
        ("q.jsonl", "{broken\n", "no usable queries in q.jsonl: line 1: not JSON"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, name: str, content: str, message: str):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_queries(f)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.jsonl", '{"prompt": "ok"}\n{broken\n', "q.jsonl line 2: not JSON"),
        ("q.txt", "ok\n" + "x" * 2001 + "\n", "q.txt line 2: the query has 2,001 characters"),
        ("q.jsonl", '"ok"\n""\n', "q.jsonl line 2: the query is empty"),
        ("q.jsonl", '"ok"\n{"title": "x"}\n', "q.jsonl line 2: no 'prompt' key (keys: title)"),
    ],
)
def test_a_bad_row_is_refused_alone_with_its_line(
    tmp_path: Path, name: str, content: str, message: str
):
    f = tmp_path / name
    f.write_text(content)
    items = read_queries(f)
    assert [i.query for i in items] == ["ok"]
    assert [r.line for r in items.refused] == [2]
    assert items.refused[0].reason.startswith(message), items.refused[0].reason


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(UsageError, match=r"not found: .*absent\.txt"):
        read_queries(tmp_path / "absent.txt")


def test_binary_file_is_refused(tmp_path: Path):
    f = tmp_path / "q.txt"
    f.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_queries(f)
