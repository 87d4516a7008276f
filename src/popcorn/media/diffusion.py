"""Video generators backed by diffusers pipelines, loaded once per process.

A preset names the pipeline class, the model it loads by default (a hub id; ``--video-model``
takes a local folder or another id) and the sizes and frame counts the model accepts (requests
are rounded to the nearest valid value, with a warning). It holds its settings twice: the
study's exact ones, which the ``paper`` profile runs, and Popcorn's, which the ``popcorn``
profile runs, with the reason for each difference (``popcorn generators`` prints both). A model
the study did not use has Popcorn's settings only, under both profiles.
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from popcorn.errors import MissingDependencyError, PopcornError, UsageError
from popcorn.media.base import Clip, VideoSpec
from popcorn.media.export import Encoding, write_mp4
from popcorn.script import Script

Presets = Literal["study", "popcorn"]
"""Which settings the presets run with: ``study`` (the paper profile) or ``popcorn``
(:attr:`popcorn.profiles.Profile.media`)."""
PRESET_CHOICES: tuple[Presets, ...] = ("study", "popcorn")

FOUR_BIT: dict[str, Literal["fp4", "nf4"]] = {"study": "fp4", "popcorn": "nf4"}
"""The 4-bit type of a quantised denoiser: bitsandbytes' default (fp4), which the study's
``BitsAndBytesConfig(load_in_4bit=True)`` got, or nf4, which loses less at the same size."""

LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
WAN_NEGATIVE = (
    "static frame, blurry details, overexposed, washed-out colours, subtitles, watermark, "
    "low quality, compression artifacts, deformed limbs, extra fingers, messy background"
)
LIGHTNING_ADAPTER = (
    "ByteDance/AnimateDiff-Lightning:animatediff_lightning_4step_diffusers.safetensors"
)


def check_presets(presets: str) -> Presets:
    """``presets`` as a :data:`Presets` value; ``UsageError`` for anything else."""
    if presets not in PRESET_CHOICES:
        raise UsageError(f"presets must be study or popcorn, not {presets!r}")
    return "study" if presets == "study" else "popcorn"


@dataclass(frozen=True)
class Difference:
    """One setting where Popcorn's preset departs from the study's, and why."""

    setting: str
    study: str
    popcorn: str
    why: str

    def line(self) -> str:
        return f"{self.popcorn} (the study: {self.study}): {self.why}"


def differences(
    study: Mapping[str, str], ours: Mapping[str, str], why: Mapping[str, str]
) -> list[Difference]:
    """The settings whose descriptions differ, each with its reason (``why`` must hold one
    for every difference and nothing else: a test keeps the two in step)."""
    unset = "the pipeline's default"
    found = []
    for key in dict.fromkeys([*study, *ours]):
        a, b = study.get(key, unset), ours.get(key, unset)
        if a != b:
            found.append(Difference(key, a, b, why.get(key, "")))
    return found


@dataclass(frozen=True)
class ClipSettings:
    """What a preset runs with under one profile, before the user's overrides."""

    spec: VideoSpec
    call: Mapping[str, Any] = field(default_factory=dict)
    """Extra arguments of the pipeline call."""
    quantize: Literal["none", "4bit"] = "none"
    """The denoiser's weights while ``--quantize`` is left at none."""

    def described(self, denoiser: str, presets: Presets) -> dict[str, str]:
        """Each setting in words, keyed as :attr:`DiffusionPreset.why` is."""
        s = self.spec
        words = {
            "size": f"{s.width}x{s.height}",
            "frames": f"{s.frames} frames",
            "fps": f"{s.fps} fps",
            "steps": f"{s.steps} steps",
            "guidance": f"guidance {s.guidance:g}",
            "negative_prompt": f'negative prompt "{s.negative_prompt}"'
            if s.negative_prompt
            else "no negative prompt",
        }
        for key, value in self.call.items():
            words[key] = _call_words(key, value)
        words["quantize"] = (
            f"{denoiser} in 4-bit ({FOUR_BIT[presets]})"
            if self.quantize == "4bit"
            else f"{denoiser} unquantised"
        )
        return words


def _call_words(key: str, value: Any) -> str:
    if key == "use_dynamic_cfg":
        return "dynamic guidance " + ("on" if value else "off")
    if key == "max_sequence_length":
        return f"prompt cut at {value} tokens"
    return f"{key}={value!r}"


@dataclass(frozen=True)
class DiffusionPreset:
    name: str
    pipeline: str
    """The diffusers pipeline class."""
    model: str
    summary: str
    ours: ClipSettings
    """Popcorn's settings (the ``popcorn`` profile's)."""
    size_multiple: int
    frames_step: int
    """Valid frame counts are ``frames_step * k + 1``."""
    study: ClipSettings | None = None
    """The study's exact settings (the ``paper`` profile's); None for a model it did not use."""
    why: Mapping[str, str] = field(default_factory=dict)
    """Why Popcorn's settings differ from the study's, per setting that does."""
    denoiser: str = "transformer"
    """The component ``--quantize`` applies to."""
    portrait: bool = True
    """False when the model was trained at one landscape size only."""
    max_frames: int | None = None
    adapter: str | None = None
    """A motion adapter loaded into the pipeline: folder, .safetensors file, or REPO:FILE."""
    caches: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The ``--cache`` methods that work on this denoiser, each with what it needs to know of
    the model (see :func:`cache_settings`)."""

    @property
    def spec(self) -> VideoSpec:
        """Popcorn's clip settings."""
        return self.ours.spec

    def settings(self, presets: Presets) -> ClipSettings:
        return self.study if presets == "study" and self.study is not None else self.ours

    def differences(self) -> list[Difference]:
        """Where Popcorn's settings depart from the study's ([] for a model not in it)."""
        if self.study is None:
            return []
        study = self.study.described(self.denoiser, "study")
        ours = self.ours.described(self.denoiser, "popcorn")
        return differences(study, ours, self.why)


# The settings of the study's generation script, call by call: what it passed, and the
# pipeline's defaults for what it left out (written out, so a diffusers release that changes
# a default does not change the study's settings).
_LTX = ClipSettings(
    VideoSpec(704, 480, 161, 15, 50, 3.0, LTX_NEGATIVE), {"max_sequence_length": 128}
)
_HUNYUAN = VideoSpec(512, 320, 61, 15, 30, 6.0)  # guidance: the model's embedded guidance
_COGVIDEOX = VideoSpec(720, 480, 49, 8, 50, 6.0)
# AnimateDiff: 512x512 and 16 frames are the pipeline's defaults for an SD 1.5 base; the study
# wrote the frames with export_to_video's default rate, 10 fps.
_ANIMATEDIFF = VideoSpec(512, 512, 16, 10, 4, 1.0)
# Every transformer denoiser takes these two (AnimateDiff's UNet takes no cache at all).
_BLOCK_CACHES: dict[str, Mapping[str, Any]] = {"first-block": {}, "taylorseer": {}}

PRESETS: dict[str, DiffusionPreset] = {
    preset.name: preset
    for preset in (
        DiffusionPreset(
            name="ltx",
            pipeline="LTXPipeline",
            model="Lightricks/LTX-Video",
            summary="LTX-Video",
            ours=_LTX,
            study=_LTX,
            size_multiple=32,
            frames_step=8,
            caches=_BLOCK_CACHES,
        ),
        DiffusionPreset(
            name="hunyuan",
            pipeline="HunyuanVideoPipeline",
            model="hunyuanvideo-community/HunyuanVideo",
            summary="HunyuanVideo",
            ours=ClipSettings(_HUNYUAN),
            study=ClipSettings(_HUNYUAN, quantize="4bit"),
            why={
                "quantize": "unquantised weights lose nothing where the GPU has room (the 13B "
                "transformer takes about 26 GB in bf16); --quantize 4bit gives the study's "
                "memory use, as nf4"
            },
            size_multiple=16,
            frames_step=4,
            # Its guidance is embedded (one pass per step): FasterCache has no branch to skip.
            caches={
                **_BLOCK_CACHES,
                "faster": {"tensor_format": "BCFHW", "is_guidance_distilled": True},
            },
        ),
        DiffusionPreset(
            name="cogvideox",
            pipeline="CogVideoXPipeline",
            model="THUDM/CogVideoX-5b",
            summary="CogVideoX-5B",
            ours=ClipSettings(_COGVIDEOX, {"use_dynamic_cfg": True}),
            study=ClipSettings(_COGVIDEOX, {"use_dynamic_cfg": False}),
            why={
                "use_dynamic_cfg": "the model authors' reference script turns it on with the "
                "5B model's DPM scheduler"
            },
            size_multiple=16,
            # The VAE decodes latent frames in pairs after a first group of one: only an odd
            # latent count (8k+1 frames) comes back at the length asked for.
            frames_step=8,
            portrait=False,
            max_frames=49,
            caches={**_BLOCK_CACHES, "faster": {"tensor_format": "BFCHW"}},
        ),
        DiffusionPreset(
            name="animatediff",
            pipeline="AnimateDiffPipeline",
            model="emilianJR/epiCRealism",
            summary="AnimateDiff-Lightning 4-step on a Stable Diffusion 1.5 base",
            ours=ClipSettings(replace(_ANIMATEDIFF, fps=8)),
            study=ClipSettings(_ANIMATEDIFF),
            why={
                "fps": "16 frames at 8 fps last 2 s, nearer the 3-second clip a script "
                "describes than 1.6 s at 10 fps"
            },
            size_multiple=8,
            frames_step=1,
            denoiser="unet",
            max_frames=32,
            adapter=LIGHTNING_ADAPTER,
        ),
        DiffusionPreset(
            name="wan",
            pipeline="WanPipeline",
            model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            summary="Wan 2.1 T2V 1.3B (49 frames = 3 s at 16 fps)",
            ours=ClipSettings(VideoSpec(832, 480, 49, 16, 50, 5.0, WAN_NEGATIVE)),
            size_multiple=16,
            frames_step=4,
            caches=_BLOCK_CACHES,  # FasterCache wants both guidance branches in one batch
        ),
        DiffusionPreset(
            name="hunyuan15",
            pipeline="HunyuanVideo15Pipeline",
            model="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
            summary="HunyuanVideo-1.5 480p T2V (73 frames = 3 s at 24 fps, the rate of "
            "Tencent's reference script; guidance set through its guider)",
            ours=ClipSettings(VideoSpec(848, 480, 73, 24, 50, 6.0)),
            size_multiple=16,
            frames_step=4,
            # diffusers does not know the layout of its blocks (no first-block), and FasterCache
            # wants both guidance branches in one batch.
            caches={"taylorseer": {}},
        ),
    )
}


CACHES = ("none", "first-block", "faster", "taylorseer")
"""``--cache``: diffusers' own hooks that reuse the denoiser's work from one step to the next
(approximate: the output changes a little)."""
COMPILE_BACKEND = "inductor"
"""torch.compile's backend for ``--compile``."""


def cache_settings(method: str, preset: DiffusionPreset) -> dict[str, Any]:
    """The settings ``--cache method`` runs with on ``preset``, as plain values (recorded in the
    manifest and part of the clip's cache key): the ones diffusers' caching guide gives."""
    if method == "first-block":
        # diffusers' default; ParaAttention, where the method comes from, ships 0.035 to 0.06
        # for video transformers (higher skips more steps and loses more).
        return {"method": method, "threshold": 0.05}
    if method == "taylorseer":
        # A full pass every 5 steps, first-order predictions between, the first 10 steps full.
        return {
            "method": method,
            "cache_interval": 5,
            "max_order": 1,
            "disable_cache_before_step": 10,
        }
    if method == "faster":  # the guide's CogVideoX example; the tensor layout is the model's
        return {
            "method": method,
            "spatial_attention_block_skip_range": 2,
            "spatial_attention_timestep_skip_range": [-1, 681],
            "attention_weight": 0.3,
            "unconditional_batch_skip_range": 5,
            "unconditional_batch_timestep_skip_range": [-1, 781],
            **preset.caches.get(method, {}),
        }
    raise UsageError(f"--cache must be one of {', '.join(CACHES)}, not {method!r}")


def _cache_config(diffusers: Any, settings: Mapping[str, Any], pipe: Any, dtype: Any) -> Any:
    """diffusers' config object for :func:`cache_settings`' values."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    method = values.pop("method")
    if method == "first-block":
        return diffusers.FirstBlockCacheConfig(**values)
    if method == "taylorseer":
        return diffusers.TaylorSeerCacheConfig(taylor_factors_dtype=dtype, **values)
    weight = values.pop("attention_weight")
    return diffusers.FasterCacheConfig(
        attention_weight_callback=lambda _: weight,
        current_timestep_callback=lambda: pipe.current_timestep,
        **values,
    )


def _block_lists(denoiser: Any) -> list[Any]:
    """The denoiser's lists of transformer blocks (``transformer_blocks``, ``blocks``, ...)."""
    import torch

    return [
        child
        for name, child in denoiser.named_children()
        if name.endswith("blocks") and isinstance(child, torch.nn.ModuleList)
    ]


def compile_blocks(denoiser: Any, fullgraph: bool) -> int:
    """Compile the denoiser's repeated blocks one by one (regional compilation: the blocks
    share one compiled graph, so it compiles in seconds, not minutes, for nearly the speed of
    compiling the whole model); returns how many. diffusers names the blocks of most models
    (``compile_repeated_blocks``); for the others, the members of its block lists, or, in a
    UNet, its transformer blocks."""
    if getattr(denoiser, "_repeated_blocks", None):
        denoiser.compile_repeated_blocks(fullgraph=fullgraph, backend=COMPILE_BACKEND)
        names = set(denoiser._repeated_blocks)
        return sum(1 for m in denoiser.modules() if type(m).__name__ in names)
    blocks = [block for blocks in _block_lists(denoiser) for block in blocks] or [
        m for m in denoiser.modules() if type(m).__name__ == "BasicTransformerBlock"
    ]
    for block in blocks:
        block.compile(fullgraph=fullgraph, backend=COMPILE_BACKEND)
    return len(blocks)


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
    """``4bit`` or ``8bit`` weights for the denoiser, through bitsandbytes (CUDA only). The
    4-bit type follows the presets (:data:`FOUR_BIT`); with ``none``, the study's presets
    quantise where the study did (HunyuanVideo's transformer)."""
    unload: bool = False
    """Free each stage's models before the next stage loads (LLM, then clip, then cover)."""
    compile: bool = False
    """Compile the denoisers' repeated blocks with torch.compile (:func:`compile_blocks`)."""
    cache: str = "none"
    """A step cache on the clip's denoiser (:data:`CACHES`; covers run without)."""
    long_prompt: bool = False
    """Let the text encoder read a prompt longer than the preset's window where the pipeline
    allows it (:data:`LONG_PROMPT`, :data:`CHUNKED_CLIP`); elsewhere the cut is only
    reported."""

    def __post_init__(self) -> None:
        if self.offload not in ("none", "model", "sequential"):
            raise UsageError(f"--offload must be none, model or sequential, not {self.offload!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise UsageError("--media-dtype must be auto, float32, float16 or bfloat16")
        if self.quantize not in ("none", "4bit", "8bit"):
            raise UsageError(f"--quantize must be none, 4bit or 8bit, not {self.quantize!r}")
        if self.cache not in CACHES:
            raise UsageError(f"--cache must be one of {', '.join(CACHES)}, not {self.cache!r}")

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


_COMPILER = ("torch._dynamo", "torch._inductor")


def _check_local(source: str, what: str) -> None:
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():
        raise UsageError(f"{what} not found: {source!r}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


LONG_PROMPT = {"LTXPipeline": 512}
"""Pipelines whose text window (``max_sequence_length``) ``--long-prompt`` may raise, up to
this many tokens: LTX-Video's T5 attends over any length with its mask. Others are left as
their models were trained (CogVideoX's transformer takes exactly 226 text tokens; Wan reads
512 already)."""

CHUNKED_CLIP = frozenset({"StableDiffusionPipeline", "AnimateDiffPipeline"})
"""Pipelines with one CLIP text encoder, whose 77-token window (fixed by its position table)
``--long-prompt`` works around by encoding the prompt in windows of 75 tokens and handing the
UNet their embeddings side by side (its cross-attention takes any length):
:func:`chunked_clip_embeds`. SDXL's two encoders and pooled embedding are left as they are."""


def prompt_window(pipe: Any, prompt: str, kwargs: dict[str, Any]) -> dict[str, int] | None:
    """How much of ``prompt`` the pipeline's (first) text encoder reads with ``kwargs``:
    ``{"tokens": N, "read": W}`` when it is cut (N > W), None when it reads all of it."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None or not prompt:
        return None
    tokens = len(tokenizer(prompt, truncation=False)["input_ids"])
    params = inspect.signature(type(pipe).__call__).parameters
    if "max_sequence_length" in params:
        window = int(kwargs.get("max_sequence_length") or params["max_sequence_length"].default)
    else:
        window = int(tokenizer.model_max_length)
    return {"tokens": tokens, "read": window} if tokens > window else None


def chunked_clip_embeds(pipe: Any, prompt: str, negative: str) -> tuple[Any, Any, int]:
    """(prompt embeddings, negative prompt embeddings, windows) for a prompt longer than the
    CLIP encoder's window: each window of 75 tokens gets its own start and end tokens and is
    encoded alone; the windows' embeddings are laid end to end. The negative prompt is cut
    into as many windows (padded), so both have the shape classifier-free guidance needs."""
    import math

    import torch

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    window = int(tokenizer.model_max_length)
    body = window - 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [
        tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]
        for text in (prompt, negative)
    ]
    count = max(1, *(math.ceil(len(row) / body) for row in ids))

    def embed(row: list[int]) -> Any:
        pieces = []
        for i in range(count):
            piece = [tokenizer.bos_token_id, *row[i * body : (i + 1) * body]]
            piece.append(tokenizer.eos_token_id)
            pieces.append(piece + [pad] * (window - len(piece)))
        tokens = torch.tensor(pieces, device=pipe._execution_device)
        with torch.no_grad():
            hidden = encoder(tokens)[0]  # (windows, 77, width)
        return hidden.reshape(1, count * window, hidden.shape[-1])

    return embed(ids[0]), embed(ids[1]), count


class DiffusersModel:
    """Loading shared by the clip and cover generators: one pipeline per source and settings."""

    role = "video"
    pipeline_class = ""
    denoiser = "transformer"

    def __init__(
        self,
        name: str,
        model: str,
        memory: MemoryOptions | None,
        presets: Presets = "popcorn",
    ) -> None:
        self.name = name
        self.model = model
        self.memory = memory or MemoryOptions()
        self.presets = check_presets(presets)
        self.four_bit = FOUR_BIT[self.presets]
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

    def _key(self) -> tuple[Any, ...]:
        device, dtype = self.memory.resolve()
        return (
            self.role,
            self.pipeline_class,
            self.model,
            device,
            str(dtype),
            self.memory,
            self.four_bit,
        )

    def adopt(self, pipe: Any) -> None:
        """Use ``pipe``, already built and placed, instead of loading this backend's model (for
        benchmarks that build full-size models from their configs with random weights)."""
        with _lock:
            _pipelines[self._key()] = pipe

    def pipeline(self) -> Any:
        device, dtype = self.memory.resolve()
        key = self._key()
        with _lock:
            if key not in _pipelines:
                from popcorn.progress import logged_load

                with logged_load(f"{self.name} ({self.model}) on {device}"):
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
        self._accelerate(diffusers, pipe, dtype)
        return pipe

    def _accelerate(self, diffusers: Any, pipe: Any, dtype: Any) -> None:
        """``--compile``: the denoiser's repeated blocks (after any hooks, which they wrap)."""
        if self.memory.compile:
            # A hooked block breaks the graph by design: compile the pieces between hooks.
            hooked = self._cache() is not None
            compile_blocks(getattr(pipe, self.denoiser), fullgraph=not hooked)

    def _cache(self) -> dict[str, Any] | None:
        """The step cache this model runs with (None: none)."""
        return None

    def acceleration(self) -> dict[str, Any]:
        """``--compile``, ``--cache`` and ``--long-prompt`` as applied to this model: recorded
        with its output and part of its cache key; empty when none is on (keys made before stay
        valid)."""
        found: dict[str, Any] = {}
        if self.memory.compile:
            found["compile"] = True
        if self.memory.long_prompt and (
            self.pipeline_class in LONG_PROMPT or self.pipeline_class in CHUNKED_CLIP
        ):
            found["long_prompt"] = True
        cache = self._cache()
        if cache is not None:
            found["cache"] = cache
        return found

    def _quantization(self, diffusers: Any, dtype: Any) -> Any:
        if self.memory.quantize == "4bit":
            backend = "bitsandbytes_4bit"
            quant = {"load_in_4bit": True, "bnb_4bit_quant_type": self.four_bit}
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

    def fit_prompt(self, pipe: Any, prompt: str, kwargs: dict[str, Any]) -> dict[str, int]:
        """Check how much of ``prompt`` the text encoder reads; with ``--long-prompt``, raise
        the window where the pipeline allows (``kwargs`` changed in place). What is recorded
        with the output: ``{}``, or ``{"tokens": N, "read": W}`` with ``"long": True`` when the
        window was raised, or ``"long_limit": L`` when ``--long-prompt`` would read L; the
        media stage warns when W < N."""
        cut = prompt_window(pipe, prompt, kwargs)
        if cut is None:
            return {}
        if self.pipeline_class in CHUNKED_CLIP:
            if not self.memory.long_prompt:
                return {**cut, "long_limit": cut["tokens"]}  # what --long-prompt would read
            negative = kwargs.pop("negative_prompt", None) or ""
            del kwargs["prompt"]
            embeds, negatives, windows = chunked_clip_embeds(pipe, prompt, negative)
            kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"] = embeds, negatives
            return {**cut, "read": cut["tokens"], "long": True, "windows": windows}
        limit = LONG_PROMPT.get(self.pipeline_class)
        if not (limit and "max_sequence_length" in kwargs):
            return cut
        if not self.memory.long_prompt:
            return {**cut, "long_limit": limit}  # what --long-prompt would read
        kwargs["max_sequence_length"] = min(cut["tokens"], limit)
        return {"tokens": cut["tokens"], "read": kwargs["max_sequence_length"], "long": True}

    def progress_kwargs(self, what: str, steps: int) -> dict[str, Any]:
        """A step callback reporting to :mod:`popcorn.progress`, where someone is watching
        and the pipeline takes one (not part of the call's record: it changes no pixel)."""
        from popcorn.progress import step_callback

        callback = step_callback(what, steps)
        return {} if callback is None else self.accepted({"callback_on_step_end": callback})

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
        except Exception as err:
            # torch.compile's own failures (no C compiler, an unsupported operation): ours to
            # explain in one line; anything else is not.
            if not (self.memory.compile and type(err).__module__.startswith(_COMPILER)):
                raise
            raise PopcornError(
                f"--compile failed rendering {what}: {_first_line(err)} (run without --compile)"
            ) from None


class DiffusersVideo(DiffusersModel):
    preview = False

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
            _check_local(self.adapter, "motion adapter")
        memory = memory or MemoryOptions()
        self._asked = memory.quantize
        self.notes: list[str] = []
        """Warnings about the settings themselves, given with every fitted spec."""
        if memory.quantize == "none" and self.chosen.quantize != "none":
            lacking = _cannot_quantize(memory)
            if lacking is None:
                memory = replace(memory, quantize=self.chosen.quantize)
            else:
                self.notes.append(
                    f"{preset.name}: the study ran its {preset.denoiser} in 4-bit, which needs "
                    f"{lacking}: running it unquantised, unlike the study"
                )
        super().__init__(preset.name, model or preset.model, memory, presets)

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
            blocks = sum(len(blocks) for blocks in _block_lists(denoiser))
            if cache["method"] == "first-block" and blocks < 2:
                raise PopcornError(
                    f"--cache first-block needs a denoiser of two blocks or more; "
                    f"{self.model!r} has {blocks}"
                )
            try:
                denoiser.enable_cache(_cache_config(diffusers, cache, pipe, dtype))
            except (ValueError, TypeError, AttributeError) as err:
                raise PopcornError(
                    f"cannot apply --cache {cache['method']} to {self.name}: {_first_line(err)}"
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
        with self._out_of_memory(what):
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


def _cannot_quantize(memory: MemoryOptions) -> str | None:
    """What this machine lacks to quantise with bitsandbytes (None: nothing)."""
    try:
        device, _ = memory.resolve()
    except ImportError:
        return "torch with a CUDA GPU"
    if not device.startswith("cuda"):
        return "a CUDA GPU"
    from importlib.util import find_spec

    if find_spec("bitsandbytes") is None:
        return "the bitsandbytes package (pip install 'popcorn-video[quant]')"
    return None


def _set_guidance(pipe: Any, guidance: float) -> None:
    """Pipelines with a ``guider`` (HunyuanVideo-1.5) take guidance from it, not from a call
    argument: give it the spec's scale, so presets and --guidance mean the same everywhere."""
    guider = getattr(pipe, "guider", None)
    if guider is not None and "guidance_scale" not in inspect.signature(pipe.__call__).parameters:
        pipe.guider = guider.new(guidance_scale=guidance)


_SLICE = 16
"""Frames scaled at a time on the device: bounds the float32 copy a bf16 clip needs."""


def to_uint8(frames: Any) -> np.ndarray:
    """A pipeline's frames (or one image) in [0, 1] as uint8, channels last, on the host.

    A tensor (``output_type="pt"``: frames x channels x height x width, or channels x height x
    width, on the pipeline's device) is scaled, rounded and cast where it is, a slice of frames
    at a time, and copied to the host once, as bytes: a quarter of the float32 copy, with no
    conversion left for the CPU. Arrays and images are converted on the CPU. Both give the same
    bytes (float32 arithmetic, rounding half to even)."""
    import torch

    if not torch.is_tensor(frames):
        array = np.asarray(frames)
        if array.dtype == np.uint8:
            return array
        scaled = np.clip(array.astype(np.float32), 0.0, 1.0) * 255
        return np.asarray(scaled.round().astype(np.uint8))
    if frames.ndim == 3:
        return np.asarray(to_uint8(frames.unsqueeze(0))[0])
    count, channels, height, width = frames.shape
    out = torch.empty((count, height, width, channels), dtype=torch.uint8, device=frames.device)
    for start in range(0, count, _SLICE):
        part = frames[start : start + _SLICE].float().clamp(0.0, 1.0).mul(255).round()
        out[start : start + _SLICE] = part.permute(0, 2, 3, 1).to(torch.uint8)
    return np.asarray(out.cpu().numpy())


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
