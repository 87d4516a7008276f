"""Opt-in speed-ups of a loaded pipeline: ``--compile`` (torch.compile of the denoiser's
repeated blocks) and ``--cache`` (diffusers' hooks that reuse the denoiser's work from one step
to the next). Both are recorded with the output and enter its media key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from popcorn.errors import UsageError
from popcorn.media.presets import CACHES, DiffusionPreset

COMPILE_BACKEND = "inductor"
"""torch.compile's backend for ``--compile``."""
COMPILER = ("torch._dynamo", "torch._inductor")
"""The modules whose exceptions are torch.compile's own failures."""


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


def cache_config(diffusers: Any, settings: Mapping[str, Any], pipe: Any, dtype: Any) -> Any:
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


def block_lists(denoiser: Any) -> list[Any]:
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
    blocks = [block for blocks in block_lists(denoiser) for block in blocks] or [
        m for m in denoiser.modules() if type(m).__name__ == "BasicTransformerBlock"
    ]
    for block in blocks:
        block.compile(fullgraph=fullgraph, backend=COMPILE_BACKEND)
    return len(blocks)


def recorded(compile: bool, long_prompt: bool, cache: Mapping[str, Any] | None) -> dict[str, Any]:
    """``--compile``, ``--cache`` and ``--long-prompt`` as applied to a model (``long_prompt``:
    on and honoured by its pipeline): recorded with its output and part of its cache key;
    empty when none is on (keys made before stay valid)."""
    found: dict[str, Any] = {}
    if compile:
        found["compile"] = True
    if long_prompt:
        found["long_prompt"] = True
    if cache is not None:
        found["cache"] = dict(cache)
    return found
