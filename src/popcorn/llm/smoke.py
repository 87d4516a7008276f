"""Set-up's smoke test of the embedded LLM: load SmolLM2 and generate a few tokens.

``python -m popcorn.llm.smoke`` exits 0 and prints the tokens on success. scripts/setup.sh runs
it in a child process, so that a llama.cpp build this CPU cannot run (SIGILL) is caught at
set-up, with the fix, rather than by the user's first ``popcorn generate``.
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    from popcorn.errors import PopcornError
    from popcorn.llm.llamacpp import load_llama, smollm2_path

    try:
        model = load_llama(smollm2_path(), n_ctx=512, n_gpu_layers=0)
    except PopcornError as err:
        print(f"smoke test: {err}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    out = model.create_completion("Popcorn is", max_tokens=8, temperature=0.0, seed=42)
    seconds = time.perf_counter() - started
    tokens = out["usage"]["completion_tokens"]
    if tokens < 1:
        print("smoke test: the embedded model generated no token", file=sys.stderr)
        return 1
    text = " ".join(out["choices"][0]["text"].split())
    print(f"embedded LLM ok: {tokens} tokens in {seconds:.2f} s: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
