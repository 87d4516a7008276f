"""Prompt enhancement for real: the embedded MiniLM routes and retrieves over a generated
MicroLens-format corpus, and the embedded SmolLM2 writes from the references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FaultProxy
from popcorn.errors import UsageError
from popcorn.retrieval.corpus import Corpus
from popcorn.retrieval.embedders import Embedder
from popcorn.retrieval.importers import import_microlens
from popcorn.retrieval.index import build_index, load_index
from popcorn.retrieval.search import Retriever
from popcorn.retrieval.synthetic import generate_microlens

pytestmark = pytest.mark.slow

COOKING = "How to cook the perfect bowl of ramen at home"


@pytest.fixture(scope="module")
def corpus_dir(make_indexed_corpus) -> Path:
    return make_indexed_corpus(videos=440, seed=11)


@pytest.fixture(scope="module")
def retriever(corpus_dir: Path) -> Retriever:
    return Retriever(load_index(corpus_dir))


def test_cooking_query_routes_to_food_and_retrieves_food_videos(retriever: Retriever):
    found = retriever.search(COOKING, refs=10, categories=1)
    assert [name for name, _ in found.categories] == ["food"]
    assert len(found.items) == 10
    assert {ref.category for ref in found.items} == {"food"}
    assert sum(ref.popular for ref in found.items) == 9
    sims = [ref.similarity for ref in found.items]
    assert sims == sorted(sims, reverse=True)  # retrieval order
    assert any("ramen" in ref.title for ref in found.items[:3])


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("My puppy learns to fetch a ball", "pets"),
        ("Discuss how anime portrays futuristic cities", "anime"),
        ("Testing the latest tech gadgets", "technology"),
        ("A quick lesson on fractions for students", "education"),
    ],
)
def test_routing_picks_the_category_that_means_the_same(retriever: Retriever, query, category):
    assert retriever.search(query, refs=0).categories[0][0] == category


def test_popularity_split_is_the_top_ninety_percent_by_comments(retriever: Retriever):
    corpus = retriever.index.corpus
    food = sorted(
        (v for v in corpus.videos if v.category == "food"), key=lambda v: -v.comment_count
    )
    found = retriever.search(COOKING, refs=20, categories=1)  # the whole category
    by_id = {ref.video_id: ref for ref in found.items}
    threshold = food[17].comment_count  # ceil(0.9 * 20) = 18 popular
    for ref in by_id.values():
        if ref.comment_count > threshold:
            assert ref.popular
        if ref.comment_count < food[17].comment_count and not ref.popular:
            assert ref.comment_count <= food[18].comment_count


def test_more_references_than_the_category_holds_uses_what_exists(retriever: Retriever):
    found = retriever.search(COOKING, refs=50, categories=1)
    assert len(found.items) == 20
    assert found.warnings and "using" in found.warnings[0]


def test_two_categories_widen_the_pool(retriever: Retriever):
    found = retriever.search(COOKING, refs=30, categories=2)
    assert len(found.categories) == 2 and found.categories[0][0] == "food"
    assert len(found.items) == 30
    assert {ref.category for ref in found.items} <= {name for name, _ in found.categories}


def test_index_from_another_embedder_or_corpus_version_says_how_to_rebuild(
    corpus_dir: Path, tmp_path: Path
):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_dir, copy)
    with pytest.raises(UsageError, match="built with embedder 'minilm-l6', not 'minilm-l12'"):
        load_index(copy, "minilm-l12")
    corpus = Corpus.load(copy)
    corpus.videos.pop()
    corpus.save(copy, import_microlens(corpus_dir.parent / "raw")[1])
    with pytest.raises(UsageError, match="popcorn corpus index --corpus"):
        load_index(copy)


def test_interrupted_build_keeps_the_previous_index(corpus_dir: Path, tmp_path: Path, monkeypatch):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus_dir, copy)
    before = (copy / "index" / "videos.npy").read_bytes()
    real_save = np.save
    calls = {"n": 0}

    def crash_on_second(path, array):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_save(path, array)

    monkeypatch.setattr(np, "save", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_index(copy, Embedder())
    assert (copy / "index" / "videos.npy").read_bytes() == before
    assert sorted(p.name for p in copy.iterdir()) == ["corpus.json", "index", "videos.jsonl"]
    load_index(copy)


def test_pe_without_an_index_prints_the_command(cli, tmp_path: Path, corpus_dir: Path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(corpus_dir / "corpus.json", bare)
    shutil.copy(corpus_dir / "videos.jsonl", bare)
    result = cli("generate", COOKING, "--pe", "--corpus", str(bare))
    assert result.code == 1 and "Traceback" not in result.err
    assert f"run 'popcorn corpus index --corpus {bare}'" in result.err


def test_corpus_cli_import_index_search(cli, tmp_path: Path):
    generate_microlens(tmp_path / "raw", videos=66, seed=2)
    imported = cli(
        "corpus", "import", "microlens", str(tmp_path / "raw"), "--corpus", "c", "--json"
    )
    assert imported.code == 0, imported.err
    report = json.loads(imported.out)
    assert report["kept"] == 66 and report["skipped"]["likes/views: duplicate id"] == 1
    assert cli("corpus", "index", "--corpus", "c").code == 0
    searched = cli("corpus", "search", COOKING, "--corpus", "c", "--refs", "5", "--json")
    found = json.loads(searched.out)
    assert found["categories"][0]["name"] == "food"
    assert len(found["references"]) == 3  # a 3-video category: used what exists
    assert "warning" in searched.err
    info = cli("corpus", "info", "--corpus", "c")
    assert "66 videos" in info.out and "embedder minilm-l6" in info.out


def test_generate_with_pe_on_the_embedded_model(cli, corpus_dir: Path):
    result = cli(
        "generate", COOKING, "--pe", "--corpus", str(corpus_dir), "--out", "runs", "--json"
    )
    assert result.code == 0, result.err
    obj = json.loads(result.out)
    assert obj["mode"] == "pe" and obj["title"]
    run = Path(obj["run_dir"])
    refs = json.loads((run / "references.json").read_text())
    assert len(refs["references"]) == 10 and refs["categories"][0]["name"] == "food"
    manifest = json.loads((run / "manifest.json").read_text())
    stage = manifest["stages"]["pe"]
    assert stage["refs"] == 10 and stage["used"] == 10 and stage["popular"] == 9
    assert stage["routed"] == ["food"] and stage["embedder"]["name"] == "minilm-l6"
    assert manifest["files"]["references"] == "references.json"
    # The embedded model is small: PE shows it the compact form (issue 17), a few short
    # references close to the query and no reasoning field to write.
    assert stage["form"] == "compact" and 1 <= stage["shown"] <= 3
    prompt = json.loads((run / "transcript.json").read_text())["attempts"][0]["messages"][-1]
    assert "<video n=" not in prompt["content"]
    # It shows what the nearest popular video shows (its caption), never the clickbait title.
    top = refs["references"][0]
    assert top["caption"].rstrip(".") in prompt["content"] and top["title"] not in prompt["content"]
    # basic and PE runs of one query are different jobs
    basic = json.loads(cli("generate", COOKING, "--out", "runs", "--json").out)
    assert basic["run_dir"] != obj["run_dir"] and basic["mode"] == "basic"


def test_refs_zero_is_the_reasoning_chain_alone(cli, tmp_path: Path):
    # No corpus at all is needed when no references are asked for.
    result = cli(
        "generate",
        COOKING,
        "--pe",
        "--refs",
        "0",
        "--corpus",
        str(tmp_path / "none"),
        "--out",
        "runs",
        "--json",
    )
    assert result.code == 0, result.err
    run = Path(json.loads(result.out)["run_dir"])
    prompt = json.loads((run / "transcript.json").read_text())["attempts"][0]["messages"][-1]
    # The embedded model gets the compact form: one sentence instead of the seven steps.
    assert "<references>" not in prompt["content"] and "loved" not in prompt["content"]
    assert "what makes such videos popular" in prompt["content"]


def test_a_title_copied_from_a_reference_is_rejected(
    cli, corpus_dir: Path, retriever: Retriever, fault_proxy: FaultProxy
):
    copied = retriever.search(COOKING, refs=10).items[0].title
    script = {
        "reasoning": "popular ones show the food up close",
        "cover_prompt": "A steaming bowl of ramen on a wooden table, top view",
        "video_prompt": "Chopsticks lift glossy noodles in slow motion, steam rising",
    }
    fault_proxy.answer_next(json.dumps({**script, "title": copied}))
    fault_proxy.answer_next(json.dumps({**script, "title": "Ramen in Five Minutes Flat"}))
    result = cli(
        "generate",
        COOKING,
        "--pe",
        "--corpus",
        str(corpus_dir),
        "--llm",
        "openai:m",
        "--base-url",
        fault_proxy.url,
        "--out",
        "runs",
        "--json",
    )
    assert result.code == 0, result.err
    obj = json.loads(result.out)
    assert obj["title"] == "Ramen in Five Minutes Flat"
    attempts = json.loads(Path(obj["run_dir"], "transcript.json").read_text())["attempts"]
    assert attempts[0]["outcome"]["reason"] == "copied_reference"
    sent = fault_proxy.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert sent["required"][0] == "reasoning"
