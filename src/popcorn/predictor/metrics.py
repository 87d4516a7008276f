"""The study's metrics: nMSE (MSE over the labels' variance), Spearman's rank correlation, MAE."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank, as Spearman's coefficient needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return ranks


def spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = _ranks(np.asarray(pred, np.float64)), _ranks(np.asarray(truth, np.float64))
    if a.std() == 0 or b.std() == 0:
        return 0.0  # a constant prediction carries no ranking
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    mse = float(np.mean((pred - truth) ** 2))
    var = float(np.var(truth))
    return {
        "nmse": mse / var if var > 0 else float("nan"),
        "src": spearman(pred, truth),
        "mae": float(np.mean(np.abs(pred - truth))),
        "mse": mse,
    }
