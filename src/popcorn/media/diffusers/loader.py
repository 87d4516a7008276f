"""Loading a diffusers pipeline: where and how it runs (:class:`MemoryOptions`), from a folder or
the hub, quantised or not, placed or offloaded, held in :data:`popcorn.residency.MODELS` under
the generator's role (``video`` or ``cover``) so that a process loads each once."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from popcorn import hub
from popcorn.errors import MissingDependencyError, PopcornError, UsageError
from popcorn.media.base import CHECK, PREPARE
from popcorn.media.diffusers.acceleration import COMPILER, compile_blocks, recorded
from popcorn.media.diffusers.prompts import fit_prompt, reads_long_prompts
from popcorn.media.presets import (
    CACHES,
    COVER_PRESETS,
    FOUR_BIT,
    PRESETS,
    Presets,
    check_presets,
)
from popcorn.residency import MODELS


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
    4-bit type follows the presets (:data:`~popcorn.media.presets.FOUR_BIT`); with ``none``,
    the study's presets quantise where the study did (HunyuanVideo's transformer)."""
    unload: bool = False
    """Free each stage's models before the next stage loads (LLM, then clip, then cover)."""
    compile: bool = False
    """Compile the denoisers' repeated blocks with torch.compile
    (:func:`~popcorn.media.diffusers.acceleration.compile_blocks`)."""
    cache: str = "none"
    """A step cache on the clip's denoiser (:data:`~popcorn.media.presets.CACHES`; covers run
    without)."""
    long_prompt: bool = False
    """Let the text encoder read a prompt longer than the preset's window where the pipeline
    allows it (:mod:`popcorn.media.diffusers.prompts`); elsewhere the cut is only reported."""

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


def check_local(source: str, what: str) -> None:
    """A ``UsageError`` when ``source`` is written as a path (``.``, ``/``, ``~``) and is not
    there: it would otherwise be taken for a hub id and fail later, less clearly."""
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():
        raise UsageError(f"{what} not found: {source!r}")


def first_line(err: BaseException) -> str:
    """An exception's message in one line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def cannot_quantize(memory: MemoryOptions) -> str | None:
    """What this machine lacks to quantise with bitsandbytes (None: nothing)."""
    try:
        device, _ = memory.resolve()
    except ImportError:
        return "torch with a CUDA GPU"
    if not device.startswith("cuda"):
        return "a CUDA GPU"
    if find_spec("bitsandbytes") is None:
        return "the bitsandbytes package (pip install 'popcorn-video[quant]')"
    return None


def study_precision(
    device: str, dtype: str, asked: str, preset_dtype: str | None, text_encoder_fp8: bool
) -> tuple[str, bool]:
    """(the pipeline's dtype name, whether its text encoder is stored in fp8) on ``device``.

    ``dtype`` is what ``--media-dtype`` resolved to and ``asked`` what the user gave: a preset's
    own dtype (HunyuanVideo's fp16 under the study's presets) replaces only ``auto``, and only
    on CUDA, where the study ran; fp8 storage is applied on CUDA alone for the same reason."""
    on_cuda = device.startswith("cuda")
    if on_cuda and asked == "auto" and preset_dtype is not None:
        dtype = preset_dtype
    return dtype, on_cuda and text_encoder_fp8


class DiffusersModel:
    """What the clip and cover generators share: one pipeline per source and settings, loaded
    through :data:`~popcorn.residency.MODELS` on first use, and the pipeline call's
    housekeeping (accepted arguments, prompt window, progress, out-of-memory advice)."""

    role = "video"
    pipeline_class = ""
    denoiser = "transformer"
    capabilities = frozenset({PREPARE, CHECK})
    preset_dtype: str | None = None
    """The preset's pipeline dtype on CUDA (:func:`study_precision`)."""
    text_encoder_fp8 = False
    """Whether the preset stores the text encoder in fp8 on CUDA (:func:`study_precision`)."""

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
        check_local(self.model, f"{self.role} model folder")

    def check(self) -> None:
        """Fail before anything loads on settings this machine cannot run, or a missing
        package (named with its extra). A model that is neither cached nor downloadable is
        found when it loads, with one quick look at the hub (:func:`popcorn.hub.load`)."""
        for module in ("torch", "diffusers"):
            if find_spec(module) is None:
                raise MissingDependencyError(
                    module, "diffusion", f"The {self.role} generator {self.name!r}"
                )
        if self.memory.quantize != "none":
            device, _ = self.memory.resolve()
            if not device.startswith("cuda"):
                raise UsageError(f"--quantize {self.memory.quantize} needs a CUDA GPU")
            if find_spec("bitsandbytes") is None:
                raise MissingDependencyError("bitsandbytes", "quant", "--quantize")

    def pull_name(self) -> str:
        """What ``popcorn pull`` takes to fetch this model: the preset's name for the preset's
        own model, the hub id for another."""
        presets = PRESETS if self.role == "video" else COVER_PRESETS
        preset = presets.get(self.name)
        return self.name if preset is not None and preset.model == self.model else self.model

    def require_model(self) -> None:
        """A one-line error naming ``popcorn pull`` unless the model is a folder, cached, or
        downloadable; called before diffusers is imported (which takes seconds and prints
        notices of its own), so an absent model is the only thing said. A pipeline already
        held (loaded, or adopted by a benchmark) needs nothing."""
        if self._is_folder() or self._key() in MODELS.loaded(self.role):
            return
        hub.check_available(self.model, "model_index.json", self.pull_name())

    def _is_folder(self) -> bool:
        return Path(self.model).expanduser().is_dir()

    def resolve(self) -> tuple[str, Any, bool]:
        """(device, torch dtype, fp8 text encoder) this pipeline loads with on this machine."""
        import torch

        device, dtype = self.memory.resolve()
        name, fp8 = study_precision(
            device,
            str(dtype).removeprefix("torch."),
            self.memory.dtype,
            self.preset_dtype,
            self.text_encoder_fp8,
        )
        return device, getattr(torch, name), fp8

    def _key(self) -> tuple[Any, ...]:
        """What tells two loaded pipelines apart (the role is the residency's own)."""
        device, dtype, fp8 = self.resolve()
        key = (self.pipeline_class, self.model, device, str(dtype), self.memory, self.four_bit)
        return (*key, "fp8-text-encoder") if fp8 else key

    def adopt(self, pipe: Any) -> None:
        """Use ``pipe``, already built and placed, instead of loading this backend's model (for
        benchmarks that build full-size models from their configs with random weights)."""
        MODELS.adopt(self.role, self._key(), pipe)

    def pipeline(self) -> Any:
        """The loaded pipeline: loaded the first time any generator of these settings asks."""
        device, dtype, fp8 = self.resolve()
        return MODELS.get(
            self.role,
            self._key(),
            lambda: self._load(device, dtype, fp8),
            what=f"{self.name} ({self.model}) on {device}",
        )

    def _load(self, device: str, dtype: Any, fp8_text_encoder: bool = False) -> Any:
        self.check()
        self.require_model()
        try:
            import diffusers
            import torch
        except ImportError:
            raise MissingDependencyError("diffusers", "diffusion", "Diffusion models") from None
        kwargs: dict[str, Any] = {"dtype": dtype}
        if self.memory.quantize != "none":
            kwargs["quantization_config"] = self._quantization(diffusers, dtype)
        try:
            if self._is_folder():
                pipe = self._from_pretrained(diffusers, kwargs)
            else:  # a hub id: from the cache when it is there, failing fast when the hub is not
                pipe = hub.load(
                    self.model,
                    "model_index.json",
                    self.pull_name(),
                    lambda local: self._from_pretrained(
                        diffusers, {**kwargs, "local_files_only": local}
                    ),
                )
        except (OSError, ValueError) as err:
            raise PopcornError(
                f"cannot load {self.name} from {self.model!r}: {first_line(err)} "
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
                if name != self.denoiser and isinstance(part, torch.nn.Module):
                    part.to(device)
        if fp8_text_encoder:
            _store_in_fp8(pipe.text_encoder, dtype)
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
        with its output and part of its cache key; empty when none is on."""
        long_prompt = self.memory.long_prompt and reads_long_prompts(self.pipeline_class)
        return recorded(self.memory.compile, long_prompt, self._cache())

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

    def fit_prompt(self, pipe: Any, prompt: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """:func:`~popcorn.media.diffusers.prompts.fit_prompt` with this model's settings."""
        return fit_prompt(pipe, self.pipeline_class, self.memory.long_prompt, prompt, kwargs)

    def progress_kwargs(self, what: str, steps: int) -> dict[str, Any]:
        """A step callback reporting to :mod:`popcorn.progress`, where someone is watching
        and the pipeline takes one (not part of the call's record: it changes no pixel)."""
        from popcorn.progress import step_callback

        callback = step_callback(what, steps)
        return {} if callback is None else self.accepted({"callback_on_step_end": callback})

    @contextmanager
    def out_of_memory(self, what: str) -> Iterator[None]:
        """Turn the GPU running out of memory, or ``--compile`` failing, into one line that
        says what to try."""
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
            if not (self.memory.compile and type(err).__module__.startswith(COMPILER)):
                raise
            raise PopcornError(
                f"--compile failed rendering {what}: {first_line(err)} (run without --compile)"
            ) from None


def _store_in_fp8(module: Any, compute: Any) -> None:
    """Keep ``module``'s weights in fp8 (e4m3), each layer cast up to ``compute`` as it runs
    (diffusers' layerwise casting, which takes any torch module, transformers' included)."""
    import torch
    from diffusers.hooks.layerwise_casting import apply_layerwise_casting

    apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
