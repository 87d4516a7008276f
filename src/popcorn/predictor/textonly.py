"""The fast text-only model: ridge regression from the title embedding to the predictor's
target (log2(1 + comments), or log2(comments) in the paper configuration).

It needs no frames, so it ranks scripts before anything is rendered, and it is the baseline the
full model has to beat. The ridge strength is picked on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from popcorn._io import atomic_write_json, read_json
from popcorn.errors import UsageError

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
FILE = "text_only.json"


@dataclass
class TextOnly:
    weights: np.ndarray
    bias: float
    alpha: float
    embedder: dict[str, Any]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        embedder: dict[str, Any],
    ) -> TextOnly:
        best: TextOnly | None = None
        best_mse = float("inf")
        for alpha in ALPHAS:
            model = cls._solve(x, y, alpha, embedder)
            mse = float(np.mean((model.predict(x_val) - y_val) ** 2)) if len(y_val) else 0.0
            if mse < best_mse:
                best, best_mse = model, mse
        assert best is not None
        return best

    @classmethod
    def _solve(cls, x: np.ndarray, y: np.ndarray, alpha: float, embedder: dict[str, Any]) -> Any:
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        mean_x, mean_y = x64.mean(axis=0), y64.mean()
        xc = x64 - mean_x
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y64 - mean_y))
        return cls(w.astype(np.float32), float(mean_y - mean_x @ w), alpha, embedder)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.weights + self.bias, dtype=np.float32)

    def save(self, folder: Path) -> None:
        atomic_write_json(
            folder / FILE,
            {
                "kind": "ridge",
                "alpha": self.alpha,
                "bias": self.bias,
                "weights": [float(w) for w in self.weights],
                "embedder": self.embedder,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> TextOnly:
        path = folder / FILE
        if not path.is_file():
            raise UsageError(
                f"no text-only model in {str(folder)!r}: run 'popcorn predictor train'"
            )
        data = read_json(path)
        return cls(
            np.array(data["weights"], dtype=np.float32),
            float(data["bias"]),
            float(data["alpha"]),
            data["embedder"],
        )
