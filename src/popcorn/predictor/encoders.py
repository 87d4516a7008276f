"""Frame encoders: the study's ViT-base (in21k, CLS token) or CLIP's image tower.

A name is an alias below, a hub id or a local folder saved with ``save_pretrained`` (model and
image processor). Models load once per process and run without gradients.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from popcorn.errors import MissingDependencyError, ProviderError, UsageError

DEFAULT_VISUAL = "vit"
VISUAL_ALIASES = {
    "vit": "google/vit-base-patch16-224-in21k",
    "clip": "openai/clip-vit-base-patch32",
}
_loaded: dict[tuple[str, str], tuple[Any, Any, str]] = {}
_lock = threading.Lock()


def _resolve(name: str) -> str:
    source = VISUAL_ALIASES.get(name.lower(), name)
    path = Path(source).expanduser()
    if source.startswith((".", "/", "~")) and not path.is_dir():
        raise UsageError(f"visual encoder folder not found: {name!r}")
    return str(path.resolve()) if path.is_dir() else source


def fingerprint(source: str) -> str:
    """A short hash of a model's identity: its hub id, or its folder's file names and sizes."""
    folder = Path(source)
    h = hashlib.sha256(b"" if folder.is_dir() else source.encode())
    if folder.is_dir():
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix in (".json", ".safetensors", ".bin", ".txt"):
                h.update(f"{file.relative_to(folder)}:{file.stat().st_size}".encode())
    return h.hexdigest()[:16]


class VisualEncoder:
    """One vector per frame: ViT's CLS token, or CLIP's projected image embedding."""

    def __init__(self, name: str = DEFAULT_VISUAL, device: str | None = None) -> None:
        self.name = name
        self.source = _resolve(name)
        self.device = device or "cpu"

    def _load(self) -> tuple[Any, Any, str]:
        key = (self.source, self.device)
        with _lock:
            if key not in _loaded:
                try:
                    import torch  # noqa: F401
                    import transformers as _transformers
                except ImportError:
                    raise MissingDependencyError("transformers", "hf", "Frame encoding") from None
                transformers: Any = _transformers
                transformers.utils.logging.disable_progress_bar()
                try:
                    config = transformers.AutoConfig.from_pretrained(self.source)
                    processor = transformers.AutoImageProcessor.from_pretrained(self.source)
                    # A whole CLIP checkpoint or its image tower saved alone.
                    if config.model_type in ("clip", "clip_vision_model"):
                        kind = "clip"
                        model = transformers.CLIPVisionModelWithProjection.from_pretrained(
                            self.source
                        )
                    else:  # ViT and its kin: the CLS token; ViT's pooler is not needed
                        kind = "cls"
                        extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
                        model = transformers.AutoModel.from_pretrained(self.source, **extra)
                except (OSError, ValueError) as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    raise ProviderError(
                        f"cannot load visual encoder {self.name!r}: {first} (offline? pass a "
                        "local folder)"
                    ) from None
                _loaded[key] = (processor, model.to(self.device).eval(), kind)
            return _loaded[key]

    @property
    def dim(self) -> int:
        _, model, kind = self._load()
        return int(model.config.projection_dim if kind == "clip" else model.config.hidden_size)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "fingerprint": fingerprint(self.source)}

    def encode(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """``frames`` (N x H x W x 3 uint8) -> (N x dim) float32."""
        import torch

        processor, model, kind = self._load()
        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                batch = processor(
                    images=list(frames[start : start + batch_size]), return_tensors="pt"
                )
                pixels = batch["pixel_values"].to(self.device, model.dtype)
                result = model(pixel_values=pixels)
                vectors = result.image_embeds if kind == "clip" else result.last_hidden_state[:, 0]
                out.append(vectors.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)
