"""The run store: safe folder names, atomic writes, versioned manifests."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from popcorn._io import atomic_write_json
from popcorn.errors import RunStoreError
from popcorn.runs.keys import folder_name, job_key, slugify
from popcorn.runs.store import SCHEMA_VERSION, Run, RunManifest, RunStore


@pytest.mark.parametrize(
    "query",
    [
        "../../etc/x",
        "/etc/passwd",
        "..",
        ".",
        "a/b\\c",
        "~root",
        "\x00nul",
        "   ",
        "日本語のみ",
        "C:\\Windows\\system32",
        "-" * 300,
    ],
)
def test_folder_names_never_escape_the_store(query: str, tmp_path: Path):
    store = RunStore(tmp_path / "runs")
    path = store.path_for(query, job_key({"q": query}))
    assert path.parent == store.root
    assert path.resolve().is_relative_to(store.root.resolve())
    name = path.name
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not name.startswith("-") and not name.startswith(".")


def test_slug_keeps_words_and_stays_short():
    assert slugify("A Cat Learning to Skateboard!") == "a-cat-learning-to-skateboard"
    assert slugify("Café crème") == "cafe-creme"
    assert len(slugify("word " * 100)) <= 40
    assert slugify("!!!") == "query"


def test_folder_name_has_slug_and_key_prefix():
    key = job_key({"q": 1})
    assert folder_name("A cat", key) == f"a-cat-{key[:10]}"


def test_job_key_ignores_dict_order_and_changes_with_content():
    assert job_key({"a": 1, "b": 2}) == job_key({"b": 2, "a": 1})
    assert job_key({"a": 1}) != job_key({"a": 2})


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"v": 1})

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_manifest_round_trips_and_records_files(tmp_path: Path):
    store = RunStore(tmp_path)
    run = store.start(RunManifest(key="k" * 64, query="a query", mode="basic"))
    run.write_json(
        "script",
        "script.json",
        {"script": {"title": "T", "cover_prompt": "c", "video_prompt": "v"}},
    )
    run.save(status="done")
    loaded = Run.load(run.path)
    assert loaded.manifest.status == "done"
    assert loaded.manifest.schema_version == SCHEMA_VERSION
    assert loaded.manifest.files == {"script": "script.json"}
    assert loaded.script() is not None and loaded.script().title == "T"
    assert store.get("a query", "k" * 64) is not None
    assert [r.path for r in store] == [run.path]


def test_manifest_from_a_newer_popcorn_is_refused(tmp_path: Path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunStoreError, match="upgrade popcorn"):
        Run.load(tmp_path)


def test_folder_without_manifest_is_not_a_run(tmp_path: Path):
    with pytest.raises(RunStoreError, match="not a run folder"):
        Run.load(tmp_path)


def test_run_files_cannot_be_written_outside_the_folder(tmp_path: Path):
    run = RunStore(tmp_path).start(RunManifest(key="k" * 64, query="q", mode="basic"))
    with pytest.raises(RunStoreError):
        run.write_json("evil", "../evil.json", {})
