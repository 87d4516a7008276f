"""``popcorn generate``: one query, or a batch from a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.cli.render import build_media_options, media_options

if TYPE_CHECKING:
    from popcorn.config import Settings
    from popcorn.generation import GenerateResult, Generator, QueryItem
    from popcorn.media.render import MediaOptions
    from popcorn.predictor.score import Predictor


@click.command()
@click.argument("query", required=False)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(path_type=Path),
    help="Batch: a .txt file (one query a line) or .csv/.jsonl with a 'prompt' column.",
)
@click.option(
    "--llm",
    "spec",
    metavar="SPEC",
    help="embedded (default), gguf:PATH, openai:MODEL, deepseek:MODEL, ollama:MODEL, "
    "hf:MODEL_ID. See 'popcorn llms'.",
)
@click.option("--base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for run folders.  [default: popcorn-runs]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: one object, or one line per query in a batch.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Parallel requests for API backends in a batch.  [default: 4]",
)
@click.option(
    "--force", is_flag=True, help="Redo queries even if a run with the same settings is done."
)
@click.option("--temperature", type=click.FloatRange(0, 2), help="[default: 0.7]")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="[default: 0.9]")
@click.option(
    "--repetition-penalty", type=click.FloatRange(0, 3, min_open=True), help="[default: 1.1]"
)
@click.option("--seed", type=click.IntRange(min=0), help="[default: 42]")
@click.option("--max-tokens", type=click.IntRange(16, 32768), help="[default: 1024]")
@click.option(
    "--attempts",
    type=click.IntRange(1, 10),
    help="Fresh tries when an answer cannot be parsed.  [default: 3]",
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
    help="llama.cpp layers on the GPU (-1 all).  [default: 0]",
)
@click.option("--device-map", help="hf: device placement, e.g. auto, cpu, cuda:0.  [default: auto]")
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
    "--pe", is_flag=True, help="Prompt enhancement: reference videos + a reasoning chain."
)
@click.option(
    "--refs",
    type=click.IntRange(0, 500),
    help="PE: references shown to the LLM (0: reasoning chain only).  [default: 10]",
)
@click.option(
    "--categories",
    type=click.IntRange(1, 50),
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

    \b
    Examples:
      popcorn generate "A cat learning to skateboard"
      popcorn generate "Street food in Bangkok at night" --json
      popcorn generate --queries queries.csv --llm openai:gpt-4o --concurrency 8
      popcorn generate "How to cook ramen at home" --pe --refs 50 --categories 2
    """
    from popcorn.errors import UsageError

    if (query is None) == (queries_file is None):
        raise UsageError("give either a QUERY or --queries FILE (see popcorn generate --help)")
    media = build_media_options(flags)
    media.check()
    settings = _settings(config, flags)
    scorer = _scorer(settings.predictor.path, explicit=flags["predictor"] is not None)
    generator = _generator(settings, pe)
    if candidates > 1:
        if query is None or scorer is None:
            raise UsageError(
                "--candidates needs one QUERY and a trained predictor (--predictor DIR)"
            )
        _best_of(
            generator, query, candidates, min(render_top, candidates), scorer, media, force, as_json
        )
        return
    if query is not None:
        result = generator.generate(query, force=force)
        stage = _render_one(result.run_dir, media, force)
        score = _score(result.run_dir, stage, scorer)
        if as_json:
            line = {**result.to_dict(), **_media_fields(result.run_dir, stage), **score}
            click.echo(json.dumps(line, ensure_ascii=False))
        else:
            _show(result, stage, score)
        for warning in (*result.warnings, *stage.get("warnings", ())):
            click.echo(f"popcorn: warning: {warning}", err=True)
        return

    from popcorn.queries import read_queries

    assert queries_file is not None
    _batch(generator, read_queries(queries_file), settings, force, as_json, media, scorer)


def _settings(config: Path | None, flags: dict[str, Any]) -> Settings:
    from popcorn.config import load_settings

    llm_keys = (
        "base_url",
        "timeout",
        "attempts",
        "n_ctx",
        "n_gpu_layers",
        "device_map",
        "dtype",
        "load_in_4bit",
        "load_in_8bit",
    )
    decoding_keys = ("temperature", "top_p", "repetition_penalty", "seed", "max_tokens")
    return load_settings(
        config,
        {
            "llm": {"spec": flags["spec"], **{k: flags[k] for k in llm_keys}},
            "decoding": {k: flags[k] for k in decoding_keys},
            "run": {"out": flags["out"], "concurrency": flags["concurrency"]},
            "pe": {
                "refs": flags["refs"],
                "categories": flags["categories"],
                "corpus": flags["corpus"],
            },
            "predictor": {"path": flags["predictor"]},
        },
    )


def _scorer(folder: Path, explicit: bool) -> Predictor | None:
    """The predictor to score clips with: the one in ``folder`` if trained there (an error if
    ``folder`` was named explicitly and holds none), else none."""
    from popcorn.predictor.score import Predictor

    if not explicit and not (folder / "predictor.json").is_file():
        return None
    return Predictor.load(folder)


def _score(run_dir: Path, stage: dict[str, Any], scorer: Predictor | None) -> dict[str, Any]:
    """``{"score": record}`` when there is a predictor and a clip, else ``{}``."""
    if scorer is None or "video" not in stage:
        return {}
    from popcorn.predictor.score import score_run

    return {"score": score_run(run_dir, scorer)}


def _generator(settings: Settings, pe: bool) -> Generator:
    from popcorn.generation import Generator
    from popcorn.llm.retry import RetryPolicy
    from popcorn.retrieval.enhance import PESettings

    pe_settings = (
        PESettings(
            refs=settings.pe.refs,
            categories=settings.pe.categories,
            corpus=settings.pe.corpus,
            embedder=settings.pe.embedder,
        )
        if pe
        else None
    )
    return Generator(
        settings.llm.spec,
        out=settings.run.out,
        decoding=settings.decoding.decoding(),
        attempts=settings.llm.attempts,
        retry=RetryPolicy(attempts=settings.llm.retries),
        options=settings.llm.options(),
        pe=pe_settings,
    )


def _best_of(
    generator: Generator,
    query: str,
    candidates: int,
    render_top: int,
    scorer: Predictor,
    media: MediaOptions,
    force: bool,
    as_json: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from popcorn.bestof import best_of

    outcome = best_of(generator, query, candidates, render_top, scorer, media, force)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), ensure_ascii=False))
        return
    table = Table(title=f"best of {candidates}: {query}")
    for column in ("", "seed", "title", "text-only", "score"):
        table.add_column(column)
    for c in outcome.candidates:
        mark = "best" if c is outcome.winner else ""
        full = "" if c.score is None else f"{c.score['score']:.3f}"
        table.add_row(mark, str(c.seed), c.result.script.title, f"{c.text_only:.3f}", full)
    Console().print(table)
    Console().print(f"winner: {outcome.winner.result.run_dir}", highlight=False)


def _render_one(run_dir: Path, media: MediaOptions, force: bool) -> dict[str, Any]:
    from popcorn.media.render import render, render_stage_by_stage

    if not media.memory.unload:
        return render(run_dir, media, force=force)
    from popcorn.llm.registry import release_models

    release_models()
    outcome = render_stage_by_stage([run_dir], media, force=force)[run_dir]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _media_fields(run_dir: Path, stage: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for role, key in (("video", "clip"), ("cover", "cover")):
        if role in stage:
            fields[key] = str(run_dir / stage[role]["file"])
            fields[f"{key}_preview"] = stage[role]["preview"]
    return fields


def _show(result: GenerateResult, stage: dict[str, Any], score: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Title", result.script.title)
    table.add_row("Cover prompt", result.script.cover_prompt)
    table.add_row("Video prompt", result.script.video_prompt)
    note = " (already done with these settings; --force redoes it)" if result.cached else ""
    table.add_row("Mode", "PE (references + reasoning)" if result.mode == "pe" else "basic")
    for role, label in (("video", "Clip"), ("cover", "Cover")):
        if role in stage:
            kind = " (PREVIEW: no diffusion model)" if stage[role]["preview"] else ""
            table.add_row(label, f"{stage[role]['file']}{kind}")
    if score:
        record = score["score"]
        where = (
            f", above {record['percentile']:.0f}% of real videos"
            if record["percentile"] is not None
            else ""
        )
        table.add_row("Popularity", f"{record['score']:.3f} predicted log2(1 + comments){where}")
    table.add_row("Run folder", f"{result.run_dir}{note}")
    if "title_shortened" in result.script.flags:
        table.add_row("Note", "the model's title was over 50 characters and was shortened")
    Console(soft_wrap=False).print(table)


def _batch(
    generator: Generator,
    items: list[QueryItem],
    settings: Settings,
    force: bool,
    as_json: bool,
    media: MediaOptions,
    scorer: Predictor | None,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from popcorn.errors import PopcornError
    from popcorn.generation import GenerateResult
    from popcorn.media.render import render, render_stage_by_stage

    err = Console(stderr=True)
    concurrency = settings.run.concurrency
    if concurrency > 1 and not generator.llm.concurrent:
        err.print(f"[yellow]{generator.llm.spec} runs in this process: one query at a time[/]")
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
    task = progress.add_task("generating", total=len(items), failed=0)
    failed = 0

    media_failures: list[tuple[str, str]] = []
    staged = media.memory.unload  # all scripts first, then all clips, then all covers
    done: list[GenerateResult] = []

    def emit(outcome: GenerateResult, stage: dict[str, Any] | PopcornError) -> None:
        if isinstance(stage, PopcornError):
            media_failures.append((outcome.query, f"media: {stage}"))
            stage = {}
        try:
            score = _score(outcome.run_dir, stage, scorer)
        except PopcornError as error:
            media_failures.append((outcome.query, f"score: {error}"))
            score = {}
        if as_json:
            line = {**outcome.to_dict(), **_media_fields(outcome.run_dir, stage), **score}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            sys.stdout.flush()

    def on_result(item: QueryItem, outcome: GenerateResult | Exception) -> None:
        nonlocal failed
        if isinstance(outcome, GenerateResult):
            if staged:
                done.append(outcome)
            else:
                # Media are rendered here, one at a time: GPU generators must not overlap.
                try:
                    emit(outcome, render(outcome.run_dir, media, force=force))
                except PopcornError as error:
                    emit(outcome, error)
        else:
            failed += 1
            if as_json:
                line = {"query": item.query, "error": str(outcome)}
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()
        progress.update(task, advance=1, failed=failed)

    try:
        with progress:
            report = generator.batch(
                items, concurrency=concurrency, force=force, on_result=on_result
            )
            if staged and done:
                from popcorn.llm.registry import release_models

                release_models()
                media_task = progress.add_task("rendering", total=2 * len(done), failed=0)
                stages = render_stage_by_stage(
                    [r.run_dir for r in done],
                    media,
                    force=force,
                    advance=lambda: progress.update(media_task, advance=1),
                )
                for outcome in done:
                    emit(outcome, stages[outcome.run_dir])
    except KeyboardInterrupt:
        done_count = int(progress.tasks[0].completed)
        err.print(
            f"popcorn: interrupted after {done_count} of {len(items)} queries; finished runs are "
            f"kept in {settings.run.out}: run the same command again to resume",
            highlight=False,
        )
        sys.exit(130)

    new = len(report.results) - report.cached
    summary = (
        f"{len(report.results)} of {len(items) - report.duplicates} done "
        f"({new} new, {report.cached} already done), {len(report.failures)} failed"
    )
    if report.duplicates:
        summary += f", {report.duplicates} duplicate queries skipped"
    err.print(f"{summary}; runs in {settings.run.out}", highlight=False)
    failures = report.failures + media_failures
    for query, message in failures[:10]:
        err.print(f"  failed: {query[:60]!r}: {message}", highlight=False, markup=False)
    if report.stopped:
        raise PopcornError(f"batch stopped early: {report.stopped}")
    if failures:
        raise PopcornError(f"{len(failures)} queries failed; rerun to retry them")
