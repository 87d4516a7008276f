"""Covers: the ``preview`` title card (no model) and text-to-image diffusion presets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from popcorn._io import atomic_write_bytes
from popcorn.media.diffusion import DiffusersModel, MemoryOptions
from popcorn.media.preview import PreviewBackend
from popcorn.script import Script


@dataclass(frozen=True)
class Cover:
    file: Path
    backend: str
    width: int
    height: int
    preview: bool
    flagged: bool = False
    """The model's safety checker blanked the image."""

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "file": self.file.name,
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "preview": self.preview,
        }
        if self.flagged:
            data["flagged"] = True
        return data


class PreviewCover:
    name = "preview"
    preview = True

    def settings(self) -> dict[str, object]:
        return {}

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        import io

        from PIL import Image

        from popcorn.media.base import VideoSpec

        # The animatic's opening frame is the title card; reuse it rather than draw twice.
        spec = VideoSpec(width=width, height=height, frames=3, fps=1)
        first = next(PreviewBackend().frames(script, spec))
        buf = io.BytesIO()
        Image.fromarray(first).save(buf, format="PNG")
        atomic_write_bytes(target, buf.getvalue())
        return Cover(target, self.name, width, height, preview=True)


@dataclass(frozen=True)
class CoverPreset:
    name: str
    pipeline: str
    model: str
    native: int
    """The side of the square the model was trained on; covers keep its pixel count."""
    steps: int
    guidance: float
    negative_prompt: str
    summary: str


COVER_NEGATIVE = "blurry, low quality, watermark, text, deformed, cropped"

COVER_PRESETS: dict[str, CoverPreset] = {
    preset.name: preset
    for preset in (
        CoverPreset(
            name="sd15",
            pipeline="StableDiffusionPipeline",
            model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            native=512,
            steps=50,
            guidance=7.5,
            negative_prompt=COVER_NEGATIVE,
            summary="Stable Diffusion 1.5 (the study's cover model; 512 px, 50 steps)",
        ),
        CoverPreset(
            name="sdxl",
            pipeline="StableDiffusionXLPipeline",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            native=1024,
            steps=30,
            guidance=5.0,
            negative_prompt=COVER_NEGATIVE,
            summary="Stable Diffusion XL base 1.0 (1024 px, 30 steps)",
        ),
    )
}


def cover_size(width: int, height: int, side: int, multiple: int = 8) -> tuple[int, int]:
    """The clip's aspect ratio at ``side * side`` pixels, in multiples of ``multiple``."""
    ratio = width / height
    w = round((side * side * ratio) ** 0.5 / multiple) * multiple
    h = round((side * side / ratio) ** 0.5 / multiple) * multiple
    return max(multiple, w), max(multiple, h)


class DiffusersCover(DiffusersModel):
    """A text-to-image cover from the script's cover prompt, shaped like the clip."""

    role = "cover"
    preview = False
    denoiser = "unet"

    def __init__(
        self,
        preset: CoverPreset,
        model: str | None = None,
        memory: MemoryOptions | None = None,
        side: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> None:
        self.preset = preset
        self.pipeline_class = preset.pipeline
        self.side = side or preset.native
        self.steps = steps or preset.steps
        self.guidance = preset.guidance if guidance is None else guidance
        super().__init__(preset.name, model or preset.model, memory)

    def settings(self) -> dict[str, object]:
        """What decides the image besides the prompt (part of the media cache key)."""
        return {"model": self.model, "side": self.side, "steps": self.steps, "g": self.guidance}

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        import io

        import torch

        w, h = cover_size(width, height, self.side)
        pipe = self.pipeline()
        kwargs = self.accepted(
            {
                "prompt": script.cover_prompt,
                "negative_prompt": self.preset.negative_prompt,
                "width": w,
                "height": h,
                "num_inference_steps": self.steps,
                "guidance_scale": self.guidance,
                "generator": torch.Generator(device="cpu").manual_seed(seed),
                "output_type": "pil",
            }
        )
        with self._out_of_memory(f"the {self.name} cover at {w}x{h}"):
            output = pipe(**kwargs)
        flagged = getattr(output, "nsfw_content_detected", None)
        buf = io.BytesIO()
        output.images[0].save(buf, format="PNG")
        atomic_write_bytes(target, buf.getvalue())
        return Cover(target, self.name, w, h, preview=False, flagged=bool(flagged and flagged[0]))
