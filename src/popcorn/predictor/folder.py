"""A trained predictor's folder, as the rest of Popcorn sees it without loading the model.

``predictor.json`` is written last by training (:func:`popcorn.predictor.train.save`), so a
folder that has it is whole. Everything outside training that needs to know about a predictor
(whether one is trained, its split for the reference pool, its bank for the study's leak check,
its weights hash for rescoring, its recipe) reads it here, once, and gets either a validated
:class:`PredictorFolder` or one :class:`UsageError` saying what to do. Nothing here imports
torch: the record is read by installs without the predictor extra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popcorn._io import read_json
from popcorn.errors import UsageError
from popcorn.safety import one_line

META_FILE = "predictor.json"
"""The record of a trained predictor: configuration, split, bank parts, weights hash."""
SCHEMA_VERSION = 2
"""The format of :data:`META_FILE` this Popcorn writes and reads."""
KIND = "mmra"
MAX_META_BYTES = 256 * 2**20
"""The split's ids make it a few MB for MicroLens; far above that is damage."""
SPLIT_PARTS = ("train", "val", "test")
RETRAIN = "train the predictor again ('popcorn predictor train')"


@dataclass(frozen=True)
class Split:
    """The video ids each part of the training data held."""

    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]

    @property
    def bank(self) -> frozenset[str]:
        """Training + validation: the retrieval bank, or a superset of it (``bank = train``)."""
        return self.train | self.val

    @property
    def held_out(self) -> frozenset[str]:
        """The test ids less any the bank also holds (a hand-edited split can repeat one)."""
        return self.test - self.bank

    @property
    def sha256(self) -> str:
        """Which ids each part holds, as one hash (:func:`split_sha256`)."""
        return split_sha256({"train": self.train, "val": self.val, "test": self.test})


def split_sha256(parts: Mapping[str, Collection[str]]) -> str:
    """The hash of a split's parts as sets: each part's ids sorted, so the same split read from
    another file (MMRA's ``test_id.csv`` in its own order) hashes the same. The order training
    read them in changes the weights, whose own hash records it."""
    canonical = {name: sorted(parts.get(name, ())) for name in SPLIT_PARTS}
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PredictorFolder:
    """The validated record of the trained predictor in :attr:`path`."""

    path: Path
    split: Split
    weights_sha256: str
    """The hash of ``model.safetensors`` as training wrote it; empty in a record without one."""
    recipe: str
    meta: Mapping[str, Any]
    """The whole record, for the model loader (:meth:`popcorn.predictor.score.Predictor.load`)."""

    @property
    def split_id(self) -> str:
        """The short split hash a report names: the one training recorded, else computed."""
        recorded = self.meta.get("split_sha256")
        return (recorded if isinstance(recorded, str) and recorded else self.split.sha256)[:16]

    @property
    def weights_id(self) -> str:
        """The short weights hash that a score records and a study compares to rescore."""
        return self.weights_sha256[:16]

    @property
    def is_current_format(self) -> bool:
        return self.meta.get("kind") == KIND and self.meta.get("schema_version") == SCHEMA_VERSION

    @classmethod
    def read(cls, path: Path | str) -> PredictorFolder:
        """The record in ``path``; a folder without one or a damaged one is a one-line
        :class:`UsageError` (check :func:`is_trained` first to treat "none" as an answer)."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise UsageError(
                f"no trained predictor in {one_line(str(path))!r} (no {META_FILE}): run "
                "'popcorn predictor features' and 'popcorn predictor train' (or pass "
                "--predictor DIR)"
            )
        where = one_line(str(meta_file))
        try:
            meta = read_json(meta_file, MAX_META_BYTES)
        except (OSError, ValueError) as err:
            raise UsageError(
                f"{where!r} cannot be read ({one_line(str(err))}): {RETRAIN}"
            ) from None
        if not isinstance(meta, dict):
            raise UsageError(f"{where!r} is not a predictor's record (a JSON object): {RETRAIN}")
        split = _split(meta.get("split"))
        if split is None:
            raise UsageError(
                f"{where!r} holds no readable split (train, val and test id lists): {RETRAIN}"
            )
        weights, recipe = meta.get("weights_sha256", ""), meta.get("recipe", "popcorn")
        if not isinstance(weights, str) or not isinstance(recipe, str):
            raise UsageError(f"{where!r} has a weights hash or recipe that is not text: {RETRAIN}")
        return cls(path, split, weights, recipe, meta)


def is_trained(path: Path | str | None) -> bool:
    """Whether ``path`` holds a trained predictor (its record, written last, is there)."""
    return path is not None and (Path(path) / META_FILE).is_file()


def _split(found: object) -> Split | None:
    if not isinstance(found, dict):
        return None
    parts = [found.get(name) for name in SPLIT_PARTS]
    if not all(isinstance(p, list) and all(isinstance(i, str) for i in p) for p in parts):
        return None
    train, val, test = (frozenset(p) for p in parts)  # type: ignore[arg-type]
    return Split(train, val, test)
