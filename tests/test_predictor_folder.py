"""A trained predictor's folder is read in one place: whether one is trained, its split, its bank,
its weights hash and recipe, or one clear error when its record is missing or damaged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from popcorn.errors import PopcornError, UsageError
from popcorn.predictor.folder import META_FILE, PredictorFolder, is_trained


def record(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema_version": 2,
        "kind": "mmra",
        "recipe": "mmra",
        "split": {"train": ["a", "b"], "val": ["c"], "test": ["d", "e", "a"]},
        "bank": ["train", "val"],
        "weights_sha256": "0123456789abcdef" + "f" * 48,
    }
    meta.update(changes)
    return meta


def folder_with(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "predictor"
    folder.mkdir()
    (folder / META_FILE).write_text(text, encoding="utf-8")
    return folder


def test_a_valid_record_gives_split_bank_hash_and_recipe(tmp_path: Path) -> None:
    found = PredictorFolder.read(folder_with(tmp_path, json.dumps(record())))
    assert found.split.train == {"a", "b"} and found.split.test == {"d", "e", "a"}
    assert found.split.bank == {"a", "b", "c"}
    # "a" was hand-added to test while in train: it is in the bank, so never held out
    assert found.split.held_out == {"d", "e"}
    assert found.weights_id == "0123456789abcdef"
    assert found.recipe == "mmra" and found.is_current_format


def test_an_older_format_is_read_but_not_current(tmp_path: Path) -> None:
    found = PredictorFolder.read(folder_with(tmp_path, json.dumps(record(schema_version=1))))
    assert not found.is_current_format and found.split.val == {"c"}


def test_a_record_without_hash_or_recipe_reads_as_empty_hash_and_popcorn(tmp_path: Path) -> None:
    meta = record()
    del meta["weights_sha256"], meta["recipe"]
    found = PredictorFolder.read(folder_with(tmp_path, json.dumps(meta)))
    assert found.weights_id == "" and found.recipe == "popcorn"


def test_a_missing_folder_or_record_is_not_trained_and_reading_it_says_how_to_train(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (tmp_path / "nowhere", empty):
        assert not is_trained(folder)
        with pytest.raises(UsageError, match=r"no trained predictor.*popcorn predictor train"):
            PredictorFolder.read(folder)
    assert not is_trained(None)


def test_a_folder_with_its_record_is_trained(tmp_path: Path) -> None:
    assert is_trained(folder_with(tmp_path, json.dumps(record())))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "cannot be read"),
        ("\udcff", "cannot be read"),
        ("[" * 100_000 + "]" * 100_000, "cannot be read"),
        ("[1, 2]", "not a predictor's record"),
        (json.dumps(record(split=None)), "no readable split"),
        (json.dumps({k: v for k, v in record().items() if k != "split"}), "no readable split"),
        (json.dumps(record(split={"train": ["a"], "val": ["b"]})), "no readable split"),
        (json.dumps(record(split={"train": "ab", "val": [], "test": []})), "no readable split"),
        (json.dumps(record(split={"train": [1], "val": [], "test": []})), "no readable split"),
        (json.dumps(record(weights_sha256=12)), "not text"),
        (json.dumps(record(recipe=["mmra"])), "not text"),
    ],
    ids=[
        "garbage",
        "not-utf8",
        "too-deep",
        "a-list",
        "null-split",
        "no-split",
        "split-without-test",
        "split-part-not-a-list",
        "split-ids-not-text",
        "hash-not-text",
        "recipe-not-text",
    ],
)
def test_a_damaged_record_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "predictor"
    folder.mkdir()
    (folder / META_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(PopcornError, match=message) as caught:
        PredictorFolder.read(folder)
    assert len(str(caught.value).splitlines()) == 1
    assert "predictor train" in str(caught.value)


def test_a_trained_predictor_reads_back_what_training_wrote(small_predictor: Path) -> None:
    found = PredictorFolder.read(small_predictor)
    weights = (small_predictor / "model.safetensors").read_bytes()
    assert found.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert found.is_current_format
    parts = (found.split.train, found.split.val, found.split.test)
    assert all(parts) and sum(map(len, parts)) == len(set().union(*parts))
    assert found.split.held_out == found.split.test


def test_reading_a_predictor_folder_imports_no_torch() -> None:
    code = (
        "import sys; from popcorn.predictor.folder import PredictorFolder, is_trained; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_study_and_pe_read_the_bank_and_the_held_out_split_from_the_record(
    tmp_path: Path,
) -> None:
    from popcorn.retrieval.enhance import predictor_test_split
    from popcorn.study.run import predictor_bank_ids

    folder = folder_with(tmp_path, json.dumps(record()))
    assert predictor_bank_ids(folder) == {"a", "b", "c"}
    assert predictor_test_split(folder) == {"d", "e"}
    assert predictor_bank_ids(tmp_path / "untrained") is None
    with pytest.raises(UsageError, match="test-split reference pool needs the predictor's split"):
        predictor_test_split(tmp_path / "untrained")


def test_the_study_and_pe_refuse_a_damaged_record_in_one_line(tmp_path: Path) -> None:
    from popcorn.retrieval.enhance import predictor_test_split
    from popcorn.study.run import predictor_bank_ids

    folder = folder_with(tmp_path, json.dumps(record(split={"train": [], "val": []})))
    for read in (predictor_bank_ids, predictor_test_split):
        with pytest.raises(UsageError, match="no readable split") as caught:
            read(folder)
        assert len(str(caught.value).splitlines()) == 1
