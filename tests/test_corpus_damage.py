"""A damaged corpus or index is a one-line error naming the command that rebuilds it, never an
internal error; and a process loads each corpus once, whatever PE settings use it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from popcorn.errors import UsageError
from popcorn.retrieval.corpus import DamagedCorpusError
from popcorn.retrieval.embedders import Embedder
from popcorn.retrieval.enhance import MAX_LOADED_CORPORA, Enhancer, PESettings
from popcorn.retrieval.index import build_index, load_index
from popcorn.retrieval.search import Retriever
from toys.predictor import save_toy_sentence_encoder

COOKING = "How to cook the perfect bowl of ramen at home"


@pytest.fixture(scope="module")
def built(make_indexed_corpus) -> Path:
    return make_indexed_corpus(videos=66, seed=2)


@pytest.fixture
def corpus_dir(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built corpus, for a test to damage."""
    return Path(shutil.copytree(built, tmp_path / "corpus"))


# --- ways to damage a file ------------------------------------------------------------------

Damage = Callable[[Path], None]


def truncate(name: str, keep: float = 0.5) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def random_bytes(name: str) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))

    return damage


def delete(name: str) -> Damage:
    return lambda folder: (folder / name).unlink()


def edit_json(name: str, change: Callable[[dict], object]) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        obj = json.loads(path.read_text())
        change(obj)
        path.write_text(json.dumps(obj))

    return damage


def drop_key(name: str, *keys: str) -> Damage:
    def change(obj: dict) -> None:
        for key in keys[:-1]:
            obj = obj[key]
        del obj[keys[-1]]

    return edit_json(name, change)


def edit_vectors(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Damage:
    def damage(folder: Path) -> None:
        path = folder / name
        np.save(path, change(np.load(path)))

    return damage


def with_nan(v: np.ndarray) -> np.ndarray:
    v[1, 3] = np.nan
    return v


def with_inf(v: np.ndarray) -> np.ndarray:
    v[0, 0] = np.inf
    return v


def huge_header(name: str) -> Damage:
    """A valid .npy header claiming 10^12 vectors, followed by a few bytes."""

    def damage(folder: Path) -> None:
        path = folder / name
        with path.open("wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 384)}
            )
            f.write(b"\0" * 64)

    return damage


def link_to(name: str, target: str) -> Damage:
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        os.symlink(target, folder / name)

    return damage


def fifo(name: str) -> Damage:
    """A named pipe with no writer: reading it would block forever."""

    def damage(folder: Path) -> None:
        (folder / name).unlink()
        os.mkfifo(folder / name)

    return damage


def forged_video(field: str, value: object) -> Damage:
    """A video with ``field`` set to ``value``, and corpus.json's version updated to match, so
    only the row's own check can catch it."""

    def damage(folder: Path) -> None:
        path = folder / "videos.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        row = json.loads(lines[5])
        row[field] = value
        lines[5] = json.dumps(row) + "\n"
        path.write_text("".join(lines))
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        edit_json("corpus.json", lambda m: m.update(version=version))(folder)

    return damage


def drop_last_video(folder: Path) -> None:
    path = folder / "videos.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


CORPUS_DAMAGE: dict[str, Damage] = {
    "corpus.json truncated": truncate("corpus.json"),
    "corpus.json random bytes": random_bytes("corpus.json"),
    "corpus.json without version": drop_key("corpus.json", "version"),
    "corpus.json without import source": drop_key("corpus.json", "import", "source"),
    "corpus.json a list": lambda f: (f / "corpus.json").write_text("[]"),
    "corpus.json a link": link_to("corpus.json", "/etc/hostname"),
    "videos.jsonl truncated mid-line": truncate("videos.jsonl"),
    "videos.jsonl without its last line": drop_last_video,
    "videos.jsonl random bytes": random_bytes("videos.jsonl"),
    "videos.jsonl missing": delete("videos.jsonl"),
    "videos.jsonl a FIFO": fifo("videos.jsonl"),
    "video with a text count": forged_video("comment_count", "lots"),
    "video with a negative count": forged_video("comment_count", -3),
    "video with a list title": forged_video("title", ["a"]),
    "video with an unknown field": forged_video("rating", 5),
}

INDEX_DAMAGE: dict[str, Damage] = {
    "index.json truncated": truncate("index/index.json"),
    "index.json random bytes": random_bytes("index/index.json"),
    "index.json without embedder": drop_key("index/index.json", "embedder"),
    "index.json without embedder dim": drop_key("index/index.json", "embedder", "dim"),
    "index.json without categories": drop_key("index/index.json", "categories"),
    "index.json wrong dim": edit_json("index/index.json", lambda m: m["embedder"].update(dim=385)),
    "index.json other categories": edit_json(
        "index/index.json", lambda m: m.update(categories=m["categories"][1:])
    ),
    "videos.npy truncated": truncate("index/videos.npy"),
    "videos.npy header only": truncate("index/videos.npy", keep=0.001),
    "videos.npy random bytes": random_bytes("index/videos.npy"),
    "videos.npy missing": delete("index/videos.npy"),
    "videos.npy wrong vector size": edit_vectors("index/videos.npy", lambda v: v[:, :-1]),
    "videos.npy one vector short": edit_vectors("index/videos.npy", lambda v: v[:-1]),
    "videos.npy float64": edit_vectors("index/videos.npy", lambda v: v.astype(np.float64)),
    "videos.npy NaN": edit_vectors("index/videos.npy", with_nan),
    "videos.npy inf": edit_vectors("index/videos.npy", with_inf),
    "videos.npy all NaN": edit_vectors("index/videos.npy", lambda v: v * np.nan),
    "videos.npy not unit length": edit_vectors("index/videos.npy", lambda v: v * 3),
    "videos.npy huge header": huge_header("index/videos.npy"),
    "videos.npy a link": link_to("index/videos.npy", "/dev/zero"),
    "categories.npy truncated": truncate("index/categories.npy"),
    "categories.npy NaN": edit_vectors("index/categories.npy", with_nan),
    "categories.npy wrong vector size": edit_vectors(
        "index/categories.npy", lambda v: np.hstack([v, v])
    ),
}


def assert_one_line_naming(result, *commands: str) -> None:
    assert result.code == 1, (result.code, result.err)
    assert "internal error" not in result.err and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popcorn: error: "), result.err
    assert " is damaged: " in lines[0], lines[0]
    for command in commands:
        assert command in lines[0], lines[0]


@pytest.fixture
def search(cli) -> Callable[[Path], object]:
    return lambda folder: cli("corpus", "search", COOKING, "--corpus", str(folder), "--json")


@pytest.fixture
def generate(cli) -> Callable[[Path], object]:
    """`popcorn generate --pe` with an LLM endpoint where nothing listens: the corpus and index
    load (in the generator's constructor) before any LLM call, so no model runs."""
    url = f"http://127.0.0.1:{free_port()}/v1"

    def run(folder: Path) -> object:
        return cli(
            "generate",
            COOKING,
            "--pe",
            "--corpus",
            str(folder),
            "--llm",
            "openai:m",
            "--base-url",
            url,
            "--video",
            "none",
            "--cover",
            "none",
            "--out",
            "runs",
            "--json",
        )

    return run


@pytest.mark.parametrize("command", ["search", "generate"])
@pytest.mark.parametrize("damage", CORPUS_DAMAGE.values(), ids=CORPUS_DAMAGE.keys())
def test_damaged_corpus_says_to_reimport(request, corpus_dir: Path, damage: Damage, command: str):
    damage(corpus_dir)
    result = request.getfixturevalue(command)(corpus_dir)
    assert_one_line_naming(
        result, "popcorn corpus import microlens", f"popcorn corpus index --corpus {corpus_dir}"
    )
    assert not list(Path("runs").rglob("manifest.json"))  # failed before any run began


@pytest.mark.parametrize("command", ["search", "generate"])
@pytest.mark.parametrize("damage", INDEX_DAMAGE.values(), ids=INDEX_DAMAGE.keys())
def test_damaged_index_says_to_rebuild_it(request, corpus_dir: Path, damage: Damage, command: str):
    damage(corpus_dir)
    result = request.getfixturevalue(command)(corpus_dir)
    assert_one_line_naming(result, f"'popcorn corpus index --corpus {corpus_dir}'")
    assert not list(Path("runs").rglob("manifest.json"))  # failed before any run began


def test_the_command_named_repairs_the_index(search, cli, corpus_dir: Path):
    edit_vectors("index/videos.npy", with_nan)(corpus_dir)
    named = re.search(r"'popcorn (corpus index [^']*)'", search(corpus_dir).err)
    assert named is not None
    assert cli(*shlex.split(named.group(1))).code == 0
    assert search(corpus_dir).code == 0


def test_the_commands_named_repair_the_corpus(search, cli, built: Path, corpus_dir: Path):
    truncate("videos.jsonl")(corpus_dir)
    message = search(corpus_dir).err
    named = re.search(r"'popcorn (corpus import microlens) DIR ([^']*)'", message)
    assert named is not None
    raw = built.parent / "raw"
    assert cli(*named.group(1).split(), str(raw), *shlex.split(named.group(2))).code == 0
    index = re.search(r"'popcorn (corpus index [^']*)'", message)
    assert index is not None and cli(*shlex.split(index.group(1))).code == 0
    assert search(corpus_dir).code == 0


def test_undamaged_copy_searches(search, corpus_dir: Path):
    """The damage tests start from a corpus that works."""
    result = search(corpus_dir)
    assert result.code == 0, result.err
    found = json.loads(result.out)
    assert found["categories"][0]["name"] == "food" and found["references"]


def test_index_of_another_embedder_names_it_in_the_rebuild(corpus_dir: Path):
    edit_json("index/index.json", lambda m: m["embedder"].update(name="minilm-l12"))(corpus_dir)
    random_bytes("index/videos.npy")(corpus_dir)
    with pytest.raises(DamagedCorpusError, match="--embedder minilm-l12'") as caught:
        load_index(corpus_dir)
    assert " is damaged: " in str(caught.value)


def test_an_embedder_of_another_size_than_the_index_says_to_rebuild(
    corpus_dir: Path, tmp_path: Path
):
    """The embedder's name loading another model than the index was built with (a local folder
    replaced since) is found at the first query, not as a shape error inside numpy."""
    other = save_toy_sentence_encoder(tmp_path / "toy", ["ramen noodles at home"])  # 32 numbers
    retriever = Retriever(load_index(corpus_dir), Embedder(str(other)))
    with pytest.raises(UsageError, match="vectors 32 numbers long, the index holds 384") as caught:
        retriever.search(COOKING)
    assert f"'popcorn corpus index --corpus {corpus_dir} --embedder {other}'" in str(caught.value)


def test_loaded_vectors_cannot_be_changed_by_a_user_of_the_shared_index(corpus_dir: Path):
    index = load_index(corpus_dir)
    with pytest.raises(ValueError, match="read-only"):
        index.videos[0, 0] = 0.0


# --- one loaded index per corpus --------------------------------------------------------------


def test_enhancers_with_different_settings_share_one_loaded_index(corpus_dir: Path):
    a = Enhancer(PESettings(refs=2, categories=1, corpus=corpus_dir))
    b = Enhancer(PESettings(refs=8, categories=3, corpus=corpus_dir))
    # The same folder spelled another way is the same corpus.
    c = Enhancer(PESettings(refs=5, categories=2, corpus=corpus_dir / ".." / corpus_dir.name))
    assert a.retriever is not None and b.retriever is not None and c.retriever is not None
    assert a.retriever.index is b.retriever.index is c.retriever.index
    assert a.retriever is b.retriever
    # Sharing does not mix their settings.
    for _ in range(2):
        found_a, found_b = a.references(COOKING), b.references(COOKING)
        assert (len(found_a.items), len(found_a.categories)) == (2, 1)
        assert (len(found_b.items), len(found_b.categories)) == (8, 3)


def test_a_rebuilt_index_is_loaded_again(corpus_dir: Path):
    before = Enhancer(PESettings(refs=10, corpus=corpus_dir))
    build_index(corpus_dir, Embedder())
    after = Enhancer(PESettings(refs=20, corpus=corpus_dir))
    assert before.retriever is not None and after.retriever is not None
    assert after.retriever.index is not before.retriever.index
    assert after.retriever.index.meta["built_at"] >= before.retriever.index.meta["built_at"]
    again = Enhancer(PESettings(refs=30, corpus=corpus_dir))
    assert again.retriever is after.retriever


def test_a_damaged_rebuild_is_not_hidden_by_the_loaded_copy(corpus_dir: Path):
    Enhancer(PESettings(refs=10, corpus=corpus_dir))
    truncate("index/videos.npy")(corpus_dir)
    with pytest.raises(DamagedCorpusError, match=r"videos\.npy"):
        Enhancer(PESettings(refs=10, corpus=corpus_dir))


def test_loaded_corpora_are_bounded(built: Path, tmp_path: Path):
    folders = [
        Path(shutil.copytree(built, tmp_path / f"corpus{n}")) for n in range(MAX_LOADED_CORPORA + 1)
    ]
    first = Enhancer(PESettings(refs=10, corpus=folders[0])).retriever
    loaded = [Enhancer(PESettings(refs=10, corpus=f)).retriever for f in folders[1:]]
    # The most recent ones stay shared...
    for folder, retriever in zip(folders[1:], loaded, strict=True):
        assert Enhancer(PESettings(refs=3, corpus=folder)).retriever is retriever
    # ...and the least recently used one was let go, so it loads afresh.
    assert Enhancer(PESettings(refs=3, corpus=folders[0])).retriever is not first
