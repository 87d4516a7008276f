"""Training the retrieval-augmented regressor: seeded 80/10/10 split, top-K retrieval from the
training bank, MSE with Adam, early stopping on the validation loss.

The trained predictor is a folder: ``model.safetensors`` (weights), ``predictor.json`` (model
config, training settings, encoders, split, history; loading checks all of it), ``bank.npz`` /
``bank.json`` (the training videos' features, which retrieval needs at scoring time) and
``text_only.json`` (the fast text-only model, fitted on the same split).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from popcorn import __version__
from popcorn._io import atomic_write_bytes, atomic_write_json
from popcorn.errors import UsageError
from popcorn.predictor.features import FeatureSet
from popcorn.predictor.metrics import regression_metrics
from popcorn.predictor.model import MMRA, ModelConfig
from popcorn.predictor.textonly import TextOnly

SCHEMA_VERSION = 1
KIND = "mmra"


@dataclass(frozen=True)
class TrainSettings:
    """Defaults are the study's (MMRA's paper): hidden 768, alpha 0.6, K 10, Adam 1e-5, batch 64."""

    hidden: int = 768
    alpha: float = 0.6
    retrieved: int = 10
    lr: float = 1e-5
    batch_size: int = 64
    epochs: int = 200
    patience: int = 10
    seed: int = 42
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.retrieved < 1 or self.hidden < 1 or self.batch_size < 1 or self.epochs < 1:
            raise UsageError("retrieved, hidden, batch size and epochs must be at least 1")
        if not 0 < self.lr < 1:
            raise UsageError(f"learning rate must be in (0, 1), got {self.lr}")


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_loss: float
    val_loss: float
    best: bool


def split(n: int, seed: int) -> dict[str, np.ndarray]:
    """The seeded 80/10/10 split of ``n`` rows (at least one row in each part)."""
    if n < 10:
        raise UsageError(f"training needs at least 10 videos with features, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = n_test = max(1, round(n * 0.1))
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def neighbours(
    queries: np.ndarray, bank: np.ndarray, k: int, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar bank rows per query: (indices, similarities), best first.

    With ``exclude_self`` the queries are the bank itself and a row never retrieves itself.
    """
    k = min(k, len(bank) - (1 if exclude_self else 0))
    if k < 1:
        raise UsageError("the training bank is too small to retrieve from")
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), 1024):
        block = queries[start : start + 1024] @ bank.T
        if exclude_self:
            rows = np.arange(len(block))
            block[rows, start + rows] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        indices[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        sims[start : start + len(block)] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims


class Batches:
    """Model inputs for rows of ``items``, each with its retrieved bank items."""

    def __init__(self, items: FeatureSet, bank: FeatureSet, k: int, is_bank: bool) -> None:
        self.items, self.bank = items, bank
        self.idx, self.sims = neighbours(items.retrieval, bank.retrieval, k, exclude_self=is_bank)
        self.labels = items.labels
        self.bank_labels = bank.labels

    def tensors(self, rows: np.ndarray, device: str) -> tuple[Any, ...]:
        import torch

        idx = self.idx[rows]

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return (
            t(self.items.frames[rows]),
            t(self.items.text[rows]),
            t(self.sims[rows]),
            t(self.bank.frames[idx]),
            t(self.bank.text[idx]),
            t(self.bank_labels[idx]),
        )


def predict(model: MMRA, batches: Batches, device: str, batch_size: int = 256) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(batches.labels), batch_size):
            rows = np.arange(start, min(start + batch_size, len(batches.labels)))
            out.append(model(*batches.tensors(rows, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train(
    features: FeatureSet,
    out: Path,
    settings: TrainSettings,
    on_epoch: Callable[[Epoch], None] | None = None,
) -> dict[str, Any]:
    """Train on ``features`` and write the predictor folder ``out``; returns its metadata."""
    import torch

    started = time.perf_counter()
    parts = split(len(features), settings.seed)
    train_set = features.subset(parts["train"])
    val_set = features.subset(parts["val"])
    train_b = Batches(train_set, train_set, settings.retrieved, is_bank=True)
    val_b = Batches(val_set, train_set, settings.retrieved, is_bank=False)

    torch.manual_seed(settings.seed)
    config = ModelConfig(
        visual_dim=features.frames.shape[2],
        text_dim=features.text.shape[1],
        hidden=settings.hidden,
        frames=features.frames.shape[1],
        retrieved=train_b.idx.shape[1],
        alpha=settings.alpha,
    )
    model = MMRA(config).to(settings.device)
    mean = float(train_b.labels.mean())
    last = model.head[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():  # start from the mean, so early epochs learn structure, not the offset
        last.bias.fill_(mean)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    shuffler = np.random.default_rng(settings.seed)
    val_y = torch.from_numpy(val_b.labels)

    best_loss, best_state, best_epoch, waited = float("inf"), None, 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = shuffler.permutation(len(train_set))
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            inputs = train_b.tensors(rows, settings.device)
            target = torch.from_numpy(train_b.labels[rows]).to(settings.device)
            loss = torch.nn.functional.mse_loss(model(*inputs), target)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += loss.item() * len(rows)
        val_pred = torch.from_numpy(predict(model, val_b, settings.device))
        val_loss = float(torch.mean((val_pred - val_y) ** 2))
        improved = val_loss < best_loss - 1e-9
        if improved:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
        history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss})
        if on_epoch is not None:
            on_epoch(Epoch(epoch, total / len(order), val_loss, improved))
        if waited >= settings.patience:
            break
    assert best_state is not None
    model.load_state_dict(best_state)

    text_only = TextOnly.fit(
        train_set.text, train_b.labels, val_set.text, val_b.labels, features.meta["text"]
    )
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "popcorn": __version__,
        "model": config.to_dict(),
        "settings": asdict(settings),
        "frames": features.meta["frames"],
        "visual": features.meta["visual"],
        "text": features.meta["text"],
        "features_sha256": features.meta.get("sha256"),
        "split": {name: [features.ids[i] for i in rows] for name, rows in parts.items()},
        "train_mean": mean,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "history": history,
        "val": regression_metrics(predict(model, val_b, settings.device), val_b.labels),
        "train_seconds": round(time.perf_counter() - started, 3),
        "samples_per_second": round(
            len(history) * len(train_set) / max(time.perf_counter() - started, 1e-9), 1
        ),
    }
    save(model, train_set, text_only, meta, out)
    return meta


def save(
    model: MMRA, bank: FeatureSet, text_only: TextOnly, meta: dict[str, Any], out: Path
) -> None:
    """Write the predictor folder; ``predictor.json`` last, so a folder that has it is whole."""
    from safetensors.torch import save

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = save(state, metadata={"popcorn": __version__, "config": model.config.digest()})
    atomic_write_bytes(out / "model.safetensors", weights)
    bank.save(out, "bank")
    text_only.save(out)
    meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    meta["trained_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out / "predictor.json", meta)
