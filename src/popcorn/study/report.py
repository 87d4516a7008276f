"""The study report: a tidy results table (CSV and parquet), statistics, figures (PNG and SVG)
and a Markdown and an HTML page that show them, written into ``<study>.study/report/``."""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from popcorn._io import atomic_write_bytes, atomic_write_text
from popcorn.safety import one_line, redact, register_environment_secrets
from popcorn.study.judge import judge_header
from popcorn.study.run import open_ledger
from popcorn.study.spec import Study
from popcorn.study.stats import bootstrap_mean, holm, paired_test

COLUMNS = [
    "key",
    "profile",
    "query_set",
    "query",
    "type",
    "llm",
    "mode",
    "refs",
    "categories",
    "video",
    "cover",
    "seed",
    "candidates",
    "status",
    "failed_stage",
    "reason",
    "error",
    "title",
    "score",
    "text_only",
    "preview",
    "run_dir",
    "media_dir",
    "seconds_script",
    "seconds_media",
    "seconds_score",
]


def results(study: Study) -> list[dict[str, Any]]:
    """One row per job of the study as it is now (jobs of removed cells are left out).

    Error texts are redacted again here, with the keys this environment holds registered."""
    register_environment_secrets()
    ledger = open_ledger(study)
    try:
        rows = ledger.rows({j.key for j in study.jobs()})
    finally:
        ledger.close()
    table = []
    for row in rows:
        r = row.data
        timings = json.loads(r["timings"])
        table.append(
            {
                **{c: r.get(c) for c in COLUMNS if c in r},
                "type": json.loads(r["tags"]).get("type", ""),
                "status": "done" if r["stage"] == "done" else r["status"],
                "preview": None if r["preview"] is None else bool(r["preview"]),
                # Ledgers written before errors were redacted at the source may still hold a
                # credential an endpoint echoed: none reaches the tables or the pages.
                "error": None if r.get("error") is None else redact(r["error"]),
                **{f"seconds_{s}": timings.get(s) for s in ("script", "media", "score")},
            }
        )
    return table


def write_table(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """``results.csv`` always; ``results.parquet`` too when pyarrow is installed."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "results.csv", buffer.getvalue())
    written = [folder / "results.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(folder / "results.parquet", sink.getvalue().to_pybytes())
    return [*written, folder / "results.parquet"]


@dataclass
class Page:
    """Blocks rendered to Markdown and HTML alike: (kind, payload).

    Every text comes from somewhere else (the study's name, queries, model names, errors), so
    both renderings drop its control characters and terminal escapes and fold it onto one
    line: ``cat report.md`` must not retitle a terminal or clear its screen."""

    title: str
    blocks: list[tuple[str, Any]]

    def markdown(self) -> str:
        out = [f"# {_md(self.title)}", ""]
        for kind, payload in self.blocks:
            if kind == "h2":
                out += [f"## {_md(payload)}", ""]
            elif kind == "p":
                out += [_md(payload), ""]
            elif kind == "table":
                head, rows = payload
                out.append("| " + " | ".join(_md(h) for h in head) + " |")
                out.append("|" + "---|" * len(head))
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{_md(payload)}]({_md(payload)})", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{_html(self.title)}</h1>"]
        for kind, payload in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{_html(payload)}</h2>")
            elif kind == "p":
                body.append(f"<p>{_html(payload)}</p>")
            elif kind == "table":
                head, rows = payload
                cells = "".join(f"<th>{_html(h)}</th>" for h in head)
                lines = [f"<tr>{cells}</tr>"]
                for row in rows:
                    tds = "".join(f"<td>{_html(c)}</td>" for c in row)
                    lines.append(f"<tr>{tds}</tr>")
                body.append("<table>" + "".join(lines) + "</table>")
            elif kind == "img":
                body.append(f'<img src="{_html(payload)}" alt="{_html(payload)}">')
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:left}img{max-width:100%}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{_html(self.title)}"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
        )


def _md(cell: Any) -> str:
    """A cell as Markdown text: one line, no control characters, no column break, and no tag
    a Markdown viewer would render as HTML."""
    text = one_line(cell).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _html(cell: Any) -> str:
    return html.escape(one_line(cell))


def _fmt(x: float) -> str:
    return "" if x != x else f"{x:.3f}"  # NaN -> blank


def write_report(study: Study) -> dict[str, Any]:
    """Write the whole report; returns the paths written and the headline numbers.

    A score depends on its clip alone, and jobs that differ only in their cover generator
    share their clip: each clip counts once (:func:`distinct_clips`) in every mean, interval,
    pairing and test."""
    folder = study.folder / "report"
    folder.mkdir(parents=True, exist_ok=True)
    rows = results(study)
    files = write_table(rows, folder)
    scored = [r for r in rows if r["status"] == "done" and r["score"] is not None]
    clips = distinct_clips(scored)
    human, human_note = _human(study)
    blocks: list[tuple[str, Any]] = []
    done = sum(r["status"] == "done" for r in rows)
    blocks.append(("p", _PROFILES.get(study.profile, f"Profile: {study.profile}.")))
    blocks.extend(("p", line) for line in judge_header(study))
    if human_note:
        blocks.append(("p", human_note))
    blocks.append(
        (
            "p",
            f"{len(rows)} jobs: {done} done, {len(scored)} scored ({len(clips)} distinct "
            f"clips), {sum(r['status'] == 'failed' for r in rows)} failed, "
            f"{sum(r['status'] not in ('done', 'failed') for r in rows)} to do.",
        )
    )
    if len(clips) < len(scored):
        blocks.append(
            (
                "p",
                f"{len(scored) - len(clips)} scored jobs share their clip with another job "
                "(same query, LLM, mode, clip generator and seed; only the cover differs): "
                "each clip counts once in the tables, intervals and tests below.",
            )
        )
    if any(r["preview"] for r in clips):
        blocks.append(
            (
                "p",
                "Some clips are PREVIEW animatics (no diffusion model): their scores "
                "exercise the pipeline and say little about real videos.",
            )
        )

    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in clips:
        by_type[_group(r)].append(r)
    failed_by_type = _failed_clips(rows)
    headline: dict[str, Any] = {}
    for qtype in sorted(set(by_type) | set(failed_by_type)):
        blocks.append(("h2", f"Predicted popularity: {qtype}"))
        table = []
        values_of = _by_config(by_type.get(qtype, []))
        failed_of = failed_by_type.get(qtype, Counter())
        blank_of = Counter(_config(r) for r in by_type.get(qtype, []) if _blank(r))
        for config in sorted(set(values_of) | set(failed_of)):
            ci = bootstrap_mean(np.array(values_of.get(config, [])))
            failed = failed_of.get(config, 0) + blank_of.get(config, 0)
            table.append(
                [
                    config,
                    ci.n,
                    failed,
                    _fmt(failed / (ci.n + failed_of.get(config, 0))),
                    _fmt(ci.mean),
                    f"[{_fmt(ci.low)}, {_fmt(ci.high)}]",
                ]
            )
            if ci.n:
                headline.setdefault(qtype, {})[config] = ci.mean
        if human is not None:
            ci = bootstrap_mean(human)
            table.append(
                [
                    "human (held-out real videos)",
                    ci.n,
                    "",
                    "",
                    _fmt(ci.mean),
                    f"[{_fmt(ci.low)}, {_fmt(ci.high)}]",
                ]
            )
        head = ["configuration", "n", "failed", "failure rate", "mean", "95% CI"]
        blocks.append(("table", (head, table)))
        blocks.append(("p", _FAILED_NOTE[study.failures]))
    figures = _figures(by_type, human, folder)

    comparisons = _pe_vs_basic(clips)
    if comparisons:
        blocks.append(("h2", "PE against basic (paired by query)"))
        blocks.append(
            (
                "p",
                "One pair per query that both conditions answered: each side's mean over the "
                "clip generators and seeds they share for that query, so a script pair counts "
                "once however many generators rendered it. Queries only one condition answered "
                "are dropped (column 'dropped'). Sign-flip permutation test over queries, "
                f"two-sided; effect size Cohen's d_z. 'p (Holm)' corrects for the "
                f"{len(comparisons)} tests of this table (one per LLM and PE mode) with "
                "Holm's step-down method.",
            )
        )
        head = ["LLM", "PE mode", "queries", "dropped", "mean PE - basic", "d_z", "p", "p (Holm)"]
        blocks.append(("table", (head, comparisons)))
    for name in figures:
        blocks.append(("h2", _FIGURE_TITLES[name.split(".")[0]]))
        blocks.append(("img", name))

    failed_rows = [r for r in rows if r["status"] == "failed"]
    failed_rows += [{**r, "failed_stage": "script", "error": "scored as a blank script"}
                    for r in rows if r["status"] == "done" and _blank(r)]  # fmt: skip
    failures = Counter(r["failed_stage"] for r in failed_rows)
    reasons = Counter((r["failed_stage"], r.get("reason") or "") for r in failed_rows)
    blocks.append(("h2", "Failures"))
    if failures:
        examples: dict[tuple[str, str], str] = {}
        for r in failed_rows:
            examples.setdefault((r["failed_stage"], r.get("reason") or ""), r["error"])
        blocks.append(
            (
                "table",
                (
                    ["stage", "jobs", "reason", "example"],
                    [[s, n, why, examples[s, why]] for (s, why), n in sorted(reasons.items())],
                ),
            )
        )
    else:
        blocks.append(("p", "None."))

    page = Page(f"Study report: {study.name}", blocks)
    atomic_write_text(folder / "report.md", page.markdown())
    atomic_write_text(folder / "report.html", page.html())
    written = [*files, folder / "report.md", folder / "report.html"]
    written += [folder / f for f in figures for f in (f, f.replace(".png", ".svg"))]
    return {
        "files": [str(p) for p in written],
        "profile": study.profile,
        "means": headline,
        "clips": len(clips),
        "failed": dict(failures),
        "failed_reasons": {f"{s}: {why}" if why else s: n for (s, why), n in reasons.items()},
    }


_PROFILES = {
    "paper": "Profile: paper (the LLMPopcorn study's conditions: prompts, decoding, PE pool "
    "restricted to the predictor's test split, presets; see docs/profiles.md).",
    "popcorn": "Profile: popcorn (Popcorn's own conditions where they differ from the study's; "
    "see docs/profiles.md).",
}


def clip_identity(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a job's score depends on: its script (query, LLM, mode, seed, best-of-N, under the
    study's profile and settings, which all its jobs share) and its clip generator; not its
    cover generator."""
    return (
        row["query_set"],
        row["query"],
        row["llm"],
        row["mode"],
        row["video"],
        row["seed"],
        row.get("candidates") or 1,
        row.get("profile") or "",
    )


def distinct_clips(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per clip, the first of each :func:`clip_identity`, in the order given."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(clip_identity(r), r)
    return list(seen.values())


def _group(row: dict[str, Any]) -> str:
    return str(row["type"] or row["query_set"])


_FAILED_NOTE = {
    "omit": "n: distinct clips scored; failed: clips of the configuration that ended without "
    'a score, left out of the mean (the study\'s failures = "omit"); failure rate: failed / '
    "(n + failed). See Failures for why.",
    "blank": "n: distinct clips scored, blank scripts included; failed: clips whose script "
    'failed, scored as a blank script as the LLMPopcorn study did (failures = "blank"), or '
    "that ended without a score; failure rate: failed / (n + unscored). See Failures for why.",
}


def _blank(row: dict[str, Any]) -> bool:
    """Whether a finished job's script is the blank one a failure was scored as."""
    return str(row.get("reason") or "").startswith("blank")


def _config(row: dict[str, Any]) -> str:
    return f"{row['llm']} | {row['mode']} | {row['video']}"


def _failed_clips(rows: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per group and configuration, the clips that no job scored and some job failed (a
    script that failed counts once, however many covers it was meant for)."""
    scored = {clip_identity(r) for r in rows if r["status"] == "done" and r["score"] is not None}
    failed = {clip_identity(r): r for r in rows if r["status"] == "failed"}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for identity, r in failed.items():
        if identity not in scored:
            out[_group(r)][_config(r)] += 1
    return out


_FIGURE_TITLES = {
    "distributions": "Distributions of predicted popularity per configuration",
    "ablation_refs": "Ablation: number of references N",
    "ablation_categories": "Ablation: number of categories K",
}


def _by_config(items: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for r in items:
        out[_config(r)].append(float(r["score"]))
    return out


def _human(study: Study) -> tuple[np.ndarray | None, str | None]:
    """The predictor's scores of held-out real videos (``human.json``), and a note for the
    report when that file is there but cannot be used: the report goes on without the row."""
    if study.predictor is None or not (study.predictor / "human.json").is_file():
        return None, None
    path = study.predictor / "human.json"
    try:
        scores = np.array(json.loads(path.read_text(encoding="utf-8"))["scores"], np.float64)
        if scores.ndim != 1 or not np.isfinite(scores).all():
            raise ValueError("not a list of finite numbers")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        why = one_line(err)[:200] or type(err).__name__
        return None, f"The human row is left out: {path} cannot be used ({why})."
    return scores, None


def _pe_vs_basic(clips: list[dict[str, Any]]) -> list[list[Any]]:
    """PE against basic over ``clips`` (one row per clip), one pair per query: the mean of
    each condition over the (clip generator, seed) cells both have for that query. Pairing
    clip by clip would count one script pair once per generator and shrink the p-values."""

    def cell(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["video"], r["seed"])

    def query(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["query_set"], r["query"])

    Cells = dict[tuple[Any, ...], dict[tuple[Any, ...], float]]
    basic: dict[str, Cells] = defaultdict(lambda: defaultdict(dict))
    pe: dict[tuple[str, str], Cells] = defaultdict(lambda: defaultdict(dict))
    for r in clips:
        side = basic[r["llm"]] if r["mode"] == "basic" else pe[(r["llm"], r["mode"])]
        side[query(r)][cell(r)] = float(r["score"])
    found = []
    for (llm, mode), by_query in sorted(pe.items()):
        base = basic.get(llm, {})
        a, b, dropped = [], [], 0
        for q in sorted(set(by_query) | set(base)):
            shared = sorted(set(by_query.get(q, {})) & set(base.get(q, {})))
            if not shared:
                dropped += 1
                continue
            a.append(float(np.mean([by_query[q][c] for c in shared])))
            b.append(float(np.mean([base[q][c] for c in shared])))
        if a:
            found.append((llm, mode, dropped, paired_test(np.array(a), np.array(b))))
    adjusted = holm([test.p_value for *_, test in found])
    return [
        [
            llm,
            mode,
            test.n,
            dropped,
            _fmt(test.mean_difference),
            _fmt(test.effect_size),
            _fmt(test.p_value),
            _fmt(p),
        ]
        for (llm, mode, dropped, test), p in zip(found, adjusted, strict=True)
    ]


def _figures(
    by_type: dict[str, list[dict[str, Any]]], human: np.ndarray | None, folder: Path
) -> list[str]:
    """PNG (and SVG beside it) figures; none when matplotlib is missing or nothing is scored."""
    if not by_type:
        return []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    fig, axes = plt.subplots(1, len(by_type), figsize=(6 * len(by_type), 4.5), squeeze=False)
    for ax, (qtype, items) in zip(axes[0], sorted(by_type.items()), strict=True):
        groups = sorted(_by_config(items).items())
        labels = [_label(name) for name, _ in groups]
        data = [values for _, values in groups]
        if human is not None:
            labels.append("human")
            data.append(list(human))
        ax.boxplot(data, orientation="horizontal", showmeans=True, showfliers=False)
        # The points behind each box, jittered off its line so that ties stay visible.
        jitter = np.random.default_rng(0)
        for row, values in enumerate(data, start=1):
            ys = row + jitter.uniform(-0.15, 0.15, len(values))
            ax.scatter(values, ys, s=8, alpha=0.5, color="0.3", zorder=3)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.legend(handles=_marker_legend(), fontsize=7, loc="best")
        ax.set_title(_label(qtype))
        ax.set_xlabel("predicted log2(1 + comments)")
    fig.tight_layout()
    names.append(_save(fig, folder, "distributions"))
    plt.close(fig)

    everything = [r for items in by_type.values() for r in items if r["mode"] != "basic"]
    for axis, fixed in (("refs", "categories"), ("categories", "refs")):
        curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in everything:
            label = _label(f"{r['llm']} ({fixed} {r[fixed]})")
            curves[label][int(r[axis])].append(float(r["score"]))
        curves = {k: v for k, v in curves.items() if len(v) > 1}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in sorted(curves.items()):
            xs = sorted(points)
            ax.plot(xs, [float(np.mean(points[x])) for x in xs], marker="o", label=label)
        ax.set_xlabel("N (references)" if axis == "refs" else "K (categories)")
        ax.set_ylabel("mean predicted log2(1 + comments)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        names.append(_save(fig, folder, f"ablation_{axis}"))
        plt.close(fig)
    return names


def _marker_legend() -> list[Any]:
    """Legend entries for the box plot's markers, drawn as matplotlib draws them by default."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], marker="^", color="green", linestyle="none", label="mean"),
        Line2D([], [], color="orange", label="median"),
        Line2D([], [], marker="o", color="0.3", alpha=0.5, linestyle="none", label="clips"),
    ]


def _label(text: Any) -> str:
    """Text for a figure: one line, and a ``$`` (a model name, a query type) kept literal, not
    read as the start of mathtext, which one stray ``$`` would make fail to render."""
    return one_line(text).replace("$", r"\$")


def _save(fig: Any, folder: Path, stem: str) -> str:
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix, dpi=120)
        atomic_write_bytes(folder / f"{stem}.{suffix}", buffer.getvalue())
    return f"{stem}.png"
