"""Start-up cost of ``popcorn --help`` against a bare ``python -c pass``.

Run: ``.venv/bin/python benchmarks/startup.py [--runs 10]``

Both commands run as fresh processes with the same interpreter, interleaved, after one warm-up
each. Also checks that the CLI's import path pulls in none of the heavy libraries.
Goal: ``popcorn --help`` under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "llama_cpp", "sentence_transformers", "numpy")


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    popcorn = str(Path(sys.executable).with_name("popcorn"))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "popcorn --help": [popcorn, "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():
        wall(cmd)  # warm the file cache and the bytecode
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd))

    print(f"{'command':<16} {'median ms':>10} {'p90 ms':>8}")
    for name, samples in times.items():
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        print(f"{name:<16} {statistics.median(samples) * 1000:>10.1f} {p90 * 1000:>8.1f}")
    base = statistics.median(times["python -c pass"])
    ours = statistics.median(times["popcorn --help"])
    print(
        f"popcorn --help: {ours * 1000:.0f} ms, {(ours - base) * 1000:.0f} ms over bare python "
        f"({ours / base:.1f}x); goal < 500 ms: {'met' if ours < 0.5 else 'NOT met'}"
    )

    probe = (
        "import sys\nfrom popcorn.cli.main import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    heavy = out[out.rindex("HEAVY:") + len("HEAVY:") :].strip()
    print(f"heavy modules imported by --help: {heavy or 'none'}")


if __name__ == "__main__":
    main()
