"""The PE leak, measured directly: a study's clips scored again with the references their LLM
was shown taken out of the predictor's retrieval bank.

Run: ``.venv/bin/python benchmarks/pe_leak.py [--videos 240] [--queries 24] [--refs 5]
[--seed 11]``

A generated corpus of short videos (tests/toys/corpus.py) trains a toy predictor whose
retrieval bank is that corpus's training split, and the same corpus is PE's pool, so PE may show
the LLM videos of the bank (``study run`` refuses such a study; it runs here with
``allow_overlap``, to measure what it would do). The LLM is a stand-in that copies its most
commented reference (a near-copy title, the reference's caption as its video prompt: the built-in
``mock:`` LLM), the worst case for the leak: scoring then retrieves the copied video, with its
label, into the copy's own score. One study, basic against ``pe:N``, same queries, one seed.

The ablation holds every script and clip fixed and changes only the bank. Each PE clip is scored
twice by the same predictor: with the whole bank (as the study scored it) and with the
references its LLM was shown removed; each basic clip the same, with the references of its
query's PE run removed (the control: taking those videos out moves a basic clip's neighbours
too, with no copy behind it). The change is the score without them minus the score with them,
averaged over clips with a 95% bootstrap interval; PE's change less basic's is what the shown
references added to PE's scores.

Every source of chance is pinned, so two runs at one seed print the same figures: the corpus
and the queries come from seeded generators, the toy tokenizers are made rather than trained
(the trainer broke ties in hash order), the corpus's clips are encoded losslessly (x264's lossy
rate control changed a few clips' pixels from one process to the next), torch computes on one
thread, the stand-in LLM does not sample,
rows are taken in a sorted order rather than in the ledger's or the threads' order, and the
bootstrap has its own seed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _toys  # noqa: F401  (tests/toys on the path)
from popcorn.study.run import run_study
from popcorn.study.spec import load_study
from toys.leak import LeakSetup, bank_without, build_leak_setup, scoring_neighbours


def write_leak_study(folder: Path, setup: LeakSetup, refs: int) -> Path:
    """A study of the ``mock:`` LLM (it copies its most commented reference), basic against
    ``pe:refs``, scored by the setup's predictor, its PE pool the whole corpus (which holds the
    predictor's bank)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text(
        f"""[study]
name = "pe-leak"
profile = "popcorn"
llms = ["mock:stand-in"]
modes = ["basic", "pe:{refs}"]
videos = ["preview"]
covers = ["none"]
seeds = [42]
predictor = "{setup.predictor}"
corpus = "{setup.corpus}"

[pe]
embedder = "minilm-l6"   # the embedder the generated corpus was indexed with

[gate]
enabled = false          # the stand-in copies on purpose: what would a copy that got through score?

[queries]
leak = "{setup.queries}"
""",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class Change:
    """Score without the removed references minus score with them, over clips."""

    clips: int
    mean: float
    low: float
    high: float
    """95% bootstrap interval of the mean."""
    removed: float
    """Mean number of removed references the bank held, per clip."""


@dataclass(frozen=True)
class Ablation:
    pe: Change
    basic: Change
    retrieved: float
    """Share of PE clips whose scoring (whole bank) retrieved a reference shown to their LLM."""
    failed: int


def ablate(study_file: Path) -> Ablation:
    """Score a finished study's clips again without the references their query's PE run showed."""
    import numpy as np

    from popcorn.predictor.score import Predictor
    from popcorn.runs.store import Run
    from popcorn.study.report import distinct_clips, results
    from popcorn.study.stats import bootstrap_mean

    study = load_study(study_file)
    assert study.predictor is not None
    rows = sorted(results(study), key=lambda r: (r["query"], r["mode"], r["run_dir"] or ""))
    clips = distinct_clips([r for r in rows if r["status"] == "done" and r["score"] is not None])
    shown: dict[str, set[str]] = {}
    for r in clips:
        if r["mode"] != "basic":
            refs = Run.load(Path(r["run_dir"])).read_json("references.json")["references"]
            shown[r["query"]] = {ref["video_id"] for ref in refs}
    predictor = Predictor.load(study.predictor)
    changes: dict[str, list[float]] = {"pe": [], "basic": []}
    removed: dict[str, list[int]] = {"pe": [], "basic": []}
    retrieved = 0
    for r in clips:
        if r["query"] not in shown:
            continue  # its PE clip failed: nothing to take out
        kind = "basic" if r["mode"] == "basic" else "pe"
        run = Run.load(Path(r["run_dir"]))
        script = run.script()
        clip = run.manifest.files.get("clip")
        assert script is not None and clip
        with_refs = predictor.score_video(run.path / clip, script.title, script.video_prompt)
        with bank_without(predictor, shown[r["query"]]) as held:
            without = predictor.score_video(run.path / clip, script.title, script.video_prompt)
        changes[kind].append(without.score - with_refs.score)
        removed[kind].append(held)
        if kind == "pe":
            near = scoring_neighbours(predictor, script.title, script.video_prompt)
            retrieved += bool(shown[r["query"]] & set(near))

    def change(kind: str) -> Change:
        ci = bootstrap_mean(np.array(changes[kind]))
        held = float(np.mean(removed[kind])) if removed[kind] else float("nan")
        return Change(ci.n, ci.mean, ci.low, ci.high, held)

    pe = change("pe")
    return Ablation(
        pe,
        change("basic"),
        retrieved / pe.clips if pe.clips else float("nan"),
        sum(r["status"] == "failed" for r in rows),
    )


def _pin_threads() -> None:
    """One torch thread: a sum split over a varying number of threads rounds differently."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)


def _row(label: str, c: Change) -> str:
    return (
        f"| {label} | {c.clips} | {c.removed:.1f} | {c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}] |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--videos", type=int, default=240)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    _pin_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        setup = build_leak_setup(root / "data", args.videos, args.seed, args.queries)
        path = write_leak_study(root / "study", setup, args.refs)
        run_study(load_study(path), allow_overlap=True)
        found = ablate(path)
        print(
            f"{args.videos} generated videos (seed {args.seed}): bank (train + val) "
            f"{len(setup.bank)}, test split {len(setup.test)}; {args.queries} queries; basic vs "
            f"pe:{args.refs}, PE pool overlapping the bank; {found.failed} failed jobs; "
            f"{time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    lines: list[Any] = [
        "| clips | n | shown references removed from the bank, per clip "
        "| score without them - with them, mean [95% CI] |",
        "|---|---|---|---|",
        _row("PE (its own references removed)", found.pe),
        _row("basic (its query's PE references removed)", found.basic),
    ]
    print("\n".join(lines))
    print(
        f"PE - basic change: {found.pe.mean - found.basic.mean:+.3f}; PE clips whose score "
        f"retrieved a reference shown to their LLM: {100 * found.retrieved:.0f}%"
    )


if __name__ == "__main__":
    main()
