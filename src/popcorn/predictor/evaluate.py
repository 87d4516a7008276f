"""Held-out evaluation of a trained predictor beside two baselines from the same run."""

from __future__ import annotations

from typing import Any

import numpy as np

from popcorn._io import atomic_write_json
from popcorn.errors import UsageError
from popcorn.predictor.features import FeatureSet
from popcorn.predictor.metrics import MMRA_TEST_BATCH, batched_metrics, regression_metrics
from popcorn.predictor.score import Predictor


def evaluate(predictor: Predictor) -> dict[str, Any]:
    """nMSE, SRC and MAE on the test split for the model, the training mean and the text-only
    ridge, over the whole split (``models``) and, as MMRA reports them, per batch of 256 test
    videos in split order, averaged (``batched``); written to ``eval.json`` in the predictor
    folder and returned."""
    features = FeatureSet.load(predictor.folder)
    if features.meta.get("sha256") != predictor.meta.get("features_sha256"):
        raise UsageError(
            "the features changed since this predictor was trained: train it again before eval"
        )
    index = {vid: i for i, vid in enumerate(features.ids)}
    rows = np.array([index[v] for v in predictor.meta["split"]["test"]], dtype=np.int64)
    test = features.subset(rows)
    truth = test.labels(predictor.target)
    models = {
        "mmra": predictor.predict(test),
        "train-mean": np.full(len(test), predictor.meta["train_mean"], dtype=np.float32),
        "text-only": predictor.text_only.predict(test.text),
    }
    report = {
        "videos": len(test),
        "target": predictor.target,
        "models": {name: regression_metrics(pred, truth) for name, pred in models.items()},
        "batched": {
            "size": MMRA_TEST_BATCH,
            "models": {name: batched_metrics(pred, truth) for name, pred in models.items()},
        },
    }
    atomic_write_json(predictor.folder / "eval.json", report)
    return report
