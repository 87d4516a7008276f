"""One GPU check of everything Popcorn runs on a GPU, each figure a ratio measured in this run.

Run when a GPU is lent (one call, under 10 minutes on one GPU, offline)::

    python benchmarks/gpu_check.py --save gpu-check.json     [--quick] [--only NAME]

and put its figures in docs/benchmarks.md with the date and the GPU. Sections (``--only``):

- ``clip:PRESET`` / ``cover:PRESET``: popcorn's render (fit, call, frames to bytes, the file)
  against the bare diffusers call with the same arguments;
- ``hf``: ``hf:`` tokens/s at batch 16 against batch 1;
- ``vllm``: ``vllm:`` against ``hf:`` at batch 16 (skipped, saying so, without vllm);
- ``study``: loads per model in a study's media stage (2 jobs per generator: must be 1);
- ``speedups``: ``--cache first-block`` and ``--compile`` against a plain render.

Nothing can be downloaded where GPUs are lent, so every model is built from its published
configuration (/work/shared/GPU-CONFIGS.md) with random weights, directly on the GPU in bf16,
and handed to popcorn's backend in place of a loaded one (``backend.adopt(pipe)``); speed does
not depend on weight values. Tokenizers are small ones trained here: the models only need ids
inside their vocabulary. Each section has a time budget and stops starting work past it; a
section that fails prints one line and the others go on. ``--cpu-smoke`` runs the same code on
the CPU at toy sizes (a test runs it), so the script is known to work before a GPU is lent.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from gpu_models import QUERIES, SCRIPT, Build, build_clip, build_sd, lib, llm_folder, placed
from popcorn.llm.base import Decoding, LLMOptions
from popcorn.llm.registry import create_llm
from popcorn.media.diffusers.cover import DiffusersCover
from popcorn.media.diffusers.loader import MemoryOptions
from popcorn.media.diffusers.video import DiffusersVideo
from popcorn.media.presets import COVER_PRESETS, PRESETS
from popcorn.residency import MODELS
from popcorn.writer.prompts import basic_messages

CLIPS = ("animatediff", "ltx", "wan", "hunyuan", "cogvideox")
"""Cheapest first, so a tight budget skips the dearest."""
COVERS = ("sd15", "sdxl")
BUDGETS = {"study": 25.0, "cover": 40.0, "hf": 45.0, "vllm": 80.0, "speedups": 100.0, "clip": 240.0}
"""Seconds each section may start work in (a clip section: per preset), in the order they run;
the whole run also stops starting work past ``--budget``."""
H100_SECONDS = {"ltx": 11.2, "wan": 34.5, "cogvideox": 100, "hunyuan": 20.3, "animatediff": 0.64}
"""Bare calls at full steps on an H100 (GPU-CONFIGS.md): to skip what cannot fit the budget."""


@dataclass
class Run:
    """Where and how big this run is, and what it found."""

    device: str
    dtype: torch.dtype
    tiny: bool
    quick: bool
    steps: int
    tmp: Path
    budget: float = 540.0
    """Seconds after which no section starts."""
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def build(self) -> Build:
        return Build(self.device, self.dtype, self.tiny)

    @property
    def memory(self) -> MemoryOptions:
        return MemoryOptions(device=self.device, dtype=str(self.dtype).removeprefix("torch."))

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], Any]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def section(run: Run, name: str, work: Callable[[Run, float], dict[str, Any]]) -> None:
    """Run one section within its budget; a failure is one line, and the next section goes on."""
    start = time.perf_counter()
    deadline = min(start + BUDGETS[name.split(":")[0]], run.started + run.budget)
    found: dict[str, Any]
    try:
        found = work(run, deadline) if start < deadline else {"skipped": "past --budget"}
    except Exception as err:  # one section's failure must not cost the others' figures
        where = traceback.extract_tb(err.__traceback__)[-1]
        first = (str(err).strip().splitlines() or [""])[0][:200]
        found = {
            "error": f"{type(err).__name__}: {first} ({Path(where.filename).name}:{where.lineno})"
        }
    finally:
        free_memory()
    found["seconds"] = round(time.perf_counter() - start, 1)
    run.figures[name] = found
    shown = {k: v for k, v in found.items() if k not in ("seconds",)}
    print(f"{name:<16} {found['seconds']:>6.1f}s  {json.dumps(shown)}", flush=True)


def free_memory() -> None:
    MODELS.release()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- sections -------------------------------------------------------------------------------


def clip_spec(run: Run, backend: DiffusersVideo) -> Any:
    spec = backend.default_spec()
    if run.tiny:
        spec = replace(spec, width=32, height=32, frames=9)
    elif run.quick:
        spec = replace(
            spec, width=spec.width // 2, height=spec.height // 2, frames=spec.frames // 4
        )
    fitted, _ = backend.fit(
        replace(spec, steps=min(spec.steps, run.steps) if run.steps else spec.steps)
    )
    return fitted


def clip_section(name: str) -> Callable[[Run, float], dict[str, Any]]:
    def work(run: Run, deadline: float) -> dict[str, Any]:
        full = PRESETS[name].settings("popcorn").spec.steps
        if not run.tiny:
            steps = min(full, run.steps) if run.steps else full
            guess = 20 + 2.5 * H100_SECONDS[name] * steps / full
            if time.perf_counter() + guess > deadline:
                return {
                    "skipped": f"needs ~{guess:.0f}s, past the clip budget (--only clip:{name})"
                }
        pipe = placed(run.build, build_clip(run.build, name))
        backend = DiffusersVideo(PRESETS[name], model=f"gpu-check-{name}", memory=run.memory)
        backend.adopt(pipe)
        spec = clip_spec(run, backend)
        pipe(**{**backend.call_kwargs(SCRIPT, spec), "num_inference_steps": 1})  # warm-up
        bare = run.timed(lambda: pipe(**backend.call_kwargs(SCRIPT, spec)))
        target = run.tmp / f"{name}.mp4"
        ours = run.timed(lambda: backend.render(SCRIPT, spec, target))
        size = f"{spec.width}x{spec.height}x{spec.frames}, {spec.steps} steps"
        return {
            "bare_s": round(bare, 2),
            "render_s": round(ours, 2),
            "render_vs_bare": round(ours / bare, 3),
            "at": size,
        }

    return work


def cover_section(name: str) -> Callable[[Run, float], dict[str, Any]]:
    def work(run: Run, deadline: float) -> dict[str, Any]:
        preset = COVER_PRESETS[name]
        pipe = placed(run.build, build_sd(run.build, preset.pipeline))
        steps = 2 if run.tiny else (min(run.steps, 30) if run.steps else None)
        side = 32 if run.tiny else None
        backend = DiffusersCover(
            preset, model=f"gpu-check-{name}", memory=run.memory, side=side, steps=steps
        )
        backend.adopt(pipe)
        w = h = side or preset.native
        pipe(**{**backend.call_kwargs(SCRIPT, w, h, 42), "num_inference_steps": 1})  # warm-up
        bare = run.timed(lambda: pipe(**backend.call_kwargs(SCRIPT, w, h, 42)))
        ours = run.timed(lambda: backend.render(SCRIPT, w, h, run.tmp / f"{name}.png"))
        return {
            "bare_s": round(bare, 3),
            "render_s": round(ours, 3),
            "render_vs_bare": round(ours / bare, 3),
            "steps": backend.steps,
        }

    return work


def tokens_per_second(run: Run, spec: str, options: LLMOptions, count: int) -> float:
    llm = create_llm(spec, options)
    decoding = Decoding(max_tokens=16 if run.tiny else 128)
    requests = [
        (basic_messages(QUERIES[i % len(QUERIES)]), decoding.with_seed(i), None)
        for i in range(count)
    ]
    llm.complete(*requests[0])  # loads the model, warms the kernels
    answers: list[Any] = []
    seconds = run.timed(lambda: answers.extend(llm.complete_batch(requests)))  # type: ignore[attr-defined]
    MODELS.release("llm")
    return sum(a.completion_tokens or 0 for a in answers) / seconds


def hf_section(run: Run, deadline: float) -> dict[str, Any]:
    folder, dtype = llm_folder(run.build, run.tmp), str(run.dtype).removeprefix("torch.")
    rates = {}
    for size in (1, 16):
        options = LLMOptions(device_map=run.device, dtype=dtype, batch_size=size)
        # Batch 1 on 4 requests: tokens/s is comparable, and 16 one by one would take minutes.
        rates[size] = tokens_per_second(run, f"hf:{folder}", options, size if size > 1 else 4)
    run.figures["_hf16"] = rates[16]
    return {
        "batch1_tokens_s": round(rates[1], 1),
        "batch16_tokens_s": round(rates[16], 1),
        "batch16_vs_batch1": round(rates[16] / rates[1], 2),
    }


def vllm_section(run: Run, deadline: float) -> dict[str, Any]:
    if find_spec("vllm") is None:
        return {"skipped": "vllm is not installed (pip install 'popcorn-video[vllm]')"}
    if run.device != "cuda":
        return {"skipped": "vllm runs on a GPU only"}
    folder = llm_folder(run.build, run.tmp)
    hf16 = run.figures.get("_hf16") or tokens_per_second(
        run, f"hf:{folder}", LLMOptions(device_map="cuda", dtype="bfloat16", batch_size=16), 16
    )
    rate = tokens_per_second(run, f"vllm:{folder}", LLMOptions(dtype="bfloat16"), 16)
    return {
        "vllm_tokens_s": round(rate, 1),
        "hf_batch16_tokens_s": round(hf16, 1),
        "vllm_vs_hf": round(rate / hf16, 2),
    }


def study_section(run: Run, deadline: float) -> dict[str, Any]:
    """A study of 2 queries x 2 seeds with one clip and one cover generator (toy models saved
    and loaded back, on this device): 4 media jobs, each model loaded once in the stage."""
    from popcorn.study.run import run_study
    from popcorn.study.spec import load_study

    toy = Build(run.device, run.dtype, tiny=True)
    folders = {"ltx": run.tmp / "toy-ltx", "sd15": run.tmp / "toy-sd15"}
    build_clip(toy, "ltx").save_pretrained(folders["ltx"])
    build_sd(toy, "StableDiffusionPipeline").save_pretrained(folders["sd15"])
    found: dict[str, Any] = {"media_jobs": 4}
    for unload in (False, True):  # models kept for the process, and let go after each stage
        root = run.tmp / f"study-{'unload' if unload else 'keep'}"
        root.mkdir()
        (root / "queries.csv").write_text(
            "prompt,type\nA dog surfing at sunset,concrete\n"
            "Why minimalism makes people happier,abstract\n"
        )
        (root / "study.toml").write_text(
            f'[study]\nname = "gpu-check"\nprofile = "paper"\nllms = ["mock:gpu-check"]\n'
            f'modes = ["basic"]\nvideos = ["ltx"]\ncovers = ["sd15"]\nseeds = [1, 2]\n\n'
            f'[queries]\ncheck = "queries.csv"\n\n[media]\nvideo_model = "{folders["ltx"]}"\n'
            f'cover_model = "{folders["sd15"]}"\nwidth = 32\nheight = 32\nframes = 9\n'
            f"steps = 2\ncover_size = 32\ncover_steps = 2\nunload_stages = {str(unload).lower()}\n"
        )
        free_memory()
        MODELS.reset_counts()
        summary = run_study(load_study(root / "study.toml"))
        if summary.ran["media"] != 4:
            raise RuntimeError(
                f"the study's media stage ran {summary.ran['media']} of 4 jobs: "
                f"{summary.first_error}"
            )
        loads = {role: MODELS.loads[role] for role in ("video", "cover")}
        releases = {role: MODELS.releases[role] for role in ("video", "cover")}
        tag = "unload_stages" if unload else "kept"
        if any(count != 1 for count in loads.values()):
            raise RuntimeError(f"{tag}: loads per model in a media stage of 4 jobs: {loads}")
        found[tag] = {"loads_per_model": loads, "releases_per_model": releases}
    return found


def speedups_section(run: Run, deadline: float) -> dict[str, Any]:
    """``--cache first-block`` and ``--compile`` on LTX against the plain render, one pipeline."""
    diffusers = lib("diffusers")

    name = "ltx"
    pipe = placed(run.build, build_clip(run.build, name))
    found: dict[str, Any] = {}

    def render(memory: MemoryOptions, tag: str) -> float:
        backend = DiffusersVideo(PRESETS[name], model=f"gpu-check-{name}", memory=memory)
        # What loading would do after from_pretrained: the cache hooks, the compiled blocks.
        backend._accelerate(diffusers, pipe, run.dtype)
        backend.adopt(pipe)
        spec = clip_spec(run, backend)
        if tag == "plain":  # first call on a fresh pipeline: kernels chosen, memory allocated
            pipe(**{**backend.call_kwargs(SCRIPT, spec), "num_inference_steps": 1})
        if memory.compile:  # the first call compiles: reported apart from the speed
            found["compile_first_call_s"] = round(
                run.timed(lambda: backend.render(SCRIPT, spec, run.tmp / "warm.mp4")), 1
            )
        return run.timed(lambda: backend.render(SCRIPT, spec, run.tmp / f"{tag}.mp4"))

    plain = render(run.memory, "plain")
    found["plain_s"] = round(plain, 2)
    cached = render(replace(run.memory, cache="first-block"), "cache")
    pipe.transformer.disable_cache()
    found["cache_first_block_speedup"] = round(plain / cached, 2)
    if run.device != "cuda":
        found["compile"] = "skipped on the CPU (a GPU figure)"
    elif time.perf_counter() + 45 > deadline:
        found["compile"] = "skipped: past the budget"
    else:
        found["compile_speedup"] = round(plain / render(replace(run.memory, compile=True), "c"), 2)
    return found


def sections() -> dict[str, Callable[[Run, float], dict[str, Any]]]:
    found: dict[str, Callable[[Run, float], dict[str, Any]]] = {}
    found["study"] = study_section  # first: the cheapest, and what residency must prove
    found.update({f"cover:{n}": cover_section(n) for n in COVERS})
    found.update(hf=hf_section, vllm=vllm_section, speedups=speedups_section)
    found.update({f"clip:{n}": clip_section(n) for n in CLIPS})
    return found


def quiet() -> None:
    """Only this script's lines: no progress bars, no advice about loading with from_pretrained."""
    diffusers, transformers = lib("diffusers"), lib("transformers")
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _out_of_time(signum: int, frame: Any) -> None:
    raise TimeoutError("stopped: past --budget by 45 s")


def save(run: Run, path: Path) -> None:
    figures = {k: v for k, v in run.figures.items() if not k.startswith("_hf")}
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half size, a quarter of the frames")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"one section, repeatable: {', '.join(sections())}, or clip / cover",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=8,
        help="denoising steps at most (0: each preset's own) [default: 8]",
    )
    parser.add_argument(
        "--budget", type=float, default=540.0, help="seconds after which no section starts"
    )
    parser.add_argument("--save", type=Path, metavar="FILE", help="write the figures as JSON")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="toy sizes on the CPU: checks the script, measures nothing",
    )
    args = parser.parse_args(argv)
    quiet()
    chosen = sections()
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only or k.split(":")[0] in args.only}
        if not chosen:
            parser.error(f"--only takes {', '.join(sections())}, clip or cover")
    if args.cpu_smoke:
        device, dtype = "cpu", torch.float32
        torch.set_num_threads(1)  # steadier on a shared CPU
    elif torch.cuda.is_available():
        device, dtype = "cuda", torch.bfloat16
    else:
        print("no CUDA GPU: run with --cpu-smoke to check the script on the CPU")
        return 2
    steps = 2 if args.cpu_smoke else (2 if args.quick else args.steps)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (toy sizes)"
    print(f"gpu_check on {where}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    # A section stuck past the budget (an engine that never starts) is stopped, as a failure,
    # so the call ends inside its 10 minutes with every other figure.
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(int(args.budget) + 45)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(device, dtype, args.cpu_smoke, args.quick, steps, Path(tmp), args.budget)
        run.figures["_run"] = {
            "device": where,
            "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__,
            "diffusers": lib("diffusers").__version__,
            "quick": args.quick,
            "steps": steps,
        }
        for name, work in chosen.items():
            section(run, name, work)
            if args.save:  # after each section: a killed run still leaves what it measured
                save(run, args.save)
    signal.alarm(0)
    run.figures.pop("_hf16", None)
    run.figures["_run"]["seconds"] = round(time.perf_counter() - run.started, 1)
    print(f"total {run.figures['_run']['seconds']}s")
    if args.save:
        save(run, args.save)
    failed = [k for k, v in run.figures.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
