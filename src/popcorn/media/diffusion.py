"""Video generators backed by diffusers pipelines, loaded once per process.

A preset names the pipeline class, the model it loads by default (a hub id; ``--video-model``
takes a local folder or another id), the study's settings, and the sizes and frame counts the
model accepts: requests are rounded to the nearest valid value, with a warning.
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from popcorn.errors import MissingDependencyError, PopcornError, UsageError
from popcorn.media.base import Clip, VideoSpec
from popcorn.media.export import write_mp4
from popcorn.script import Script

LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
WAN_NEGATIVE = (
    "static frame, blurry details, overexposed, washed-out colours, subtitles, watermark, "
    "low quality, compression artifacts, deformed limbs, extra fingers, messy background"
)
LIGHTNING_ADAPTER = (
    "ByteDance/AnimateDiff-Lightning:animatediff_lightning_4step_diffusers.safetensors"
)


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
    denoiser: str = "transformer"
    """The component ``--quantize`` applies to."""
    portrait: bool = True
    """False when the model was trained at one landscape size only."""
    max_frames: int | None = None
    call: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of the pipeline call (the study's or the model card's)."""
    adapter: str | None = None
    """A motion adapter loaded into the pipeline: folder, .safetensors file, or REPO:FILE."""


PRESETS: dict[str, DiffusionPreset] = {
    preset.name: preset
    for preset in (
        DiffusionPreset(
            name="ltx",
            pipeline="LTXPipeline",
            model="Lightricks/LTX-Video",
            spec=VideoSpec(704, 480, 161, 15, 50, 3.0, LTX_NEGATIVE),
            size_multiple=32,
            frames_step=8,
            summary="LTX-Video (the study: 704x480, 161 frames, 50 steps, 15 fps)",
            call={"max_sequence_length": 128},
        ),
        DiffusionPreset(
            name="hunyuan",
            pipeline="HunyuanVideoPipeline",
            model="hunyuanvideo-community/HunyuanVideo",
            spec=VideoSpec(512, 320, 61, 15, 30, 6.0),
            size_multiple=16,
            frames_step=4,
            summary="HunyuanVideo (the study: 512x320, 61 frames, 30 steps, --quantize 4bit)",
        ),
        DiffusionPreset(
            name="cogvideox",
            pipeline="CogVideoXPipeline",
            model="THUDM/CogVideoX-5b",
            spec=VideoSpec(720, 480, 49, 8, 50, 6.0),
            size_multiple=16,
            # The VAE decodes latent frames in pairs after a first group of one: only an odd
            # latent count (8k+1 frames) comes back at the length asked for.
            frames_step=8,
            summary="CogVideoX-5B (the study: 720x480, 49 frames, 50 steps, guidance 6, 8 fps)",
            portrait=False,
            max_frames=49,
            call={"use_dynamic_cfg": True},
        ),
        DiffusionPreset(
            name="animatediff",
            pipeline="AnimateDiffPipeline",
            model="emilianJR/epiCRealism",
            spec=VideoSpec(512, 512, 16, 8, 4, 1.0),
            size_multiple=8,
            frames_step=1,
            summary="AnimateDiff-Lightning 4-step on a Stable Diffusion 1.5 base (512x512, 16 "
            "frames)",
            denoiser="unet",
            max_frames=32,
            adapter=LIGHTNING_ADAPTER,
        ),
        DiffusionPreset(
            name="wan",
            pipeline="WanPipeline",
            model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            spec=VideoSpec(832, 480, 49, 16, 50, 5.0, WAN_NEGATIVE),
            size_multiple=16,
            frames_step=4,
            summary="Wan 2.1 T2V 1.3B (832x480, 49 frames = 3 s at 16 fps, 50 steps)",
        ),
        DiffusionPreset(
            name="hunyuan15",
            pipeline="HunyuanVideo15Pipeline",
            model="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
            # Tencent's reference script writes 24 fps: 73 frames make the 3-second clip.
            spec=VideoSpec(848, 480, 73, 24, 50, 6.0),
            size_multiple=16,
            frames_step=4,
            summary="HunyuanVideo-1.5 480p T2V (848x480, 73 frames = 3 s at 24 fps, 50 steps, "
            "guidance 6 through its guider)",
        ),
    )
}


@dataclass(frozen=True)
class MemoryOptions:
    """Where and how pipelines run; ``auto`` picks CUDA and bf16 when a GPU is there."""

    device: str = "auto"
    dtype: str = "auto"
    offload: str = "none"
    """``model`` moves whole models to the GPU in turn; ``sequential`` moves layers (slowest,
    least memory)."""
    vae_tiling: bool = False
    vae_slicing: bool = False
    quantize: str = "none"
    """``4bit`` (nf4) or ``8bit`` weights for the denoiser, through bitsandbytes (CUDA only)."""
    unload: bool = False
    """Free each stage's models before the next stage loads (LLM, then clip, then cover)."""

    def __post_init__(self) -> None:
        if self.offload not in ("none", "model", "sequential"):
            raise UsageError(f"--offload must be none, model or sequential, not {self.offload!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise UsageError("--media-dtype must be auto, float32, float16 or bfloat16")
        if self.quantize not in ("none", "4bit", "8bit"):
            raise UsageError(f"--quantize must be none, 4bit or 8bit, not {self.quantize!r}")

    def resolve(self) -> tuple[str, Any]:
        """(device, torch dtype) with ``auto`` decided for this machine."""
        import torch

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        return device, getattr(torch, dtype_name)


loads: Counter[str] = Counter()
"""How many times each model source was loaded in this process (batches load each once)."""
_pipelines: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def release(role: str | None = None) -> int:
    """Drop the loaded pipelines (of one role, ``video`` or ``cover``, or all) and free GPU
    memory; the next use loads again. Returns how many were dropped."""
    with _lock:
        keys = [k for k in _pipelines if role is None or k[0] == role]
        for key in keys:
            del _pipelines[key]
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(keys)


def _check_local(source: str, what: str) -> None:
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():
        raise UsageError(f"{what} not found: {source!r}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class DiffusersModel:
    """Loading shared by the clip and cover generators: one pipeline per source and settings."""

    role = "video"
    pipeline_class = ""
    denoiser = "transformer"

    def __init__(self, name: str, model: str, memory: MemoryOptions | None) -> None:
        self.name = name
        self.model = model
        self.memory = memory or MemoryOptions()
        _check_local(self.model, f"{self.role} model folder")

    def check(self) -> None:
        """Fail before anything loads on settings this machine cannot run."""
        if self.memory.quantize != "none":
            device, _ = self.memory.resolve()
            if not device.startswith("cuda"):
                raise UsageError(f"--quantize {self.memory.quantize} needs a CUDA GPU")
            from importlib.util import find_spec

            if find_spec("bitsandbytes") is None:
                raise MissingDependencyError("bitsandbytes", "quant", "--quantize")

    def pipeline(self) -> Any:
        device, dtype = self.memory.resolve()
        key = (self.role, self.pipeline_class, self.model, device, str(dtype), self.memory)
        with _lock:
            if key not in _pipelines:
                _pipelines[key] = self._load(device, dtype)
                loads[self.model] += 1
            return _pipelines[key]

    def _load(self, device: str, dtype: Any) -> Any:
        self.check()
        try:
            import diffusers
        except ImportError:
            raise MissingDependencyError("diffusers", "diffusion", "Diffusion models") from None
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.memory.quantize != "none":
            kwargs["quantization_config"] = self._quantization(diffusers, dtype)
        try:
            pipe = self._from_pretrained(diffusers, kwargs)
        except (OSError, ValueError) as err:
            raise PopcornError(
                f"cannot load {self.name} from {self.model!r}: {_first_line(err)} "
                f"(offline? pass --{self.role}-model FOLDER)"
            ) from None
        if self.memory.offload == "model":
            pipe.enable_model_cpu_offload()
        elif self.memory.offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        elif self.memory.quantize == "none":
            pipe.to(device)
        else:  # bitsandbytes places the quantised weights itself; move the rest
            for name, part in pipe.components.items():
                if name != self.denoiser and hasattr(part, "to") and hasattr(part, "parameters"):
                    part.to(device)
        if self.memory.vae_tiling:
            pipe.vae.enable_tiling()
        if self.memory.vae_slicing:
            pipe.vae.enable_slicing()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _quantization(self, diffusers: Any, dtype: Any) -> Any:
        if self.memory.quantize == "4bit":
            backend = "bitsandbytes_4bit"
            quant = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
            quant["bnb_4bit_compute_dtype"] = dtype
        else:
            backend, quant = "bitsandbytes_8bit", {"load_in_8bit": True}
        return diffusers.PipelineQuantizationConfig(
            quant_backend=backend,
            quant_kwargs=quant,
            components_to_quantize=[self.denoiser],
        )

    def _from_pretrained(self, diffusers: Any, kwargs: dict[str, Any]) -> Any:
        return getattr(diffusers, self.pipeline_class).from_pretrained(self.model, **kwargs)

    def accepted(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` without what this pipeline's call does not take."""
        import diffusers

        params = inspect.signature(getattr(diffusers, self.pipeline_class).__call__).parameters
        return {k: v for k, v in kwargs.items() if k in params}

    @contextmanager
    def _out_of_memory(self, what: str) -> Iterator[None]:
        import torch

        try:
            yield
        except torch.cuda.OutOfMemoryError:
            hints = "--offload model (or sequential), --vae-tiling, --quantize 4bit"
            if not self.memory.unload:
                hints += ", --unload-stages"
            raise PopcornError(f"out of GPU memory rendering {what}: try {hints}") from None


class DiffusersVideo(DiffusersModel):
    preview = False

    def __init__(
        self,
        preset: DiffusionPreset,
        model: str | None = None,
        memory: MemoryOptions | None = None,
        adapter: str | None = None,
    ) -> None:
        self.preset = preset
        self.pipeline_class = preset.pipeline
        self.denoiser = preset.denoiser
        self.adapter = adapter or preset.adapter
        if self.adapter and ":" not in self.adapter:
            _check_local(self.adapter, "motion adapter")
        super().__init__(preset.name, model or preset.model, memory)

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
        if self.preset.max_frames and frames > self.preset.max_frames:
            warnings.append(
                f"{self.name} takes at most {self.preset.max_frames} frames: {frames} -> "
                f"{self.preset.max_frames}"
            )
            frames = self.preset.max_frames
        if height > width and not self.preset.portrait:
            warnings.append(
                f"{self.name} was trained on {self.preset.spec.width}x{self.preset.spec.height} "
                "landscape clips only: expect poor portrait output"
            )
        return replace(spec, width=width, height=height, frames=frames), warnings

    def _from_pretrained(self, diffusers: Any, kwargs: dict[str, Any]) -> Any:
        cls = getattr(diffusers, self.pipeline_class)
        saved_with_adapter = (Path(self.model).expanduser() / "motion_adapter").is_dir()
        if saved_with_adapter and self.adapter and self.adapter != self.preset.adapter:
            logging.getLogger(__name__).warning(
                "%s holds its own motion adapter; --motion-adapter %s is not used",
                self.model,
                self.adapter,
            )
        if not self.adapter or saved_with_adapter:
            return cls.from_pretrained(self.model, **kwargs)
        adapter = _motion_adapter(diffusers, self.adapter, kwargs["dtype"])
        pipe = cls.from_pretrained(self.model, motion_adapter=adapter, **kwargs)
        # AnimateDiff-Lightning was distilled with trailing timesteps on a linear schedule.
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="trailing", beta_schedule="linear"
        )
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
            **self.preset.call,
        }
        return self.accepted(kwargs)

    def render(self, script: Script, spec: VideoSpec, target: Path) -> Clip:
        pipe = self.pipeline()
        _set_guidance(pipe, spec.guidance)
        kwargs = self.call_kwargs(script, spec)
        what = f"{self.name} at {spec.width}x{spec.height}, {spec.frames} frames"
        with self._out_of_memory(what):
            frames = pipe(**kwargs).frames[0]
        video = _to_uint8(frames)
        count = write_mp4(iter(video), target, spec.fps)
        return Clip(target, self.name, spec.width, spec.height, count, spec.fps, preview=False)


def _set_guidance(pipe: Any, guidance: float) -> None:
    """Pipelines with a ``guider`` (HunyuanVideo-1.5) take guidance from it, not from a call
    argument: give it the spec's scale, so presets and --guidance mean the same everywhere."""
    guider = getattr(pipe, "guider", None)
    if guider is not None and "guidance_scale" not in inspect.signature(pipe.__call__).parameters:
        pipe.guider = guider.new(guidance_scale=guidance)


def _to_uint8(frames: Any) -> np.ndarray:
    array = np.asarray(frames, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def _motion_adapter(diffusers: Any, source: str, dtype: Any) -> Any:
    """A MotionAdapter from a folder, a .safetensors file, or ``REPO:FILE`` on the hub."""
    if Path(source).expanduser().is_dir():
        return diffusers.MotionAdapter.from_pretrained(source, dtype=dtype)
    file = Path(source).expanduser()
    if not file.is_file():
        repo, _, name = source.partition(":")
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(repo, name))
        except Exception as err:  # the hub client raises many types; all mean "not available"
            raise PopcornError(
                f"cannot fetch motion adapter {source!r}: {_first_line(err)} "
                "(offline? pass --motion-adapter FOLDER_OR_FILE)"
            ) from None
    from safetensors.torch import load_file

    adapter = diffusers.MotionAdapter()
    try:
        adapter.load_state_dict(load_file(str(file)))
    except RuntimeError as err:  # weights of another shape: not an AnimateDiff v1.5 adapter
        raise PopcornError(
            f"motion adapter {source!r} does not fit MotionAdapter(): {_first_line(err)} "
            "(pass a folder saved with MotionAdapter.save_pretrained)"
        ) from None
    return adapter.to(dtype)
