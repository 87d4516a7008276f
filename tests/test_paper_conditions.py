"""The study's conditions pinned under the paper profile: the predictor's split by id, frames
taken as MMRA took them, hf: models in 4-bit fp4, HunyuanVideo in fp16 with an fp8 text
encoder (issue 23, section 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from popcorn.errors import UsageError
from popcorn.llm.base import LLMOptions
from popcorn.llm.hf import paper_quantization
from popcorn.media.diffusers.loader import study_precision
from popcorn.media.presets import PRESETS
from popcorn.predictor.features import FeatureSet
from popcorn.predictor.folder import PredictorFolder, split_sha256
from popcorn.predictor.frames import jpeg_round_trip, uniform_indices
from popcorn.predictor.pinned import pinned_split, read_split_ids, read_test_ids

# --- the split, pinned by ids ---------------------------------------------------------------


def test_test_ids_read_from_lines_or_from_a_video_id_column(tmp_path: Path):
    lines = tmp_path / "test_id.txt"
    lines.write_text("v3\nv1\n\n")
    table = tmp_path / "test_id.csv"
    table.write_text("index,video_id\n0,v3\n1,v1\n")
    assert read_test_ids(lines).parts == {"test": ["v3", "v1"]}
    assert read_test_ids(table).parts == {"test": ["v3", "v1"]}
    (tmp_path / "bad.csv").write_text("index,id\n0,v3\n")
    with pytest.raises(UsageError, match="without a 'video_id' column"):
        read_test_ids(tmp_path / "bad.csv")


def test_a_split_file_may_not_put_a_video_in_two_parts(tmp_path: Path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["b"]}))
    with pytest.raises(UsageError, match="'b' is in both 'train' and 'test'"):
        read_split_ids(path)


def test_a_pinned_split_does_not_depend_on_the_order_of_the_feature_rows(tmp_path: Path):
    ids = [f"v{i:02d}" for i in range(30)]
    (tmp_path / "test_id.txt").write_text("v05\nv17\nv29\nv99\n")  # v99 has no features
    pinned = read_test_ids(tmp_path / "test_id.txt")
    shuffled = list(np.random.default_rng(1).permutation(ids))

    def parts(order: list[str]) -> dict[str, set[str]]:
        found = pinned_split(order, pinned)
        assert found.missing == 1
        return {name: {order[i] for i in rows} for name, rows in found.rows.items()}

    first = parts(ids)
    assert first == parts(shuffled)
    assert first["test"] == {"v05", "v17", "v29"}
    assert len(first["val"]) == 3 and len(first["train"]) == 24
    assert not first["val"] & first["test"] and not first["train"] & first["val"]


def test_a_split_hash_names_which_ids_each_part_holds_not_their_order():
    one = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    assert split_sha256(one) == split_sha256({"train": ["b", "a"], "val": ["c"], "test": ["d"]})
    assert split_sha256(one) != split_sha256({"train": ["a", "d"], "val": ["c"], "test": ["b"]})


def _features(folder: Path, n: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    ids = [f"v{i:02d}" for i in range(n)]
    retrieval = rng.normal(size=(n, 8)).astype(np.float32)
    FeatureSet(
        ids,
        [f"title {i}" for i in range(n)],
        rng.integers(1, 500, n).astype(np.int64),
        rng.normal(size=(n, 4, 8)).astype(np.float32),
        rng.normal(size=(n, 8)).astype(np.float32),
        retrieval / np.linalg.norm(retrieval, axis=1, keepdims=True),
        {
            "schema_version": 2,
            "recipe": "popcorn",
            "frames": 4,
            "visual": {"name": "toy"},
            "text": {"name": "toy"},
        },
    ).save(folder)
    return ids


def test_predictor_train_with_test_ids_records_that_split_and_its_hash(cli, tmp_path: Path):
    from popcorn.predictor.features import SCHEMA_VERSION

    folder = tmp_path / "predictor"
    folder.mkdir()
    assert SCHEMA_VERSION == 2
    _features(folder)
    (tmp_path / "test_id.csv").write_text("video_id\nv03\nv11\nv20\nv31\n")
    result = cli(
        "predictor", "train", "--profile", "popcorn", "--epochs", "2", "--hidden", "8",
        "--predictor", str(folder), "--test-ids", str(tmp_path / "test_id.csv"),
    )  # fmt: skip
    assert result.code == 0, result.err
    meta = json.loads((folder / "predictor.json").read_text())
    record = PredictorFolder.read(folder)
    assert record.split.test == {"v03", "v11", "v20", "v31"}
    assert meta["split_sha256"] == record.split.sha256 and record.split_id in result.out
    assert meta["split_source"] == {
        "kind": "test-ids",
        "file": "test_id.csv",
        "missing": 0,
        "unassigned": 0,
    }
    both = cli(
        "predictor", "train", "--predictor", str(folder), "--test-ids",
        str(tmp_path / "test_id.csv"), "--split-ids", str(tmp_path / "test_id.csv"),
    )  # fmt: skip
    assert both.code == 1 and "choose one of --test-ids and --split-ids" in both.err


# --- frames as MMRA took them ---------------------------------------------------------------


def test_mmra_frame_indices_truncate_where_popcorns_round():
    assert uniform_indices(30, 10, "mmra") == [int(i * 29 / 9) for i in range(10)]
    assert uniform_indices(30, 10, "mmra")[1] == 3  # 3.22
    assert uniform_indices(30, 10, "mmra")[2] == 6 and uniform_indices(30, 10)[2] == 6  # 6.44
    assert uniform_indices(30, 10, "mmra")[4] == 12 and uniform_indices(30, 10)[4] == 13  # 12.9
    assert uniform_indices(30, 10, "mmra")[-1] == 29 == uniform_indices(30, 10)[-1]


def test_mmra_frames_go_through_a_jpeg_round_trip():
    frame = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    again = jpeg_round_trip(frame)
    assert again.shape == frame.shape and again.dtype == np.uint8
    assert not np.array_equal(again, frame)  # JPEG is lossy on noise
    assert np.array_equal(jpeg_round_trip(frame), again)  # and deterministic


# --- hf: models in 4-bit under paper --------------------------------------------------------


PAPER = LLMOptions(four_bit="fp4")


def test_paper_hf_models_load_in_4bit_fp4_by_default():
    chosen, warning = paper_quantization(PAPER, cuda=True, bitsandbytes=True)
    assert chosen.load_in_4bit and chosen.four_bit == "fp4" and warning is None


def test_without_cuda_or_bitsandbytes_the_paper_default_is_a_one_line_warning():
    for cuda, bnb, lacking in ((False, True, "no CUDA GPU"), (True, False, "bitsandbytes")):
        chosen, warning = paper_quantization(PAPER, cuda=cuda, bitsandbytes=bnb)
        assert not chosen.load_in_4bit
        assert warning is not None and lacking in warning and "\n" not in warning


def test_an_explicit_choice_or_the_popcorn_profile_keeps_its_options():
    for options in (
        LLMOptions(four_bit="fp4", load_in_8bit=True),
        LLMOptions(four_bit="fp4", dtype="bfloat16"),
        LLMOptions(four_bit="nf4"),
    ):
        assert paper_quantization(options, cuda=True, bitsandbytes=True) == (options, None)


# --- HunyuanVideo as the study ran it -------------------------------------------------------


def test_the_studys_hunyuan_preset_runs_fp16_with_an_fp8_text_encoder():
    preset = PRESETS["hunyuan"]
    assert preset.study is not None
    assert preset.study.dtype == "float16" and preset.study.text_encoder_fp8
    assert preset.ours.dtype is None and not preset.ours.text_encoder_fp8
    differing = {d.setting for d in preset.differences()}
    assert {"dtype", "text_encoder"} <= differing


def test_the_preset_precision_applies_on_cuda_under_auto_only():
    assert study_precision("cuda", "bfloat16", "auto", "float16", True) == ("float16", True)
    assert study_precision("cuda:1", "bfloat16", "auto", None, False) == ("bfloat16", False)
    # The user's --media-dtype wins; the text encoder is still stored as the study stored it.
    assert study_precision("cuda", "bfloat16", "bfloat16", "float16", True) == ("bfloat16", True)
    assert study_precision("cpu", "float32", "auto", "float16", True) == ("float32", False)
