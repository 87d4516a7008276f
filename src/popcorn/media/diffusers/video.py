"""The built-in clip generators: a diffusers text-to-video pipeline run with a preset
(:data:`popcorn.media.presets.PRESETS`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError, UsageError
from popcorn.media.base import CHECK, KEY_SETTINGS, PREPARE, Clip, VideoSpec
from popcorn.media.diffusers.acceleration import block_lists, cache_config, cache_settings
from popcorn.media.diffusers.animatediff import load_with_adapter
from popcorn.media.diffusers.frames import to_uint8
from popcorn.media.diffusers.loader import (
    DiffusersModel,
    MemoryOptions,
    cannot_quantize,
    check_local,
    first_line,
)
from popcorn.media.export import Encoding, write_mp4
from popcorn.media.presets import FOUR_BIT, DiffusionPreset, Presets, check_presets
from popcorn.script import Script


class DiffusersVideo(DiffusersModel):
    """A clip from the script's video prompt, shaped by the preset and the user's overrides."""

    preview = False
    capabilities = frozenset({PREPARE, CHECK, KEY_SETTINGS})

    def __init__(
        self,
        preset: DiffusionPreset,
        model: str | None = None,
        memory: MemoryOptions | None = None,
        adapter: str | None = None,
        presets: Presets = "popcorn",
    ) -> None:
        self.preset = preset
        self.chosen = preset.settings(check_presets(presets))
        self.pipeline_class = preset.pipeline
        self.denoiser = preset.denoiser
        self.adapter = adapter or preset.adapter
        if self.adapter and ":" not in self.adapter:
            check_local(self.adapter, "motion adapter")
        memory = memory or MemoryOptions()
        self._asked = memory.quantize
        self.notes: list[str] = []
        """Warnings about the settings themselves, given with every fitted spec."""
        if memory.quantize == "none" and self.chosen.quantize != "none":
            lacking = cannot_quantize(memory)
            if lacking is None:
                memory = replace(memory, quantize=self.chosen.quantize)
            else:
                self.notes.append(
                    f"{preset.name}: the study ran its {preset.denoiser} in 4-bit, which needs "
                    f"{lacking}: running it unquantised, unlike the study"
                )
        super().__init__(preset.name, model or preset.model, memory, presets)
        self.preset_dtype = self.chosen.dtype
        self.text_encoder_fp8 = self.chosen.text_encoder_fp8

    def default_spec(self) -> VideoSpec:
        return self.chosen.spec

    def key_settings(self) -> dict[str, Any]:
        """What the clip's cache key adds to its spec, model and memory options: nothing under
        Popcorn's presets (keys made before profiles stay valid); under the study's, only what
        differs from Popcorn's (a difference in the spec is in the key already)."""
        extra: dict[str, Any] = {}
        if dict(self.chosen.call) != dict(self.preset.ours.call):
            extra["call"] = dict(self.chosen.call)
        if self.memory.quantize != self._asked:
            extra["quantize"] = self.memory.quantize
        if self.memory.quantize == "4bit" and self.four_bit != FOUR_BIT["popcorn"]:
            extra["four_bit"] = self.four_bit
        if self.chosen.dtype is not None or self.chosen.text_encoder_fp8:
            # Applied on CUDA only, like the study's quantisation: keyed where it applies.
            _, base = self.memory.resolve()
            _, dtype, fp8 = self.resolve()
            if dtype != base or fp8:
                extra["precision"] = {"dtype": str(dtype).removeprefix("torch."), "fp8": fp8}
        return {**extra, **self.acceleration()}

    def record(self) -> dict[str, Any]:
        """What the manifest records besides the spec: the presets, the pipeline's extra
        arguments, the denoiser's weights and its acceleration."""
        data: dict[str, Any] = {
            "presets": self.presets,
            "call": dict(self.chosen.call),
            "quantize": self.memory.quantize,
        }
        if self.memory.quantize == "4bit":
            data["four_bit"] = self.four_bit
        return {**data, **self.acceleration()}

    def check(self) -> None:
        super().check()
        cache = self.memory.cache
        if cache != "none" and cache not in self.preset.caches:
            offered = ", ".join(self.preset.caches)
            raise UsageError(
                f"--cache {cache} does not work with {self.name}"
                + (f": use {offered}" if offered else " (no diffusers cache hooks in its model)")
            )

    def _cache(self) -> dict[str, Any] | None:
        if self.memory.cache == "none":
            return None
        return cache_settings(self.memory.cache, self.preset)

    def _accelerate(self, diffusers: Any, pipe: Any, dtype: Any) -> None:
        cache = self._cache()
        if cache is not None:
            denoiser = getattr(pipe, self.denoiser)
            blocks = sum(len(blocks) for blocks in block_lists(denoiser))
            if cache["method"] == "first-block" and blocks < 2:
                raise PopcornError(
                    f"--cache first-block needs a denoiser of two blocks or more; "
                    f"{self.model!r} has {blocks}"
                )
            try:
                denoiser.enable_cache(cache_config(diffusers, cache, pipe, dtype))
            except (ValueError, TypeError, AttributeError) as err:
                raise PopcornError(
                    f"cannot apply --cache {cache['method']} to {self.name}: {first_line(err)}"
                ) from None
        super()._accelerate(diffusers, pipe, dtype)

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        """Round ``spec`` to what the model accepts; say what changed."""
        warnings = list(self.notes)
        m, step = self.preset.size_multiple, self.preset.frames_step
        width = max(m, round(spec.width / m) * m)
        height = max(m, round(spec.height / m) * m)
        frames = max(1, round((spec.frames - 1) / step) * step + 1)
        if (width, height) != (spec.width, spec.height):
            warnings.append(
                f"{self.name} needs sizes in multiples of {m}: "
                f"{spec.width}x{spec.height} -> {width}x{height}"
            )
        if frames != spec.frames:
            warnings.append(f"{self.name} needs {step}k+1 frames: {spec.frames} -> {frames}")
        if self.preset.max_frames and frames > self.preset.max_frames:
            warnings.append(
                f"{self.name} takes at most {self.preset.max_frames} frames: {frames} -> "
                f"{self.preset.max_frames}"
            )
            frames = self.preset.max_frames
        if height > width and not self.preset.portrait:
            warnings.append(
                f"{self.name} was trained on {self.chosen.spec.width}x{self.chosen.spec.height} "
                "landscape clips only: expect poor portrait output"
            )
        return replace(spec, width=width, height=height, frames=frames), warnings

    def _from_pretrained(self, diffusers: Any, kwargs: dict[str, Any]) -> Any:
        cls = getattr(diffusers, self.pipeline_class)
        if not self.adapter:
            return cls.from_pretrained(self.model, **kwargs)
        return load_with_adapter(
            diffusers, cls, self.model, self.adapter, self.preset.adapter, kwargs
        )

    def call_kwargs(self, script: Script, spec: VideoSpec) -> dict[str, Any]:
        """The exact arguments given to the diffusers pipeline for one clip."""
        import torch

        kwargs: dict[str, Any] = {
            "prompt": script.video_prompt,
            "negative_prompt": spec.negative_prompt or None,
            "width": spec.width,
            "height": spec.height,
            "num_frames": spec.frames,
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance,
            "generator": torch.Generator(device="cpu").manual_seed(spec.seed),
            # Frames stay on the device until they are bytes (to_uint8).
            "output_type": "pt",
            **self.chosen.call,
        }
        return self.accepted(kwargs)

    def prepare(
        self, script: Script, spec: VideoSpec, target: Path, encoding: Encoding | None = None
    ) -> Callable[[], Clip]:
        """Make the clip's frames now (the GPU's work) and return what writes ``target`` (the
        CPU's), to run now or in a :class:`~popcorn.media.export.MediaWriter`."""
        pipe = self.pipeline()
        _set_guidance(pipe, spec.guidance)
        kwargs = self.call_kwargs(script, spec)
        window = self.fit_prompt(pipe, script.video_prompt, kwargs)
        what = f"{self.name} at {spec.width}x{spec.height}, {spec.frames} frames"
        with self.out_of_memory(what):
            video = to_uint8(pipe(**kwargs, **self.progress_kwargs("clip", spec.steps)).frames[0])
        record = {**self.record(), **({"prompt_window": window} if window else {})}

        def write() -> Clip:
            count = write_mp4(iter(video), target, spec.fps, encoding)
            w, h = spec.width, spec.height
            return Clip(target, self.name, w, h, count, spec.fps, preview=False, settings=record)

        return write

    def render(
        self, script: Script, spec: VideoSpec, target: Path, encoding: Encoding | None = None
    ) -> Clip:
        return self.prepare(script, spec, target, encoding)()


def _set_guidance(pipe: Any, guidance: float) -> None:
    """Pipelines with a ``guider`` (HunyuanVideo-1.5) take guidance from it, not from a call
    argument: give it the spec's scale, so presets and --guidance mean the same everywhere."""
    guider = getattr(pipe, "guider", None)
    if guider is not None and "guidance_scale" not in inspect.signature(pipe.__call__).parameters:
        pipe.guider = guider.new(guidance_scale=guidance)
