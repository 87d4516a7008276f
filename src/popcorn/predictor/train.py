"""Training the retrieval-augmented regressor, in one of two configurations.

``popcorn`` (Popcorn's own; ``TrainSettings()``): target log2(1 + comments), so every video
counts; a seeded random 80/10/10 split; the 10 most similar *training* videos retrieved; frame
and title features projected to ``hidden``; shuffled batches; up to 200 epochs, the best by
validation MSE, stopping 10 epochs after it.

``mmra`` (the paper profile; ``TrainSettings.for_recipe("mmra")``), as MMRA's release trains:
target log2(comments), videos without comments left out (and counted); the two-stage seeded
split (20% held out with seed 9, then halved into test and validation with seed 18, as
scikit-learn's ``train_test_split`` draws them); the bank is training + validation (a video
never retrieves itself); features fed without a projection; batches in split order, never
shuffled; up to 100 epochs, the best by the validation sum of per-batch MAE + nMSE, stopping
20 epochs after it (MMRA's loop ends at the first epoch more than 20 past the best).

Both: MSE loss, Adam 1e-5, batch 64, K = 10, alpha 0.6, MLP 800-200-1.

The trained predictor is a folder: ``model.safetensors`` (weights), ``predictor.json`` (model
config, training settings, encoders, split as id lists ``{"train", "val", "test"}`` with its
hash ``split_sha256`` and where it came from (drawn, or pinned by an id file:
:mod:`popcorn.predictor.pinned`), the bank's parts, history; loading checks all of it),
``bank.npz`` / ``bank.json`` (the bank videos' features, which retrieval needs at scoring time)
and ``text_only.json`` (the fast text-only model, fitted on the same split).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from popcorn._io import atomic_write_bytes, atomic_write_json
from popcorn._version import __version__
from popcorn.errors import UsageError
from popcorn.predictor.features import PROFILE_OF, RECIPE_NAMES, FeatureSet, RecipeName, Target
from popcorn.predictor.folder import KIND, META_FILE, SCHEMA_VERSION, split_sha256
from popcorn.predictor.metrics import mae_plus_nmse, regression_metrics
from popcorn.predictor.model import MMRA, ModelConfig
from popcorn.predictor.pinned import PinnedIds, pinned_split
from popcorn.predictor.textonly import TextOnly

MMRA_SPLIT_SEEDS = (9, 18)

Selection = Literal["mse", "mae+nmse"]
SplitName = Literal["random", "mmra"]
BankName = Literal["train", "train+val"]


@dataclass(frozen=True)
class TrainSettings:
    """Popcorn's configuration by default; :meth:`for_recipe` gives MMRA's."""

    recipe: RecipeName = "popcorn"
    hidden: int = 768
    project: bool = True
    """Project frame and title features to ``hidden`` first; MMRA feeds them as they are."""
    alpha: float = 0.6
    retrieved: int = 10
    lr: float = 1e-5
    batch_size: int = 64
    epochs: int = 200
    patience: int = 10
    """Training ends at the first epoch more than this many epochs after the best one."""
    seed: int = 42
    """Initialisation and shuffling; the random split's too (MMRA's split has its own seeds)."""
    target: Target = "log2(1+c)"
    selection: Selection = "mse"
    shuffle: bool = True
    split: SplitName = "random"
    bank: BankName = "train"
    init_mean: bool = True
    """Start the output bias at the training labels' mean (MMRA starts from PyTorch's init)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.retrieved < 1 or self.hidden < 1 or self.batch_size < 1 or self.epochs < 1:
            raise UsageError("retrieved, hidden, batch size and epochs must be at least 1")
        if not 0 < self.lr < 1:
            raise UsageError(f"learning rate must be in (0, 1), got {self.lr}")
        if self.patience < 0:
            raise UsageError(f"patience must be at least 0, got {self.patience}")

    @classmethod
    def for_recipe(cls, name: str, **overrides: Any) -> TrainSettings:
        """The configuration ``name`` (``mmra`` or ``popcorn``) with ``overrides`` (None values
        keep the configuration's own)."""
        if name not in RECIPE_NAMES:
            raise UsageError(f"unknown predictor configuration {name!r}: choose mmra or popcorn")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown training setting(s): {', '.join(unknown)}")
        return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


RECIPES: dict[str, TrainSettings] = {
    "popcorn": TrainSettings(),
    "mmra": TrainSettings(
        recipe="mmra",
        project=False,
        epochs=100,
        patience=20,
        seed=2024,  # MMRA's train.py default
        target="log2(c)",
        selection="mae+nmse",
        shuffle=False,
        split="mmra",
        bank="train+val",
        init_mean=False,
    ),
}


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_loss: float
    val_loss: float
    """Validation MSE."""
    criterion: float
    """What picks the best epoch: the validation MSE, or MMRA's summed MAE + nMSE."""
    best: bool


# --- splits ---------------------------------------------------------------------------------


def split(n: int, seed: int) -> dict[str, np.ndarray]:
    """Popcorn's seeded 80/10/10 split of ``n`` rows (at least one row in each part)."""
    _enough(n)
    order = np.random.default_rng(seed).permutation(n)
    n_val = n_test = max(1, round(n * 0.1))
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def train_test_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) as scikit-learn's ``train_test_split(range(n),
    test_size=test_size, random_state=seed)`` returns them, order included: the test part is
    ceil(test_size * n) rows, the first of a legacy ``RandomState(seed)`` permutation."""
    n_test = math.ceil(test_size * n)
    permutation = np.random.RandomState(seed).permutation(n)
    return permutation[n_test:], permutation[:n_test]


def mmra_split(n: int) -> dict[str, np.ndarray]:
    """MMRA's two-stage split: 20% held out with seed 9; the held-out rows split in half with
    seed 18, whose first part is the test set and second the validation set (as MMRA's
    ``dataset_split.py`` names them). Rows stay in the order the split returns them, which is
    the order MMRA's data loaders read them in."""
    _enough(n)
    first, second = MMRA_SPLIT_SEEDS
    train, rest = train_test_split(n, 0.2, first)
    test, val = train_test_split(len(rest), 0.5, second)
    return {"train": train, "val": rest[val], "test": rest[test]}


def _enough(n: int) -> None:
    if n < 10:
        raise UsageError(f"training needs at least 10 labelled videos with features, got {n}")


def make_split(n: int, settings: TrainSettings) -> dict[str, np.ndarray]:
    return mmra_split(n) if settings.split == "mmra" else split(n, settings.seed)


def epoch_order(n: int, settings: TrainSettings, rng: np.random.Generator) -> np.ndarray:
    """The order training rows are batched in for one epoch: shuffled, or as split (MMRA)."""
    return rng.permutation(n) if settings.shuffle else np.arange(n)


# --- retrieval ------------------------------------------------------------------------------


def neighbours(
    queries: np.ndarray, bank: np.ndarray, k: int, self_rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar bank rows per query: (indices, similarities), best first.

    ``self_rows[i]`` is query i's own row in the bank (-1 when it has none): a video never
    retrieves itself."""
    k = min(k, len(bank) - (1 if self_rows is not None else 0))
    if k < 1:
        raise UsageError("the retrieval bank is too small to retrieve from")
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), 1024):
        block = queries[start : start + 1024] @ bank.T
        if self_rows is not None:
            own = self_rows[start : start + len(block)]
            rows = np.flatnonzero(own >= 0)
            block[rows, own[rows]] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        indices[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        sims[start : start + len(block)] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims


class Batches:
    """Model inputs for rows of ``items``, each with its retrieved bank items."""

    def __init__(
        self,
        items: FeatureSet,
        bank: FeatureSet,
        k: int,
        self_rows: np.ndarray | None = None,
        target: Target = "log2(1+c)",
    ) -> None:
        self.items, self.bank = items, bank
        self.idx, self.sims = neighbours(items.retrieval, bank.retrieval, k, self_rows)
        # Only the bank's labels are inputs; the items' own may not exist (a new clip).
        self.bank_labels = bank.labels(target)

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
    n = len(batches.items)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            out.append(model(*batches.tensors(rows, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --- model selection ------------------------------------------------------------------------


def criterion(pred: np.ndarray, truth: np.ndarray, settings: TrainSettings) -> float:
    """The validation figure the best epoch minimises."""
    if settings.selection == "mae+nmse":
        return mae_plus_nmse(pred, truth, settings.batch_size)
    return float(np.mean((np.asarray(pred, np.float64) - truth) ** 2))


class EarlyStop:
    """Keeps the best epoch by a criterion, and says when to stop: at the first epoch more
    than ``patience`` epochs after the best (MMRA's ``epoch - best > early_stop_turns``)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value`` for ``epoch``; True when it is the best so far."""
        if value < self.best - 1e-12:
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def stop(self, epoch: int) -> bool:
        return epoch - self.best_epoch > self.patience


# --- training -------------------------------------------------------------------------------


def labelled(features: FeatureSet, target: Target) -> tuple[FeatureSet, int]:
    """The videos that have a label under ``target``, and how many were left out."""
    if target == "log2(1+c)":
        return features, 0
    keep = np.flatnonzero(features.comments > 0)
    return features.subset(keep), len(features) - len(keep)


def check_recipe(features: FeatureSet, settings: TrainSettings) -> None:
    made_for = features.meta.get("recipe", "popcorn")
    if made_for != settings.recipe:
        raise UsageError(
            f"these features were extracted for the {made_for!r} predictor configuration "
            f"(profile {PROFILE_OF.get(made_for, made_for)}), not {settings.recipe!r}: run "
            f"'popcorn predictor features --profile {PROFILE_OF[settings.recipe]} ...' first, "
            f"or train with --profile {PROFILE_OF.get(made_for, made_for)}"
        )


def model_config(features: FeatureSet, settings: TrainSettings, retrieved: int) -> ModelConfig:
    visual_dim, text_dim = features.frames.shape[2], features.text.shape[1]
    if not settings.project and visual_dim != text_dim:
        raise UsageError(
            f"without a projection (the {settings.recipe} configuration) frame features "
            f"({visual_dim}-d) and title features ({text_dim}-d) must be as wide: pick encoders "
            "of one width (MMRA: ViT-base and AnglE BERT-base, 768) and extract again"
        )
    return ModelConfig(
        visual_dim=visual_dim,
        text_dim=text_dim,
        hidden=settings.hidden if settings.project else text_dim,
        frames=features.frames.shape[1],
        retrieved=retrieved,
        alpha=settings.alpha,
        project=settings.project,
    )


def train(
    features: FeatureSet,
    out: Path,
    settings: TrainSettings,
    on_epoch: Callable[[Epoch], None] | None = None,
    pinned: PinnedIds | None = None,
) -> dict[str, Any]:
    """Train on ``features`` and write the predictor folder ``out``; returns its metadata.
    ``pinned`` fixes the split by ids (:mod:`popcorn.predictor.pinned`) instead of drawing it."""
    import torch

    started = time.perf_counter()
    check_recipe(features, settings)
    data, left_out = labelled(features, settings.target)
    split_source: dict[str, Any] = {"kind": settings.split}
    if pinned is None:
        parts = make_split(len(data), settings)
    else:
        found = pinned_split(data.ids, pinned)
        parts = found.rows
        split_source = {
            "kind": pinned.kind,
            "file": pinned.source,
            "missing": found.missing,
            "unassigned": found.unassigned,
        }
    train_set, val_set = data.subset(parts["train"]), data.subset(parts["val"])
    n_train = len(train_set)
    if settings.bank == "train+val":
        bank = data.subset(np.concatenate([parts["train"], parts["val"]]))
        val_self = n_train + np.arange(len(val_set))
    else:
        bank, val_self = train_set, None
    k, target = settings.retrieved, settings.target
    train_b = Batches(train_set, bank, k, np.arange(n_train), target)
    val_b = Batches(val_set, bank, k, val_self, target)
    train_y, val_y = train_set.labels(target), val_set.labels(target)

    torch.manual_seed(settings.seed)
    config = model_config(data, settings, train_b.idx.shape[1])
    model = MMRA(config).to(settings.device)
    mean = float(train_y.mean())
    if settings.init_mean:
        last = model.head[-1]
        assert isinstance(last, torch.nn.Linear)
        with torch.no_grad():  # start from the mean, so early epochs learn structure, not offset
            last.bias.fill_(mean)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    stopper = EarlyStop(settings.patience)
    best_state = None
    history: list[dict[str, float]] = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = epoch_order(n_train, settings, rng)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            inputs = train_b.tensors(rows, settings.device)
            truth = torch.from_numpy(train_y[rows]).to(settings.device)
            loss = torch.nn.functional.mse_loss(model(*inputs), truth)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += loss.item() * len(rows)
        val_pred = predict(model, val_b, settings.device)
        val_mse = float(np.mean((val_pred.astype(np.float64) - val_y) ** 2))
        value = criterion(val_pred, val_y, settings)
        improved = stopper.update(epoch, value)
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / n_train,
                "val_loss": val_mse,
                "criterion": value,
            }
        )
        if on_epoch is not None:
            on_epoch(Epoch(epoch, total / n_train, val_mse, value, improved))
        if stopper.stop(epoch):
            break
    if best_state is None:  # NaN every epoch: nothing to keep
        raise UsageError(
            "the validation criterion was never finite: lower --lr, or check the labels"
        )
    model.load_state_dict(best_state)

    split_ids = {name: [data.ids[i] for i in parts[name]] for name in ("train", "val", "test")}
    text_only = TextOnly.fit(train_set.text, train_y, val_set.text, val_y, features.meta["text"])
    seconds = time.perf_counter() - started
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "popcorn": __version__,
        "recipe": settings.recipe,
        "target": target,
        "model": config.to_dict(),
        "settings": asdict(settings),
        "frames": features.meta["frames"],
        # Features from before samplings were named took the rounded indices.
        "frame_sampling": features.meta.get("frame_sampling", "round"),
        "visual": features.meta["visual"],
        "text": features.meta["text"],
        "retrieval": features.meta.get("retrieval", features.meta["text"]),
        "captioner": features.meta.get("captioner"),
        "features_sha256": features.meta.get("sha256"),
        "excluded": {"zero_comments": left_out},
        "split": split_ids,
        "split_sha256": split_sha256(split_ids),
        "split_source": split_source,
        "bank": ["train", "val"] if settings.bank == "train+val" else ["train"],
        "train_mean": mean,
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(history),
        "history": history,
        "val": regression_metrics(predict(model, val_b, settings.device), val_y),
        "train_seconds": round(seconds, 3),
        "samples_per_second": round(len(history) * n_train / max(seconds, 1e-9), 1),
    }
    save(model, bank, text_only, meta, out)
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
    meta["trained_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(out / META_FILE, meta)
