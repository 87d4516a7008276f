"""The PE leak: PE minus basic when references may come from the predictor's bank, and when
they come from its test split only.

Run: ``.venv/bin/python benchmarks/pe_leak.py [--videos 240] [--queries 24] [--refs 5]``

A generated corpus of short videos (popcorn.testing.synthetic_media) trains a toy predictor
whose retrieval bank is that corpus's training split, and the same corpus is PE's pool. The LLM
is a stand-in that copies its most commented reference (a near-copy title, the reference's
caption as its video prompt; popcorn.testing.pe_leak.EchoLLM), the worst case for the leak:
scoring then retrieves the copied video, with its label, into the copy's own score. Three
studies of basic against ``pe:N``, same queries, same predictor:

- overlapping: popcorn profile, PE over the whole corpus (``study run`` refuses it; run here
  with ``allow_overlap`` to measure what it would do);
- test split: popcorn profile, PE over a corpus holding only the predictor's test split (what
  ``corpus import --only-ids`` makes);
- paper: the paper profile, whose pool is the test split of the whole corpus.

For each: the paired mean of PE - basic over queries with its 95% bootstrap interval, and the
share of PE clips whose scoring retrieved one of the references their LLM was shown.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

from popcorn.study.run import ReferenceLeakError, run_study
from popcorn.study.spec import load_study
from popcorn.testing.pe_leak import (
    build_leak_setup,
    pe_minus_basic,
    register_echo,
    write_leak_study,
)

POOLS = (
    ("overlapping", "whole corpus (overlaps the bank)"),
    ("test-split", "test split (corpus import --only-ids)"),
    ("paper", "paper profile (test-split pool)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=240)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    register_echo()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        setup = build_leak_setup(root / "data", args.videos, args.seed, args.queries)
        print(
            f"{args.videos} generated videos: bank (train + val) {len(setup.bank)}, "
            f"test split {len(setup.test)}; {args.queries} queries; basic vs pe:{args.refs}; "
            f"set up in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        lines = []
        for pool, label in POOLS:
            path = write_leak_study(root / pool, setup, pool, f'"basic", "pe:{args.refs}"')
            study = load_study(path)
            try:
                run_study(study)
                refused = "no"
            except ReferenceLeakError:
                refused = "yes"
                run_study(study, allow_overlap=True)
            figures = pe_minus_basic(path)
            lines.append(
                f"| {label} | {refused} | {figures.pairs} | {figures.pe_minus_basic:+.3f} "
                f"[{figures.low:+.3f}, {figures.high:+.3f}] | {100 * figures.leaked:.0f}% "
                f"| {figures.failed} |"
            )
    print(
        "| reference pool | `study run` refuses | pairs | PE - basic, mean [95% CI] "
        "| PE clips whose score retrieved their own reference | failed jobs |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
