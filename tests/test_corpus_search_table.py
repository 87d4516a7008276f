"""``popcorn corpus search``'s table says what is true of each reference: its tier by comment
count among the routed videos, never "popular" for a video that drew no comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def quiet_corpus(tmp_path: Path) -> Path:
    """One category of twelve cooking videos, ten of them with no comments at all, imported and
    indexed (with the embedded MiniLM) as ``popcorn corpus import table`` and ``index`` do."""
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_table
    from popcorn.retrieval.index import build_index

    rows = [
        {
            "video_id": f"v{n}",
            "title_en": f"Ramen bowl number {n}",
            "cover_desc": "a steaming bowl of noodles",
            "caption_en": "cooking noodles at home",
            "partition": "food",
            "likes": n,
            "views": 10 * n,
            "comment_count": {10: 5, 11: 9}.get(n, 0),
        }
        for n in range(12)
    ]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    corpus, report = import_table(table)
    corpus.save(tmp_path / "corpus", report)
    build_index(tmp_path / "corpus", Embedder())
    return tmp_path / "corpus"


def test_a_reference_with_no_comments_is_not_called_popular(cli, monkeypatch, quiet_corpus):
    monkeypatch.setenv("COLUMNS", "200")
    args = ("corpus", "search", "How to cook ramen", "--corpus", str(quiet_corpus))
    found = cli(*args, "--refs", "10")
    assert found.code == 0, found.err
    lines = [line for line in found.out.splitlines() if "Ramen bowl number" in line]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert len(rows) == 10 and all(len(row) == 6 for row in rows)
    tiers = [row[1] for row in rows]
    assert not any("popular" in tier for tier in tiers)  # the word never labels a row
    for tier, comments in ((row[1], int(row[2])) for row in rows):
        assert tier.endswith(", no comments") == (comments == 0)
    assert sum(tier.startswith("top 90%") for tier in tiers) == 9  # the study's split
    assert sum(tier.startswith("bottom 10%") for tier in tiers) == 1
    assert "tier: rank by comment count among the routed categories' videos" in found.out

    # The JSON keeps the study's label as data.
    data = json.loads(cli(*args, "--refs", "10", "--json").out)
    assert sum(ref["popular"] for ref in data["references"]) == 9
