"""Script quality on the embedded model: do the answers fit the query, or talk back?

Run: ``.venv/bin/python benchmarks/script_quality.py [--queries 40] [--modes basic,pe]
[--label after] [--prompts DIR] [--no-gate] [--drafts K] [--temperature T] [--save FILE]``
and, to compare saved runs, ``.venv/bin/python benchmarks/script_quality.py --report FILE
[FILE ...]``.

48 queries of our own (``QUERIES``: half concrete, half abstract, none of the study's; the
first N are taken, alternating kinds), each written once per mode: ``basic``, and ``pe`` over a
generated MicroLens-format corpus (``--videos`` videos of 22 topics, imported and indexed with
the packaged all-MiniLM-L6-v2 exactly as ``popcorn corpus import`` / ``corpus index`` do;
``--refs`` references from 1 category). Many queries have no topic of their own in that corpus,
as with a real one: PE then retrieves videos about something else.

``--prompts DIR`` replaces the profile's templates (``benchmarks/prompts_before`` holds the
popcorn wording before issue 17) and ``--no-gate`` records the gate's verdicts without acting
on them. Every figure is computed here, from the final answers and the messages sent, with
:mod:`popcorn.writer.gate`'s rules and default thresholds, whatever the run's own gate did:

- valid: queries that ended with a script;
- relevance: cosine of the query with title + video prompt (packaged MiniLM-L6); the median
  over valid scripts, and the share of *all* queries whose script reaches 0.3 (a failure
  counts as a miss); "title" and "video prompt" each alone, as in the issue's table, and
  "= query" the share of titles that only restate the query (relevant, not inventive);
- echo: valid scripts that repeat the prompt (instructions, requirements, example,
  references: the ``echo`` rule) or talk about the task (the ``meta`` rule);
- contamination: valid scripts holding the distinctive words of a worked example: the old
  popcorn example (the lighthouse keeper), whether or not the prompt showed it, and any
  example the prompt did show;
- attempts: attempts per script, mean (a failure counts all its attempts); calls: model calls
  per script (drafts, the shorter-title and title-step requests included);
- s/script: wall seconds per query, retries and gate included; gate: the gate's own share.

``--save FILE`` keeps every attempt (messages, raw answer), so ``--report`` can recompute the
table later with other thresholds (``--echo-max``, ``--relevance-min``) without running the
model again, and prints how many attempts each threshold would have cost.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from popcorn.script import Script
from popcorn.writer.gate import (
    GateSettings,
    contamination,
    gate_embedder,
    judge,
    prompt_text,
)

QUERIES: list[tuple[str, str]] = [
    ("A golden retriever learning to surf", "concrete"),
    ("The feeling of finishing a long exam", "abstract"),
    ("Making sourdough bread from scratch", "concrete"),
    ("Why small habits change your life", "abstract"),
    ("A street drummer playing on buckets in the subway", "concrete"),
    ("Nostalgia for childhood summers", "abstract"),
    ("Fixing a flat bicycle tire in five minutes", "concrete"),
    ("Learning to be patient", "abstract"),
    ("A grandmother teaching her grandson to knit", "concrete"),
    ("The quiet before a storm", "abstract"),
    ("Timelapse of a city skyline from sunset to midnight", "concrete"),
    ("What friendship means in adulthood", "abstract"),
    ("A chef flipping pancakes in a tiny camper van", "concrete"),
    ("Overcoming stage fright", "abstract"),
    ("Building a treehouse with recycled wood", "concrete"),
    ("The joy of doing nothing on a Sunday", "abstract"),
    ("A parrot that says good morning to everyone", "concrete"),
    ("Moving to a new city alone", "abstract"),
    ("Snowboarding down a fresh powder slope", "concrete"),
    ("The beauty of imperfection", "abstract"),
    ("Painting a mural on a brick wall", "concrete"),
    ("Saving money on a tight budget", "abstract"),
    ("Unboxing a vintage film camera", "concrete"),
    ("How to stay motivated in winter", "abstract"),
    ("A toddler tasting a lemon for the first time", "concrete"),
    ("The first day at a new job", "abstract"),
    ("Repotting a giant monstera plant", "concrete"),
    ("Why we procrastinate", "abstract"),
    ("Night fishing on a frozen lake", "concrete"),
    ("Gratitude for everyday things", "abstract"),
    ("A magician doing a card trick on the street", "concrete"),
    ("Letting go of perfectionism", "abstract"),
    ("Cleaning a filthy carpet with a pressure washer", "concrete"),
    ("The thrill of a last-minute win", "abstract"),
    ("Making paper lanterns for a festival", "concrete"),
    ("Loneliness in a crowded city", "abstract"),
    ("A robot arm sorting colorful candies", "concrete"),
    ("Making peace with failure", "abstract"),
    ("Planting tomatoes on a city balcony", "concrete"),
    ("Tips for better sleep", "abstract"),
    ("A jazz saxophonist playing in the rain", "concrete"),
    ("The courage to start over", "abstract"),
    ("Kayaking through a sea cave", "concrete"),
    ("Screen time and attention spans", "abstract"),
    ("Decorating cupcakes for a birthday party", "concrete"),
    ("Kindness between strangers", "abstract"),
    ("A skateboarder landing a kickflip down stairs", "concrete"),
    ("The excitement of a first concert", "abstract"),
]
"""Our own queries, alternating concrete and abstract; none is one of the study's."""

OLD_EXAMPLE_QUERY = "A lighthouse keeper's last night on duty"
OLD_EXAMPLE = {
    "title": "The Lighthouse's Final Blink",
    "cover_prompt": "An old lighthouse keeper in a wool coat holding a brass lantern at the top of "
    "a lighthouse during a violent storm, waves crashing below, warm amber light against a deep "
    "blue night, cinematic, highly detailed, dramatic rim lighting",
    "video_prompt": "Close-up of a weathered hand turning the lighthouse lamp off for the last "
    "time; the beam sweeps across the stormy sea, then fades, leaving the keeper's face lit only "
    "by lightning. Slow push-in, moody teal and amber palette, rain streaks on the glass",
}
"""The worked example the popcorn prompts showed before issue 17 (the one that leaked)."""


# --- running -------------------------------------------------------------------------------


def build_corpus(root: Path, videos: int) -> Path:
    from popcorn.retrieval.embedders import Embedder
    from popcorn.retrieval.importers import import_microlens
    from popcorn.retrieval.index import build_index
    from popcorn.retrieval.synthetic import generate_microlens

    generate_microlens(root / "raw", videos=videos, seed=17)
    corpus, report = import_microlens(root / "raw")
    corpus.save(root / "corpus", report)
    build_index(root / "corpus", Embedder())
    return root / "corpus"


def generator(mode: str, args: argparse.Namespace, corpus: Path | None, out: Path) -> Any:
    from popcorn.retrieval.enhance import PESettings
    from popcorn.writer.writer import Generator

    kwargs: dict[str, Any] = {"out": out, "attempts": args.attempts, "prompts": args.prompts}
    if args.drafts is not None:
        kwargs["drafts"] = args.drafts
    if args.temperature is not None:
        kwargs["temperature"] = args.temperature
    if "gate" in inspect.signature(Generator).parameters:
        kwargs["gate"] = GateSettings(enabled=not args.no_gate)
    elif not args.no_gate:
        sys.exit("this version of popcorn has no quality gate: add --no-gate")
    if mode == "pe":
        assert corpus is not None
        kwargs["pe"] = PESettings(refs=args.refs, categories=1, corpus=corpus)
    return Generator("embedded", **kwargs)


def run_one(gen: Any, query: str, kind: str) -> dict[str, Any]:
    from popcorn.errors import GenerationError

    started = time.perf_counter()
    record: dict[str, Any] = {"query": query, "kind": kind}
    try:
        result = gen.generate(query, force=True)
        run_dir = result.run_dir
        record.update(ok=True, script=result.script.to_dict())
    except GenerationError as err:
        run_dir = Path(str(err.run_dir))
        record.update(ok=False, reason=err.reason, error=str(err))
    record["seconds"] = round(time.perf_counter() - started, 3)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    transcript = json.loads((run_dir / "transcript.json").read_text(encoding="utf-8"))
    record["attempts"] = manifest.get("attempts") or len(transcript["attempts"])
    # Every model call, title follow-ups included (the transcript lists the drafts).
    record["model_calls"] = manifest.get("usage", {}).get("calls")
    record["gate_seconds"] = manifest.get("timings", {}).get("gate_seconds", 0.0)
    record["prompt_version"] = manifest.get("prompt_version")
    record["calls"] = [
        {"messages": a["messages"], "raw": a["raw"], "seconds": a["seconds"]}
        for a in transcript["attempts"]
    ]
    return record


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = None
        if "pe" in args.modes:
            started = time.perf_counter()
            corpus = args.corpus or build_corpus(root / "data", args.videos)
            print(f"corpus ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for mode in args.modes:
            gen = generator(mode, args, corpus, root / "runs" / mode)
            for i, (query, kind) in enumerate(QUERIES[: args.queries], 1):
                record = run_one(gen, query, kind)
                record.update(label=args.label, mode=mode)
                records.append(record)
                title = (record.get("script") or {}).get("title", record.get("reason"))
                print(
                    f"[{args.label} {mode} {i}/{args.queries}] {record['seconds']:.1f}s "
                    f"x{record['attempts']} {query!r} -> {title!r}",
                    file=sys.stderr,
                )
                if args.save:
                    _save(args.save, records)
    return records


def _save(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


# --- measuring -----------------------------------------------------------------------------


def measure(records: list[dict[str, Any]], settings: GateSettings, embedder: Any) -> None:
    """Add ``measured`` (final answer) and ``first`` (first attempt's verdict) to each."""
    from popcorn.errors import ScriptParseError
    from popcorn.writer.parser import parse_script

    for record in records:
        query = record["query"]
        final = record["calls"][-1]
        record["measured"] = None
        if record["ok"]:
            script = Script.from_dict(record["script"])
            record["measured"] = score(script, query, final["messages"], settings, embedder)
        first = record["calls"][0]
        try:
            parsed = parse_script(first["raw"]).script
        except ScriptParseError as err:
            record["first"] = {"parsed": False, "reason": err.reason}
        else:
            record["first"] = score(parsed, query, first["messages"], settings, embedder)


def score(
    script: Script,
    query: str,
    messages: list[dict[str, str]],
    settings: GateSettings,
    embedder: Any,
) -> dict[str, Any]:
    text = prompt_text(messages, query)
    verdict = judge(script, query, text, settings, embedder=embedder)
    shown = OLD_EXAMPLE["title"] in text
    return {
        "parsed": True,
        "reason": verdict.reason,
        "relevance": verdict.scores["relevance"],
        "title_relevance": verdict.scores["title_relevance"],
        "video_relevance": verdict.scores["video_relevance"],
        "echo": verdict.reason in ("echo", "meta") or _talks_back(verdict, settings),
        "contaminated": contamination(script, query, OLD_EXAMPLE, OLD_EXAMPLE_QUERY) > 0,
        "restates": bool(verdict.scores["restated"]),
        "shot": bool(verdict.scores["shot"]),
        "example_shown": shown,
    }


def _talks_back(verdict: Any, settings: GateSettings) -> bool:
    """Echo or meta text, even when another rule failed first."""
    echoed = (verdict.scores.get("echo") or 0) > settings.echo_max
    return bool(verdict.scores.get("meta")) or echoed


def summary(records: list[dict[str, Any]]) -> dict[str, float]:
    n = len(records)
    valid = [r for r in records if r["ok"]]
    measured = [r["measured"] for r in valid]
    relevance = [m["relevance"] for m in measured]
    seconds = statistics.mean(r["seconds"] for r in records)
    gate = statistics.mean(r["gate_seconds"] for r in records)
    return {
        "n": n,
        "valid": len(valid) / n,
        "relevance_median": statistics.median(relevance) if relevance else 0.0,
        "title_median": statistics.median(m["title_relevance"] for m in measured)
        if measured
        else 0.0,
        "video_median": statistics.median(m["video_relevance"] for m in measured)
        if measured
        else 0.0,
        "share_03": sum(r >= 0.3 for r in relevance) / n,
        "title_03": sum(m["title_relevance"] >= 0.3 for m in measured) / n,
        "restates": sum(m["restates"] for m in measured) / max(1, len(measured)),
        "shots": sum(m["shot"] for m in measured) / max(1, len(measured)),
        "calls": statistics.mean(r.get("model_calls") or len(r["calls"]) for r in records),
        "echo": sum(m["echo"] for m in measured) / max(1, len(measured)),
        "contamination": sum(m["contaminated"] for m in measured) / max(1, len(measured)),
        "attempts": statistics.mean(r["attempts"] for r in records),
        "seconds": seconds,
        "gate_share": gate / seconds if seconds else 0.0,
    }


def print_table(records: list[dict[str, Any]]) -> None:
    groups = _groups(records)
    print(
        "| run | mode | valid | restated titles | shots | title >= 0.3 | title median "
        "| video prompt median | relevance median | >= 0.3 | echo | contamination | attempts "
        "| calls | s/script | gate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (label, mode), rows in groups.items():
        s = summary(rows)
        print(
            f"| {label} | {mode} | {s['valid']:.0%} | {s['restates']:.0%} | {s['shots']:.0%} "
            f"| {s['title_03']:.0%} | {s['title_median']:.2f} | {s['video_median']:.2f} "
            f"| {s['relevance_median']:.2f} | {s['share_03']:.0%} | {s['echo']:.0%} "
            f"| {s['contamination']:.0%} | {s['attempts']:.2f} | {s['calls']:.2f} "
            f"| {s['seconds']:.1f} | {s['gate_share']:.1%} |"
        )


def print_change(records: list[dict[str, Any]]) -> None:
    """Each run against the first run's figures for the same mode (the baseline: run the
    ``before`` wording first, or pass its saved file first to ``--report``)."""
    baselines: dict[str, dict[str, float]] = {}
    lines = []
    for (label, mode), rows in _groups(records).items():
        s = summary(rows)
        base = baselines.setdefault(mode, s)
        if base is s:
            continue
        rel, base_rel = s["relevance_median"], base["relevance_median"]
        lines.append(
            f"| {label} vs baseline | {mode} | relevance median {rel:.2f} "
            f"vs {base_rel:.2f} ({_ratio(rel, base_rel)}) "
            f"| >= 0.3 {s['share_03'] - base['share_03']:+.0%} pts "
            f"| echo {s['echo'] - base['echo']:+.0%} pts "
            f"| s/script {_ratio(s['seconds'], base['seconds'])} |"
        )
    if lines:
        print("\nagainst the first run of each mode:")
        print("\n".join(lines))


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "n/a"


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["label"], r["mode"]), []).append(r)
    return groups


def print_pairs(records: list[dict[str, Any]], count: int) -> None:
    """``count`` queries side by side: the first run's script and the last run's, per mode
    (every ``len // count``-th query of the first mode, so abstract and concrete alternate)."""
    groups = list(_groups(records).items())
    if len(groups) < 2 or count <= 0:
        return
    (first_label, mode), before = groups[0]
    after_label, after = next(
        ((label, rows) for (label, m), rows in reversed(groups) if m == mode), (None, [])
    )
    if after_label is None or after_label == first_label:
        return
    mine = {r["query"]: r for r in after}
    step = max(1, len(before) // count)
    print(f"\n{first_label} vs {after_label}, {mode}:")
    print(f"| query | {first_label} | {after_label} |")
    print("|---|---|---|")
    for record in before[::step][:count]:
        other = mine.get(record["query"])
        if other is not None:
            print(f"| {record['query']} | {_cell(record)} | {_cell(other)} |")


def _cell(record: dict[str, Any]) -> str:
    script = record.get("script")
    if not script:
        return f"failed: {record.get('reason')}"
    text = f"**{script['title']}** / {script['video_prompt']}"
    return text.replace("|", "/").replace("\n", " ")


def print_thresholds(records: list[dict[str, Any]]) -> None:
    """First-attempt pass rates per relevance threshold (other rules as set): what a gate at
    that threshold would cost in attempts (1 / pass rate, at most the attempts allowed)."""
    groups = _groups(records)
    print("\nfirst attempts passing every rule but relevance, and relevance >= t:")
    thresholds = (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4)
    print("| run | mode | " + " | ".join(f"t={t}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for (label, mode), rows in groups.items():
        cells = []
        for t in thresholds:
            passing = sum(
                1
                for r in rows
                if r["first"]["parsed"]
                and r["first"]["reason"] in (None, "off_topic")
                and (r["first"]["relevance"] or 0) >= t
            )
            cells.append(f"{passing / len(rows):.0%}")
        print(f"| {label} | {mode} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--modes", default="basic,pe")
    parser.add_argument("--label", default="after")
    parser.add_argument("--prompts", type=Path, default=None)
    parser.add_argument("--no-gate", action="store_true")
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--drafts", type=int, default=None, help="[default: the profile's]")
    parser.add_argument("--temperature", type=float, default=None, help="[default: the profile's]")
    parser.add_argument("--pairs", type=int, default=10, help="before/after pairs to print")
    parser.add_argument("--videos", type=int, default=2200)
    parser.add_argument("--refs", type=int, default=10)
    parser.add_argument("--corpus", type=Path, default=None, help="an indexed corpus to reuse")
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--report", type=Path, nargs="+", default=None)
    parser.add_argument("--echo-max", type=float, default=GateSettings.echo_max)
    parser.add_argument("--relevance-min", type=float, default=GateSettings.relevance_min)
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if not 1 <= args.queries <= len(QUERIES):
        parser.error(f"--queries must be between 1 and {len(QUERIES)}")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.report:
        records = [r for f in args.report for r in json.loads(f.read_text(encoding="utf-8"))]
    else:
        records = run(args)
    settings = GateSettings(echo_max=args.echo_max, relevance_min=args.relevance_min)
    embedder = gate_embedder()
    if embedder is None:
        sys.exit("the benchmark needs the pe extra (sentence-transformers, packaged MiniLM)")
    measure(records, settings, embedder)
    print_table(records)
    print_change(records)
    print_pairs(records, args.pairs)
    print_thresholds(records)


if __name__ == "__main__":
    main()
