"""The built-in cover generators: a diffusers text-to-image pipeline run with a preset
(:data:`popcorn.media.presets.COVER_PRESETS`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from popcorn.media.base import CHECK, PREPARE, Cover
from popcorn.media.diffusers.frames import to_uint8
from popcorn.media.diffusers.loader import DiffusersModel, MemoryOptions
from popcorn.media.export import write_png
from popcorn.media.presets import FOUR_BIT, CoverPreset, Presets, check_presets
from popcorn.script import Script


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
    capabilities = frozenset({PREPARE, CHECK})

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
        with self.out_of_memory(f"the {self.name} cover at {w}x{h}"):
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
