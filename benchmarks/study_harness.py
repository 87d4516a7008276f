"""The study harness: its overhead per job, LLM concurrency, and the Ray executor.

Run: ``.venv/bin/python benchmarks/study_harness.py [--jobs 200] [--latency 0.2]``

The LLM is the loopback OpenAI-compatible server of ``benchmarks/concurrency.py`` (it waits
``--latency`` seconds and answers a valid script), standing in for a remote API, so what is
measured is the harness, not a model. Each study runs in a fresh folder.

1. Overhead: a study of 40 jobs (basic, the preview renderer for clip and cover, a small
   trained predictor with the test encoders) at concurrency 1; the harness's time is the wall
   time minus the time spent inside the stages (recorded per job in the ledger). Goal: < 5%.
2. Concurrency: ``--jobs`` script-only jobs at concurrency 8 against 1.
3. Executors: the study of part 1 with ``--executor ray`` (a local Ray cluster started here,
   start-up included and shown apart) against local, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import _toys  # noqa: F401  (tests/toys on the path)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from concurrency import serve
from popcorn.study.run import run_study
from popcorn.study.spec import load_study
from toys.predictor import build_toy_predictor


def study_file(folder: Path, queries: int, media: bool, predictor: Path | None, conc: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "q.txt").write_text("".join(f"Idea number {i} about cats\n" for i in range(queries)))
    generators = '"preview"' if media else '"none"'
    lines = [
        "[study]",
        'llms = ["openai:bench"]',
        f"videos = [{generators}]",
        f"covers = [{generators}]",
        f"concurrency = {conc}",
    ]
    if predictor is not None:
        # The toy predictor has Popcorn's recipe; the harness's cost does not depend on it.
        lines += [f'predictor = "{predictor}"', 'allow_judge = "popcorn"']
    lines += ["[queries]", 'q = "q.txt"']
    (folder / "study.toml").write_text("\n".join(lines) + "\n")
    return folder / "study.toml"


def timed(path: Path, executor: str = "local") -> tuple[float, float]:
    """(wall seconds, seconds inside stages summed over jobs)."""
    study = load_study(path)
    started = time.perf_counter()
    run_study(study, executor)
    wall = time.perf_counter() - started
    with sqlite3.connect(study.folder / "ledger.sqlite") as db:
        inside = sum(sum(json.loads(t).values()) for (t,) in db.execute("SELECT timings FROM jobs"))
    return wall, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    server, url = serve(args.latency)
    os.environ.update({"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "bench"})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        predictor = build_toy_predictor(root / "p", videos=100, epochs=5)

        path = study_file(root / "overhead", 40, True, predictor, 1)
        wall, inside = timed(path)
        overhead = wall - inside
        print("overhead, 40 jobs (script + preview media + score), concurrency 1:")
        print(f"  inside the stages (baseline) {inside:7.2f} s  ({inside / 40 * 1e3:.0f} ms/job)")
        print(
            f"  harness                      {overhead:7.2f} s  ({overhead / 40 * 1e3:.1f} ms/job)"
            f"  = {100 * overhead / inside:.1f}% of the jobs' own work"
        )

        walls = {}
        for conc in (1, 8):
            walls[conc], _ = timed(study_file(root / f"c{conc}", args.jobs, False, None, conc))
        print(f"{args.jobs} script jobs at {args.latency * 1e3:.0f} ms latency:")
        print(f"  concurrency 1 (baseline) {walls[1]:7.2f} s")
        print(f"  concurrency 8            {walls[8]:7.2f} s  ({walls[1] / walls[8]:.1f}x faster)")

        if not args.no_ray:
            import ray

            local, _ = timed(study_file(root / "local", 16, True, predictor, 8))
            t0 = time.perf_counter()
            ray.init(include_dashboard=False, log_to_driver=False)
            start_up = time.perf_counter() - t0
            on_ray, _ = timed(study_file(root / "ray", 16, True, predictor, 8), "ray")
            ray.shutdown()
            print("16 jobs (script + preview media + score), concurrency 8:")
            print(f"  local (baseline)   {local:7.2f} s")
            print(
                f"  ray, local cluster {on_ray:7.2f} s  ({on_ray / local:.1f}x the local time), "
                f"plus {start_up:.1f} s to start the cluster"
            )
    server.shutdown()


if __name__ == "__main__":
    main()
