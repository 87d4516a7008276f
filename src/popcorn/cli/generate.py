"""``popcorn generate``: one query, or a batch from a file."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.cli.help import GroupedCommand, LazyHelpOption
from popcorn.cli.render import (
    MEDIA_GROUPS,
    deprecated_device_flags,
    media_options,
    media_overrides,
    setting_option,
    warn,
)
from popcorn.config import DecodingSettings, LLMSettings, PESettingsModel
from popcorn.config_fields import cli_fields, int_limits, limits
from popcorn.llm.base import Decoding
from popcorn.profiles import POPCORN, PROFILE_NAMES
from popcorn.safety import one_line, plain, redact, shown

if TYPE_CHECKING:
    from popcorn.config import Settings
    from popcorn.pipeline import Pipeline, RunResult
    from popcorn.writer.queries import QueryItem, QueryList


def decoding_option(name: str) -> dict[str, Any]:
    """A decoding flag's type and help, from its setting: one range and default for all."""
    field = DecodingSettings.model_fields[name]
    low, high, low_open = limits(DecodingSettings, name)
    kind: click.IntRange | click.FloatRange = (
        click.IntRange(None if low is None else int(low), None if high is None else int(high))
        if field.annotation is int
        else click.FloatRange(low, high, min_open=low_open)
    )
    default = _DEFAULT_HELP.get(name, field.default)
    return {"type": kind, "help": f"[default: {default}]"}


_DEFAULT_HELP = {
    "temperature": f"{Decoding.temperature}; the profile's for a small local model: popcorn "
    f"{POPCORN.small_temperature}"
}


LLM_OPTIONS = next(f for f in cli_fields(LLMSettings) if f.setting == "extra")
DRAFTS, DRAFT_SECONDS = (
    next(f for f in cli_fields(LLMSettings) if f.setting == name)
    for name in ("drafts", "draft_seconds")
)


def _llm_help() -> str:
    """``--llm``'s help: the forms of the registered backends (plugins by name, unimported)."""
    from popcorn.llm.registry import LLMS

    forms = [one_line(e.details.get("form") or e.name) for e in LLMS]
    return f"{', '.join(forms)}.  See 'popcorn llms'.  [default: embedded]"


_GROUPS = {
    "Input and output": ["queries_file", "out", "as_json", "force", "concurrency", "config"],
    "LLM": ["spec", "profile", "base_url", LLM_OPTIONS.param, "timeout", "attempts",
            DRAFTS.param, DRAFT_SECONDS.param, "n_ctx",
            "n_gpu_layers", "device_map", "dtype", "load_in_4bit", "load_in_8bit", "batch_size"],
    "Decoding": ["temperature", "top_p", "repetition_penalty", "seed", "max_tokens"],
    "Prompt enhancement": ["pe", "refs", "categories", "corpus"],
    # The media flags' headings come with their settings; --device leads the devices.
    **{heading: (["device", *names] if heading == "Memory and devices" else names)
       for heading, names in MEDIA_GROUPS.items()},
    "Scoring and best-of-N": ["predictor", "candidates", "render_top"],
}  # fmt: skip


@click.command(cls=GroupedCommand, groups=_GROUPS)
@click.argument("query", required=False)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(path_type=Path),
    help="Batch: a .txt file (one query a line) or .csv/.jsonl with a 'prompt' column; "
    "'-' reads standard input (one query a line, or JSON lines).",
)
@click.option("--llm", "spec", metavar="SPEC", cls=LazyHelpOption, help_text=_llm_help)
@click.option("--base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL).")
@setting_option(LLMSettings, LLM_OPTIONS)
@setting_option(LLMSettings, DRAFTS)
@setting_option(LLMSettings, DRAFT_SECONDS)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for run folders.  [default: popcorn-runs]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: one object, or one line per query in a batch; a query that fails "
    'prints {"query": ..., "error": ...}.',
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Queries in flight at once: parallel requests for API backends, queries generated "
    "together by hf: and vllm: models.  [default: 4]",
)
@click.option(
    "--force", is_flag=True, help="Redo queries even if a run with the same settings is done."
)
@click.option("--temperature", **decoding_option("temperature"))
@click.option("--top-p", **decoding_option("top_p"))
@click.option("--repetition-penalty", **decoding_option("repetition_penalty"))
@click.option("--seed", **decoding_option("seed"))
@click.option("--max-tokens", **decoding_option("max_tokens"))
@click.option(
    "--attempts",
    type=click.IntRange(1, 10),
    help="Fresh tries when an answer cannot be parsed or fails the quality gate.  "
    "[default: the profile's, 3 under popcorn, 1 under paper]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    help="Seconds per HTTP request.  [default: 120]",
)
@click.option(
    "--n-ctx", type=click.IntRange(min=256), help="llama.cpp context size.  [default: 4096]"
)
@click.option(
    "--n-gpu-layers",
    type=click.IntRange(min=-1),
    help="llama.cpp layers on the GPU (-1 all; deprecated in favour of --device).  [default: -1, "
    "0 with --device cpu]",
)
@click.option(
    "--device-map", help="hf: device placement (deprecated in favour of --device).  [default: auto]"
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    help="hf: weight dtype.  [default: auto]",
)
@click.option(
    "--load-in-4bit", is_flag=True, default=None, help="hf: 4-bit weights (bitsandbytes)."
)
@click.option(
    "--load-in-8bit", is_flag=True, default=None, help="hf: 8-bit weights (bitsandbytes)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(*int_limits(LLMSettings, "batch_size")),
    help="hf: conversations per generate (0: from the free GPU memory, 4 on a CPU).  [default: 0]",
)
@click.option(
    "--pe", is_flag=True, help="Prompt enhancement: reference videos + a reasoning chain."
)
@click.option(
    "--refs",
    type=click.IntRange(*int_limits(PESettingsModel, "refs")),
    help="PE: references shown to the LLM (0: reasoning chain only).  [default: 10]",
)
@click.option(
    "--categories",
    type=click.IntRange(*int_limits(PESettingsModel, "categories")),
    help="PE: nearest categories to retrieve from.  [default: 1]",
)
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    help="PE: corpus folder with its index.  [default: popcorn-corpus]",
)
@click.option(
    "--candidates",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Best-of-N: write this many scripts (seeds S, S+1, ...), rank them with the text-only "
    "predictor, render the top --render-top, keep the best full score.",
)
@click.option(
    "--render-top",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Best-of-N: how many top-ranked candidates to render and score.",
)
@click.option(
    "--predictor",
    type=click.Path(path_type=Path),
    help="Score each clip with the predictor in this folder (by default: popcorn-predictor, "
    "when it holds a trained model).",
)
@click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    help="paper: every condition of the LLMPopcorn study; popcorn: Popcorn's improvements "
    "(see docs/profiles.md).  [default: popcorn]",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="Settings file.  [default: ./popcorn.toml if present]",
)
@media_options
def generate(
    query: str | None,
    queries_file: Path | None,
    as_json: bool,
    force: bool,
    pe: bool,
    config: Path | None,
    candidates: int,
    render_top: int,
    **flags: Any,
) -> None:
    """Write a title, a cover prompt and a 3-second video prompt for QUERY.

    Each query gets a run folder under --out with the script, the full LLM transcript, a
    manifest, and media: cover.png and clip.mp4 (by default a PREVIEW animatic made without a
    diffusion model; --video none --cover none skips them). A query already done with the
    same settings is not asked again; a batch that was interrupted picks up where it stopped.
    QUERY '-' reads the query from standard input (echo "an idea" | popcorn generate -).

    \b
    Examples:
      popcorn generate "A cat learning to skateboard"
      popcorn generate "Street food in Bangkok at night" --json
      popcorn generate --queries queries.csv --llm openai:gpt-4o --concurrency 8
      popcorn generate "How to cook ramen at home" --pe --refs 50 --categories 2
    """
    from popcorn.errors import UsageError
    from popcorn.pipeline import Pipeline
    from popcorn.writer.queries import STDIN, QueryList, read_queries, validate_query

    if (query is None) == (queries_file is None):
        raise UsageError("give either a QUERY or --queries FILE (see popcorn generate --help)")
    # The input first: a bad query or file fails at once, before any model is looked at.
    items = QueryList() if queries_file is None else read_queries(queries_file)
    if query == STDIN:
        query = _query_from_stdin()
    if query is not None:
        query = validate_query(query)
    deprecated_device_flags(flags)
    media = media_overrides(flags)
    with _failure_as_json(query if as_json and candidates == 1 else None):
        settings = settings_from_flags(config, flags, media)
        pipeline = Pipeline(settings, pe=pe, score="always" if flags["predictor"] else "auto")
        pipeline.check()
    if candidates > 1:
        if query is None:
            raise UsageError("--candidates needs one QUERY, not --queries")
        _best_of(pipeline, query, candidates, render_top, force, as_json)
        return
    if query is not None:
        from popcorn.cli.watch import StageWatch

        with _failure_as_json(query if as_json else None), StageWatch() as watch:
            result = pipeline.run(query, force=force, on_step=watch.step)
        if as_json:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            _show(result)
        warn((*result.script.warnings, *(result.media.warnings if result.media else ())))
        return

    assert queries_file is not None
    _batch(pipeline, items, force, as_json, queries_file)


_LLM_FLAGS = (
    "base_url", "timeout", "attempts", "drafts", "draft_seconds", "n_ctx", "n_gpu_layers",
    "device_map", "dtype", "load_in_4bit", "load_in_8bit", "batch_size",
)  # fmt: skip
_DECODING_FLAGS = ("temperature", "top_p", "repetition_penalty", "seed", "max_tokens")


def settings_from_flags(
    config: Path | None, flags: dict[str, Any], media: dict[str, Any] | None = None
) -> Settings:
    """The settings of ``generate`` (and ``serve``): flags over env over file over defaults."""
    from popcorn.config import load_settings

    return load_settings(
        config,
        {
            "llm": {
                "spec": flags.get("spec"),
                "extra": flags.get(LLM_OPTIONS.param),
                **{k: flags.get(k) for k in _LLM_FLAGS},
            },
            "decoding": {k: flags.get(k) for k in _DECODING_FLAGS},
            "run": {
                "out": flags.get("out"),
                "concurrency": flags.get("concurrency"),
                "profile": flags.get("profile"),
                "device": flags.get("device"),
            },
            "pe": {k: flags.get(k) for k in ("refs", "categories", "corpus")},
            "predictor": {"path": flags.get("predictor")},
            "media": media or {},
        },
    )


def _best_of(
    pipeline: Pipeline, query: str, candidates: int, render_top: int, force: bool, as_json: bool
) -> None:
    from rich.console import Console
    from rich.table import Table

    outcome = pipeline.best_of(query, candidates, render_top, force=force)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), ensure_ascii=False))
        return
    table = Table(title=shown(f"best of {candidates}: {query}"))
    for column in ("", "seed", "title", "text-only", "score"):
        table.add_column(column)
    for c in outcome.candidates:
        mark = "best" if c is outcome.winner else ""
        full = "" if c.score is None else f"{c.score.score:.3f}"
        table.add_row(mark, str(c.seed), shown(c.result.script.title), f"{c.text_only:.3f}", full)
    Console().print(table)
    click.echo(plain(f"winner: {outcome.winner.result.run_dir}"))


def _show(result: RunResult) -> None:
    from rich.console import Console
    from rich.table import Table

    script = result.script
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    # Everything in the right column came from the model or the user: shown literally.
    table.add_row("Title", shown(script.script.title))
    table.add_row("Cover prompt", shown(script.script.cover_prompt))
    table.add_row("Video prompt", shown(script.script.video_prompt))
    note = " (already done with these settings; --force redoes it)" if script.cached else ""
    table.add_row("Mode", "PE (references + reasoning)" if script.mode == "pe" else "basic")
    record = result.media.record if result.media else {}
    for role, label in (("video", "Clip"), ("cover", "Cover")):
        if record.get(role):
            kind = " (PREVIEW: no diffusion model)" if record[role]["preview"] else ""
            table.add_row(label, shown(f"{record[role]['file']}{kind}"))
    if result.score is not None:
        score = result.score
        where = (
            f", above {score.percentile:.0f}% of real videos"
            if score.percentile is not None
            else ""
        )
        table.add_row("Popularity", f"{score.score:.3f} predicted log2(1 + comments){where}")
    table.add_row("Run folder", shown(f"{script.run_dir}{note}"))
    if "title_shortened" in script.script.flags:
        table.add_row("Note", "the model's title was over 50 characters and was shortened")
    Console(soft_wrap=False).print(table)


def _batch(pipeline: Pipeline, items: QueryList, force: bool, as_json: bool, source: Path) -> None:
    from popcorn.cli.output import console
    from popcorn.errors import PopcornError
    from popcorn.pipeline import RunResult
    from popcorn.progress import Counts
    from popcorn.writer.queries import printable_query

    err = console(stderr=True)
    refused = items.refused
    if as_json:
        for row in refused:
            line = {"query": row.query, "line": row.line, "error": redact(row.reason)}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    out = pipeline.settings.run.out
    concurrency = pipeline.settings.run.concurrency
    if concurrency > 1 and not pipeline.generator.llm.concurrent:  # embedded, gguf:
        err.print(
            shown(
                f"{pipeline.generator.llm.spec} runs in this process: one query at a time", "yellow"
            )
        )
    # A bar on a terminal; in a pipe or a log, a line per item or per 5% with counts and ETA.
    progress = Counts(err)
    total = len({" ".join(item.query.split()) for item in items})  # duplicates run once
    progress.update("generating", 0, total, failed=0)
    failed = finished = 0

    def on_result(item: QueryItem, outcome: RunResult | Exception) -> None:
        nonlocal failed, finished
        finished += 1
        if isinstance(outcome, RunResult):
            line = outcome.to_dict()
        else:
            failed += 1
            line = {"query": printable_query(item.query, 2000), "error": redact(outcome)}
        if as_json:
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        progress.update("generating", finished, total, failed=failed)

    try:
        with progress:
            report = pipeline.run_many(items, force=force, on_result=on_result)
    except KeyboardInterrupt:
        done_count = progress.done("generating")
        err.print(
            shown(
                f"popcorn: interrupted after {done_count} of {len(items)} queries; finished runs "
                f"are kept in {out}: run the same command again to resume"
            )
        )
        sys.exit(130)

    scripts = report.scripts
    new = len(scripts.results) - scripts.cached
    summary = (
        f"{len(scripts.results)} of {len(items) - scripts.duplicates} done "
        f"({new} new, {scripts.cached} already done), {len(scripts.failures)} failed"
    )
    if scripts.duplicates:
        summary += f", {scripts.duplicates} duplicate queries skipped"
    if refused:
        summary += f", {len(refused)} refused"
    err.print(shown(f"{summary}; runs in {out}"))
    for row in refused[:10]:
        err.print(shown(f"  refused: {redact(row.reason)}"))
    for query, message in report.failures[:10]:
        err.print(shown(f"  failed: {printable_query(query, 60)!r}: {redact(message)}"))
    if scripts.stopped:
        raise PopcornError(f"batch stopped early: {scripts.stopped}")
    problems = []
    if report.failures:
        problems.append(f"{len(report.failures)} queries failed; rerun to retry them")
    if refused:
        rows, them = ("row was", "it") if len(refused) == 1 else ("rows were", "them")
        problems.append(
            f"{len(refused)} {rows} refused (listed above): fix {them} in "
            f"{printable_query(source.name, 200)} and rerun"
        )
    if problems:
        raise PopcornError("; ".join(problems))


@contextmanager
def _failure_as_json(query: str | None) -> Iterator[None]:
    """With ``--json`` and one QUERY, a failure also prints ``{"query": ..., "error": ...}`` on
    stdout, as a batch does for each query that fails, so a script reading stdout sees it; the
    error then ends the command as any error does (one line on stderr, exit 1)."""
    try:
        yield
    except Exception as err:
        if query is not None:
            line = {"query": query, "error": redact(one_line(err))}
            click.echo(json.dumps(line, ensure_ascii=False))
        raise


def _query_from_stdin() -> str:
    """``popcorn generate -``: the one query piped in (a line; several are a batch)."""
    from popcorn.errors import UsageError
    from popcorn.writer.queries import read_stdin

    text = read_stdin(64 * 2**10, "QUERY '-'").decode("utf-8", errors="surrogateescape")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        found = "no query" if not lines else f"{len(lines)} lines"
        raise UsageError(
            f"standard input holds {found}: QUERY '-' reads one line (--queries - reads one "
            "query a line)"
        )
    return lines[0]
