"""Video generators backed by diffusers pipelines, loaded once per process.

A preset names the pipeline class, the model it loads by default (a hub id; ``--video-model``
takes a local folder or another id), the study's settings, and the sizes and frame counts the
model accepts: requests are rounded to the nearest valid value, with a warning.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from popcorn.errors import MissingDependencyError, PopcornError, UsageError
from popcorn.media.base import Clip, VideoSpec
from popcorn.media.export import write_mp4
from popcorn.script import Script

LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"


@dataclass(frozen=True)
class DiffusionPreset:
    name: str
    pipeline: str
    """The diffusers pipeline class."""
    model: str
    spec: VideoSpec
    size_multiple: int
    frames_step: int
    """Valid frame counts are ``frames_step * k + 1``."""
    summary: str
    max_sequence_length: int | None = None


PRESETS: dict[str, DiffusionPreset] = {
    "ltx": DiffusionPreset(
        name="ltx",
        pipeline="LTXPipeline",
        model="Lightricks/LTX-Video",
        spec=VideoSpec(
            width=704,
            height=480,
            frames=161,
            fps=15,
            steps=50,
            guidance=3.0,
            negative_prompt=LTX_NEGATIVE,
        ),
        size_multiple=32,
        frames_step=8,
        summary="LTX-Video (the study: 704x480, 161 frames, 50 steps, 15 fps)",
        max_sequence_length=128,
    ),
}


@dataclass(frozen=True)
class MemoryOptions:
    """Where and how the pipeline runs; ``auto`` picks CUDA and bf16 when a GPU is there."""

    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"
    """``model`` moves whole models to the GPU in turn; ``sequential`` moves layers (slowest,
    least memory)."""
    vae_tiling: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        if self.offload not in ("none", "model", "sequential"):
            raise UsageError(f"--offload must be none, model or sequential, not {self.offload!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise UsageError("--media-dtype must be auto, float32, float16 or bfloat16")


loads: Counter[str] = Counter()
"""How many times each pipeline was loaded in this process (batches load each once)."""
_pipelines: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


class DiffusersVideo:
    preview = False

    def __init__(
        self, preset: DiffusionPreset, model: str | None = None, memory: MemoryOptions | None = None
    ) -> None:
        self.preset = preset
        self.name = preset.name
        self.model = model or preset.model
        self.memory = memory or MemoryOptions()
        if self.model.startswith((".", "/", "~")) and not Path(self.model).expanduser().is_dir():
            raise UsageError(f"video model folder not found: {self.model!r}")

    def default_spec(self) -> VideoSpec:
        return self.preset.spec

    def fit(self, spec: VideoSpec) -> tuple[VideoSpec, list[str]]:
        """Round ``spec`` to what the model accepts; say what changed."""
        warnings = []
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
        return replace(spec, width=width, height=height, frames=frames), warnings

    def _device_dtype(self) -> tuple[str, Any]:
        import torch

        device = self.memory.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.memory.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        return device, getattr(torch, dtype_name)

    def pipeline(self) -> Any:
        device, dtype = self._device_dtype()
        key = (self.preset.pipeline, self.model, device, str(dtype), self.memory)
        with _lock:
            if key not in _pipelines:
                _pipelines[key] = self._load(device, dtype)
                loads[self.model] += 1
            return _pipelines[key]

    def _load(self, device: str, dtype: Any) -> Any:
        try:
            import diffusers
        except ImportError:
            raise MissingDependencyError("diffusers", "diffusion", "Diffusion video") from None
        cls = getattr(diffusers, self.preset.pipeline)
        try:
            pipe = cls.from_pretrained(self.model, dtype=dtype)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PopcornError(
                f"cannot load {self.name} from {self.model!r}: {first} "
                "(offline? pass --video-model FOLDER)"
            ) from None
        if self.memory.offload == "model":
            pipe.enable_model_cpu_offload()
        elif self.memory.offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(device)
        if self.memory.vae_tiling:
            pipe.vae.enable_tiling()
        if self.memory.vae_slicing:
            pipe.vae.enable_slicing()
        pipe.set_progress_bar_config(disable=True)
        return pipe

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
            "output_type": "np",
        }
        if self.preset.max_sequence_length:
            kwargs["max_sequence_length"] = self.preset.max_sequence_length
        return kwargs

    def render(self, script: Script, spec: VideoSpec, target: Path) -> Clip:
        import torch

        pipe = self.pipeline()
        kwargs = self.call_kwargs(script, spec)
        try:
            frames = pipe(**kwargs).frames[0]
        except torch.cuda.OutOfMemoryError:
            raise PopcornError(
                f"out of GPU memory rendering {self.name} at {spec.width}x{spec.height}, "
                f"{spec.frames} frames: try --offload model (or sequential), --vae-tiling, "
                "--media-dtype bfloat16, or fewer --frames"
            ) from None
        video = (np.clip(np.asarray(frames), 0.0, 1.0) * 255).round().astype(np.uint8)
        count = write_mp4(iter(video), target, spec.fps)
        return Clip(target, self.name, spec.width, spec.height, count, spec.fps, preview=False)
