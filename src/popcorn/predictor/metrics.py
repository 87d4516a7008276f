"""The study's metrics: nMSE (MSE over the labels' variance), Spearman's rank correlation, MAE;
MMRA's per-batch averages of them, and MMRA's model-selection criterion."""

from __future__ import annotations

import numpy as np

MMRA_TEST_BATCH = 256
"""MMRA's test script computes the metrics per batch of this many test videos and averages them."""


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


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def batched_metrics(
    pred: np.ndarray, truth: np.ndarray, size: int = MMRA_TEST_BATCH
) -> dict[str, float]:
    """The metrics of each consecutive batch of ``size`` videos (the last one may be smaller),
    averaged with equal weight per batch, as MMRA reports them. A batch whose labels are all
    equal has no nMSE and is left out of that average only; ``batches`` counts them all."""
    per_batch = [regression_metrics(pred[s], truth[s]) for s in _chunks(len(truth), size)]
    out: dict[str, float] = {"batches": float(len(per_batch))}
    for key in ("nmse", "src", "mae", "mse"):
        values = [m[key] for m in per_batch if not np.isnan(m[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def mae_plus_nmse(pred: np.ndarray, truth: np.ndarray, batch_size: int) -> float:
    """MMRA's validation criterion: over consecutive batches of the training batch size, the
    sum of each batch's MAE + nMSE (a batch of equal labels adds its MAE alone)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    total = 0.0
    for s in _chunks(len(truth), batch_size):
        error = pred[s] - truth[s]
        var = float(np.var(truth[s]))
        total += float(np.mean(np.abs(error)))
        total += float(np.mean(error**2)) / var if var > 0 else 0.0
    return total
