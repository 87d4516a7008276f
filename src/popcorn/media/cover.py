"""Covers: the ``preview`` title card (no model) and text-to-image diffusion presets.

As with the clip presets, a cover preset holds the study's exact settings (the ``paper``
profile's) and Popcorn's (the ``popcorn`` profile's), with the reason for each difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from popcorn.media.diffusion import (
    FOUR_BIT,
    Difference,
    DiffusersModel,
    MemoryOptions,
    Presets,
    check_presets,
    differences,
    to_uint8,
)
from popcorn.media.export import write_png
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
    settings: dict[str, Any] = field(default_factory=dict)
    """What decided the image besides the prompt and size (presets, steps, guidance, negative
    prompt); empty for the preview card."""

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
        if self.settings:
            data["settings"] = self.settings
        return data


class PreviewCover:
    name = "preview"
    preview = True

    def settings(self) -> dict[str, object]:
        return {}

    def prepare(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Callable[[], Cover]:
        """What draws and writes the card: all CPU work."""
        return partial(self.render, script, width, height, target, seed)

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        from popcorn.media.base import VideoSpec

        # The animatic's opening frame is the title card; reuse it rather than draw twice.
        spec = VideoSpec(width=width, height=height, frames=3, fps=1)
        write_png(next(PreviewBackend().frames(script, spec)), target)
        return Cover(target, self.name, width, height, preview=True)


@dataclass(frozen=True)
class CoverSettings:
    """What a cover preset runs with under one profile, before the user's overrides."""

    steps: int
    guidance: float
    negative_prompt: str
    shape: Literal["square", "clip"]
    """``square``: side x side, the pipeline's default; ``clip``: the clip's aspect ratio at
    the same pixel count."""

    def described(self, side: int) -> dict[str, str]:
        """Each setting in words, keyed as :attr:`CoverPreset.why` is."""
        return {
            "shape": f"{side}x{side}"
            if self.shape == "square"
            else f"{side}x{side} pixels' worth in the clip's aspect ratio",
            "steps": f"{self.steps} steps",
            "guidance": f"guidance {self.guidance:g}",
            "negative_prompt": f'negative prompt "{self.negative_prompt}"'
            if self.negative_prompt
            else "no negative prompt",
        }


@dataclass(frozen=True)
class CoverPreset:
    name: str
    pipeline: str
    model: str
    native: int
    """The side of the square the model was trained on; covers keep its pixel count."""
    summary: str
    ours: CoverSettings
    """Popcorn's settings (the ``popcorn`` profile's)."""
    study: CoverSettings | None = None
    """The study's exact settings (the ``paper`` profile's); None for a model it did not use."""
    why: Mapping[str, str] = field(default_factory=dict)
    """Why Popcorn's settings differ from the study's, per setting that does."""

    def settings(self, presets: Presets) -> CoverSettings:
        return self.study if presets == "study" and self.study is not None else self.ours

    def differences(self) -> list[Difference]:
        """Where Popcorn's settings depart from the study's ([] for a model not in it)."""
        if self.study is None:
            return []
        study, ours = self.study.described(self.native), self.ours.described(self.native)
        return differences(study, ours, self.why)


COVER_NEGATIVE = "blurry, low quality, watermark, text, deformed, cropped"

COVER_PRESETS: dict[str, CoverPreset] = {
    preset.name: preset
    for preset in (
        CoverPreset(
            name="sd15",
            pipeline="StableDiffusionPipeline",
            model="stable-diffusion-v1-5/stable-diffusion-v1-5",
            native=512,
            summary="Stable Diffusion 1.5 (the study's cover model)",
            ours=CoverSettings(50, 7.5, COVER_NEGATIVE, "clip"),
            # The study called the pipeline with the prompt alone: its defaults.
            study=CoverSettings(50, 7.5, "", "square"),
            why={
                "shape": "a cover stands for its clip in a feed, so it takes the clip's shape "
                "(9:16 with --portrait) rather than a square to be cropped",
                "negative_prompt": "steers SD 1.5 away from the failures that spoil a cover "
                "(blur, watermarks, stray text, cropped subjects)",
            },
        ),
        CoverPreset(
            name="sdxl",
            pipeline="StableDiffusionXLPipeline",
            model="stabilityai/stable-diffusion-xl-base-1.0",
            native=1024,
            summary="Stable Diffusion XL base 1.0",
            ours=CoverSettings(30, 5.0, COVER_NEGATIVE, "clip"),
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
    """A text-to-image cover from the script's cover prompt, shaped by the preset."""

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
        presets: Presets = "popcorn",
    ) -> None:
        self.preset = preset
        self.chosen = preset.settings(check_presets(presets))
        self.pipeline_class = preset.pipeline
        self.side = side or preset.native
        self.steps = steps or self.chosen.steps
        self.guidance = self.chosen.guidance if guidance is None else guidance
        super().__init__(preset.name, model or preset.model, memory, presets)

    def settings(self) -> dict[str, object]:
        """What decides the image besides the prompt (part of the media cache key): under the
        study's presets, what differs from Popcorn's is added (keys made before stay valid)."""
        data: dict[str, object] = {
            "model": self.model,
            "side": self.side,
            "steps": self.steps,
            "g": self.guidance,
        }
        ours = self.preset.ours
        if self.chosen.negative_prompt != ours.negative_prompt:
            data["negative_prompt"] = self.chosen.negative_prompt
        if self.chosen.shape != ours.shape:
            data["shape"] = self.chosen.shape
        if self.memory.quantize == "4bit" and self.four_bit != FOUR_BIT["popcorn"]:
            data["four_bit"] = self.four_bit
        return {**data, **self.acceleration()}

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The cover's size for a clip of ``width`` x ``height``."""
        if self.chosen.shape == "square":
            side = max(8, round(self.side / 8) * 8)
            return side, side
        return cover_size(width, height, self.side)

    def call_kwargs(self, script: Script, width: int, height: int, seed: int) -> dict[str, Any]:
        """The exact arguments given to the diffusers pipeline for the cover of a clip of
        ``width`` x ``height``."""
        import torch

        w, h = self.size(width, height)
        return self.accepted(
            {
                "prompt": script.cover_prompt,
                "negative_prompt": self.chosen.negative_prompt or None,
                "width": w,
                "height": h,
                "num_inference_steps": self.steps,
                "guidance_scale": self.guidance,
                "generator": torch.Generator(device="cpu").manual_seed(seed),
                # The image stays on the device until it is bytes (to_uint8).
                "output_type": "pt",
            }
        )

    def prepare(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Callable[[], Cover]:
        """Make the image now (the GPU's work) and return what writes ``target`` (the CPU's),
        to run now or in a :class:`~popcorn.media.export.MediaWriter`."""
        kwargs = self.call_kwargs(script, width, height, seed)
        w, h = kwargs["width"], kwargs["height"]
        pipe = self.pipeline()
        window = self.fit_prompt(pipe, script.cover_prompt, kwargs)
        with self._out_of_memory(f"the {self.name} cover at {w}x{h}"):
            output = pipe(**kwargs, **self.progress_kwargs("cover", self.steps))
            image = to_uint8(output.images[0])
        flagged = getattr(output, "nsfw_content_detected", None)
        used = {
            "presets": self.presets,
            "steps": self.steps,
            "guidance": self.guidance,
            "negative_prompt": self.chosen.negative_prompt,
            "shape": self.chosen.shape,
            **self.acceleration(),
            **({"prompt_window": window} if window else {}),
        }
        cover = Cover(
            target,
            self.name,
            w,
            h,
            preview=False,
            flagged=bool(flagged and flagged[0]),
            settings=used,
        )

        def write() -> Cover:
            write_png(image, target)
            return cover

        return write

    def render(
        self, script: Script, width: int, height: int, target: Path, seed: int = 42
    ) -> Cover:
        return self.prepare(script, width, height, target, seed)()
