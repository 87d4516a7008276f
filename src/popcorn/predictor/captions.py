"""Frame captions for the paper profile's retrieval text: MMRA captions each of a video's 10
frames with BLIP and embeds the title followed by the captions.

Any image-to-text model that transformers loads as ``AutoModelForImageTextToText`` (BLIP, GIT,
...) or a ``VisionEncoderDecoderModel`` can stand in: a hub id or a folder saved with
``save_pretrained`` (model, image processor, tokenizer). Decoding is greedy with the model's own
generation settings, as MMRA called ``generate`` (BLIP: at most 20 tokens), unless
``max_new_tokens`` caps them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from popcorn.predictor.encoders import _load_error, _resolve, _transformers, fingerprint
from popcorn.residency import MODELS

BLIP = "Salesforce/blip-image-captioning-base"
"""MMRA loads "BLIP" from a local folder without naming the checkpoint; this is the base
captioning model transformers documents for ``BlipForConditionalGeneration``."""
CAPTIONER_ALIASES = {"blip": BLIP, "blip-large": "Salesforce/blip-image-captioning-large"}


def video_caption(captions: list[str]) -> str:
    """One caption for a video out of its frames' captions, in frame order."""
    return ". ".join(c.strip() for c in captions if c.strip())


class Captioner:
    """Captions frames (N x H x W x 3 uint8) -> N strings."""

    def __init__(
        self, name: str = "blip", device: str | None = None, max_new_tokens: int | None = None
    ) -> None:
        self.name = name
        self.source = _resolve(name, "captioner", CAPTIONER_ALIASES)
        self.device = device or "cpu"
        self.max_new_tokens = max_new_tokens

    def _load(self) -> tuple[Any, Any, Any]:
        return MODELS.get("captioner", (self.source, self.device), self._read)

    def _read(self) -> tuple[Any, Any, Any]:
        transformers = _transformers("Frame captioning")
        try:
            config = transformers.AutoConfig.from_pretrained(self.source)
            images = transformers.AutoImageProcessor.from_pretrained(self.source)
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.source)
            if config.model_type == "vision-encoder-decoder":
                loader = transformers.VisionEncoderDecoderModel
            else:
                loader = transformers.AutoModelForImageTextToText
            model = loader.from_pretrained(self.source)
        except (OSError, ValueError) as err:
            raise _load_error("captioner", self.name, err) from None
        return images, tokenizer, model.to(self.device).eval()

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fingerprint": fingerprint(self.source),
            "max_new_tokens": self.max_new_tokens,
        }

    def tag(self) -> str:
        """What captions depend on, for the cache's folder name."""
        cap = "" if self.max_new_tokens is None else f"-{self.max_new_tokens}"
        return f"{fingerprint(self.source)}{cap}"

    def caption(self, frames: np.ndarray, batch_size: int = 16) -> list[str]:
        import torch

        images, tokenizer, model = self._load()
        limit = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
        out: list[str] = []
        with torch.inference_mode(), warnings.catch_warnings():
            # The model's own length limit is the point (MMRA set none); do not warn about it.
            warnings.filterwarnings("ignore", message=".*default `max_length`")
            for start in range(0, len(frames), batch_size):
                batch = list(frames[start : start + batch_size])
                pixels = images(images=batch, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(self.device, model.dtype)
                tokens = model.generate(pixel_values=pixels, **limit)
                out += [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return out
