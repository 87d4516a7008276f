"""Encoders of the predictor's inputs.

Frames: the study's ViT-base (in21k, CLS token) or CLIP's image tower. Text, for the paper
profile: a transformers text model pooled as AnglE pools it (MMRA's AnglE BERT-base title
features, CLS + mean; UAE-Large-V1's CLS retrieval embeddings, with its retrieval prompt).
Popcorn's own text embedder is a sentence-transformers model (:mod:`popcorn.retrieval.embedders`).

A name is an alias below, a hub id or a local folder saved with ``save_pretrained``. Models load
once per process and run without gradients.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from popcorn.errors import MissingDependencyError, ProviderError, UsageError
from popcorn.registry import Registry
from popcorn.residency import MODELS

DEFAULT_VISUAL = "vit"
VISUAL_ALIASES = {
    "vit": "google/vit-base-patch16-224-in21k",
    "clip": "openai/clip-vit-base-patch32",
}
ANGLE_BERT = "SeanLee97/angle-bert-base-uncased-nli-en-v1"
"""The AnglE BERT-base model MMRA's feature script loads (``angle-bert-base-uncased-nli-en-v1``)."""
UAE_LARGE = "WhereIsAI/UAE-Large-V1"
UAE_PROMPT = "Represent this sentence for searching relevant passages: {text}"
"""AnglE's ``Prompts.C``, which MMRA's retrieval script sets before embedding every text."""
TEXT_ALIASES = {"angle-bert": ANGLE_BERT, "uae-large": UAE_LARGE}
Pooling = Literal["cls", "cls_avg", "mean"]
POOLINGS: tuple[Pooling, ...] = ("cls", "cls_avg", "mean")


def _resolve(name: str, what: str = "visual encoder", aliases: dict[str, str] | None = None) -> str:
    source = (VISUAL_ALIASES if aliases is None else aliases).get(name.lower(), name)
    path = Path(source).expanduser()
    if source.startswith((".", "/", "~")) and not path.is_dir():
        raise UsageError(f"{what} folder not found: {name!r}")
    return str(path.resolve()) if path.is_dir() else source


def _transformers(feature: str) -> Any:
    try:
        import torch  # noqa: F401
        import transformers as _transformers
    except ImportError:
        raise MissingDependencyError("transformers", "hf", feature) from None
    transformers: Any = _transformers
    from popcorn.progress import quiet_transformers

    quiet_transformers()
    return transformers


def _load_error(what: str, name: str, err: Exception) -> ProviderError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ProviderError(f"cannot load {what} {name!r}: {first} (offline? pass a local folder)")


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
        return MODELS.get("encoder", ("visual", self.source, self.device), self._read)

    def _read(self) -> tuple[Any, Any, str]:
        transformers = _transformers("Frame encoding")
        try:
            config = transformers.AutoConfig.from_pretrained(self.source)
            processor = transformers.AutoImageProcessor.from_pretrained(self.source)
            # A whole CLIP checkpoint or its image tower saved alone.
            if config.model_type in ("clip", "clip_vision_model"):
                kind = "clip"
                model = transformers.CLIPVisionModelWithProjection.from_pretrained(self.source)
            else:  # ViT and its kin: the CLS token; ViT's pooler is not needed
                kind = "cls"
                extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
                model = transformers.AutoModel.from_pretrained(self.source, **extra)
        except (OSError, ValueError) as err:
            raise _load_error("visual encoder", self.name, err) from None
        return processor, model.to(self.device).eval(), kind

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


ENCODERS = Registry("frame encoder", "popcorn.encoders")
"""Frame encoders by name. A factory takes ``device`` and returns an object with ``name``,
``dim``, ``identity()`` and ``encode(frames) -> (N x dim) float32``; a name that is not
registered is read as a hub id or a local folder (:class:`VisualEncoder`)."""
for _alias in VISUAL_ALIASES:
    ENCODERS.add(_alias, partial(VisualEncoder, _alias), f"{VISUAL_ALIASES[_alias]} (transformers)")


def visual_encoder(name: str, device: str | None = None) -> Any:
    """The frame encoder ``name``: a registered one (built-in alias or plugin), else the
    transformers model at that hub id or folder."""
    if name.lower() in ENCODERS:
        return ENCODERS.create(name.lower(), device=device)
    return VisualEncoder(name, device=device)


class TextEncoderLike(Protocol):
    """What the predictor needs of a text encoder (``TextEncoder`` or a sentence embedder)."""

    name: str

    @property
    def dim(self) -> int: ...

    def identity(self) -> dict[str, Any]: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class TextEncoder:
    """A transformers text model's last hidden states pooled as AnglE pools them: ``cls`` (the
    first token), ``mean`` (over real tokens) or ``cls_avg`` (the two averaged); each text is
    first put into ``prompt`` (``{text}`` marks where). Vectors are not normalised, as AnglE
    returns them; the model sees at most ``max_length`` tokens (AnglE's default 512)."""

    def __init__(
        self,
        name: str,
        pooling: Pooling = "cls_avg",
        prompt: str = "",
        device: str | None = None,
        max_length: int = 512,
    ) -> None:
        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {pooling!r}: choose {', '.join(POOLINGS)}")
        if prompt and "{text}" not in prompt:
            raise UsageError(f"a text prompt must hold '{{text}}', got {prompt!r}")
        self.name, self.pooling, self.prompt = name, pooling, prompt
        self.source = _resolve(name, "text encoder", TEXT_ALIASES)
        self.device = device or "cpu"
        self.max_length = max_length

    def _load(self) -> tuple[Any, Any]:
        return MODELS.get("encoder", ("text", self.source, self.device), self._read)

    def _read(self) -> tuple[Any, Any]:
        transformers = _transformers("The paper profile's text features")
        try:
            config = transformers.AutoConfig.from_pretrained(self.source)
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.source)
            # BERT's pooler is not used by any pooling here.
            extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
            model = transformers.AutoModel.from_pretrained(self.source, **extra)
        except (OSError, ValueError) as err:
            raise _load_error("text encoder", self.name, err) from None
        return tokenizer, model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self._load()[1].config.hidden_size)

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "fingerprint": fingerprint(self.source),
            "pooling": self.pooling,
            "prompt": self.prompt,
        }

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``texts`` -> (N x dim) float32."""
        import torch

        tokenizer, model = self._load()
        # AnglE truncates at 512 tokens; a smaller model cannot take that many.
        positions = getattr(model.config, "max_position_embeddings", self.max_length)
        limit = min(self.max_length, tokenizer.model_max_length, positions)
        shown = [self.prompt.format(text=t) if self.prompt else t for t in texts]
        out = np.zeros((len(shown), self.dim), dtype=np.float32)
        # Batches of similar lengths pad least; pooling ignores the padding either way.
        order = sorted(range(len(shown)), key=lambda i: len(shown[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = tokenizer(
                    [shown[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=limit,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**batch).last_hidden_state.float()
                out[rows] = pool(hidden, batch["attention_mask"], self.pooling).cpu().numpy()
        return out


def pool(hidden: Any, mask: Any, pooling: Pooling) -> Any:
    """(B, T, H) hidden states and their (B, T) attention mask -> (B, H)."""
    cls = hidden[:, 0]
    if pooling == "cls":
        return cls
    weights = mask.to(hidden.dtype).unsqueeze(2)
    mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
    return mean if pooling == "mean" else (cls + mean) / 2.0


def text_encoder(identity: dict[str, Any], device: str | None = None) -> TextEncoderLike:
    """The text encoder an ``identity()`` record describes: a pooled transformers model when it
    names a pooling, else a sentence-transformers embedder."""
    if identity.get("pooling"):
        return TextEncoder(
            identity["name"], identity["pooling"], identity.get("prompt", ""), device=device
        )
    from popcorn.retrieval.embedders import Embedder

    return Embedder(identity["name"], device=device)
