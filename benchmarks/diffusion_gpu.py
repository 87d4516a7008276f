"""Full-size diffusion presets on a GPU: wall time and peak memory per clip, with and without
the memory options, against a bare diffusers call in the same run.

Run (needs a CUDA GPU): ``python benchmarks/diffusion_gpu.py [--preset ltx] [--steps 50]``

Nothing can be downloaded where GPUs are lent to us, so each pipeline is built from its
published configuration (the diffusers classes' defaults are LTX-Video 0.9's; the text encoder
is T5-XXL's encoder) with random weights, directly on the GPU in bf16; speed and memory do not
depend on the weight values. The built pipeline is handed to popcorn's backend in place of a
loaded one (loading itself is tested on toy models, not timed here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import _toys  # noqa: F401  (tests/toys on the path)
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.diffusers.video import DiffusersVideo
from popcorn.media.presets import PRESETS
from popcorn.script import Script

SCRIPT = Script(
    "Kitten Shreds",
    "A kitten on a skateboard in a sunny park",
    "Close-up of a fluffy kitten rolling down a skate ramp at golden hour, slow "
    "motion, handheld camera, shallow depth of field",
)


def build_ltx() -> Any:
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    from toys.video import t5_tokenizer

    tokenizer = t5_tokenizer()
    t5_xxl = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        pipe = LTXPipeline(
            transformer=LTXVideoTransformer3DModel(),
            vae=AutoencoderKLLTXVideo(),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=T5EncoderModel(t5_xxl),
            tokenizer=tokenizer,
        )
    torch.set_default_dtype(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, float]:
    """Wall seconds and peak GPU memory (GiB) of ``fn(*args, **kwargs)``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn(*args, **kwargs)
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["ltx"], default="ltx")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures the GPU path")
    preset = PRESETS[args.preset]
    pipe = build_ltx()
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, memory in (
            ("popcorn", MemoryOptions(device="cuda", dtype="bfloat16")),
            (
                "popcorn + vae tiling",
                MemoryOptions(device="cuda", dtype="bfloat16", vae_tiling=True),
            ),
            (
                "popcorn + model offload",
                MemoryOptions(device="cuda", dtype="bfloat16", offload="model"),
            ),
        ):
            backend = DiffusersVideo(preset, model="built-in-memory", memory=memory)
            if memory.offload == "model":
                pipe.enable_model_cpu_offload()
            if memory.vae_tiling:
                pipe.vae.enable_tiling()
            else:
                pipe.vae.disable_tiling()
            backend.adopt(pipe)  # the built pipeline stands in for a loaded one
            spec = (
                preset.spec
                if args.steps is None
                else preset.spec.__class__(**{**preset.spec.to_dict(), "steps": args.steps})
            )
            if variant == "popcorn":  # the bare call first, with the very same arguments
                pipe(**{**backend.call_kwargs(SCRIPT, spec), "num_inference_steps": 2})  # warm-up
                results["bare diffusers call"] = timed(pipe, **backend.call_kwargs(SCRIPT, spec))
            target = Path(tmp) / f"{variant.replace(' ', '_')}.mp4"
            results[variant] = timed(backend.render, SCRIPT, spec, target)
    spec = preset.spec
    steps = args.steps or spec.steps
    print(
        f"{torch.cuda.get_device_name()}: {preset.name} at {spec.width}x{spec.height}, "
        f"{spec.frames} frames, {steps} steps, bf16, random weights"
    )
    base = results["bare diffusers call"][0]
    print(f"{'variant':<26} {'wall s':>8} {'peak GiB':>9} {'vs bare':>8}")
    for name, (seconds, peak) in results.items():
        print(f"{name:<26} {seconds:>8.1f} {peak:>9.1f} {seconds / base:>7.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
