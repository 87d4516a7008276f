"""``popcorn study``: run a grid of LLMs x modes x generators x queries, resumably; show its
progress; write its report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

_file_argument = click.argument("study_file", type=click.Path(path_type=Path, dir_okay=False))
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group()
def study() -> None:
    """Studies: every combination of query, LLM, mode (basic, PE with N references and K
    categories), clip and cover generator and seed is a job in a ledger beside the study file
    (STUDY.study/); a study stopped at any moment resumes with 'study run' again.

    Studies run the paper profile (the LLMPopcorn study's conditions) unless the study file
    says profile = "popcorn". A study that scores with a predictor refuses PE references that
    the predictor's retrieval bank holds.

    \b
    Typical use:
      popcorn study check study.toml          # what is missing; runs nothing
      popcorn study run study.toml            # or --executor ray [--address HOST:PORT]
      popcorn study status study.toml         # jobs per state; why jobs failed
      popcorn study report study.toml         # STUDY.study/report/report.html

    See the module popcorn.study.spec (or docs/studies.md) for the study file's format.
    """


@study.command()
@_file_argument
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="local: this machine; ray: a Ray cluster (a model actor per GPU, [study] "
    "gpus_per_actor to share one); or an executor a plugin registers.",
)
@click.option("--address", help="Ray cluster address (default: start a local one).")
@click.option("--retry-failed", is_flag=True, help="Run failed jobs again from their failed stage.")
@click.option(
    "--no-check",
    is_flag=True,
    help="Skip the check before the first job (LLMs, predictor, PE pool, generators) and run "
    "anyway; the judge and leak checks still hold.",
)
@_json_option
def run(
    study_file: Path,
    executor: str,
    address: str | None,
    retry_failed: bool,
    no_check: bool,
    as_json: bool,
) -> None:
    """Run every job not yet done (scripts, then clips and covers, then scores).

    Checked first, as 'popcorn study check' does: a study whose jobs cannot run is refused
    with every reason, one line each, and nothing runs (--no-check runs it anyway). Also
    refused before any job runs when a PE mode's reference pool overlaps the predictor's
    bank. One run per study at a time: a second one is refused with the running one's pid.
    Exits 1 when every job of the study failed."""
    from popcorn.cli.output import console
    from popcorn.errors import PopcornError
    from popcorn.progress import Counts
    from popcorn.safety import plain
    from popcorn.study.run import run_study
    from popcorn.study.spec import load_study

    spec = load_study(study_file)
    err = console(stderr=True)
    # A bar per stage on a terminal; in a log, a line per job or per 5% with counts and ETA.
    bar = Counts(err)
    with _refusal_shown(as_json), bar:
        summary = run_study(spec, executor, address, retry_failed, bar.update, check=not no_check)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        failed = sum(summary.failed.values())
        ran = ", ".join(f"{n} {s}" for s, n in summary.ran.items()) or "nothing"
        err.print(
            f"{summary.jobs} jobs ({summary.new} new, {summary.recovered} resumed after a stop; "
            f"profile {summary.profile}): ran {ran}; {failed} failed -> {plain(spec.folder)}",
            highlight=False,
            markup=False,
        )
        if failed and not summary.all_failed:
            err.print(
                "  see 'popcorn study status' and the report's failure table", highlight=False
            )
    if summary.all_failed:
        # Nothing came out of the study: a script or a CI job must not take that for success.
        first = f" (first error: {summary.first_error})" if summary.first_error else ""
        raise PopcornError(
            f"all {summary.jobs} jobs failed{first}: see 'popcorn study status {study_file}', "
            f"fix the cause, then run 'popcorn study run {study_file} --retry-failed'"
        )


@contextmanager
def _refusal_shown(as_json: bool) -> Iterator[None]:
    """Show a study's problems (:class:`StudyNotReadyError`) one line each and exit 1; a
    single problem goes on as any error does, in one line."""
    from popcorn.safety import one_line, redact
    from popcorn.study.check import StudyNotReadyError

    try:
        yield
    except StudyNotReadyError as err:
        if as_json:
            click.echo(json.dumps({"ready": False, "problems": err.problems}))
        if len(err.problems) == 1:
            raise
        lines = [
            f"popcorn: error: {err.study_file}: {len(err.problems)} problems, nothing was run "
            "(fix them and run again; --no-check runs it anyway):",
            *(f"  - {redact(one_line(problem))}" for problem in err.problems),
        ]
        click.echo("\n".join(lines), err=True)
        raise SystemExit(1) from None


@study.command()
@_file_argument
@click.option("--retry-failed", is_flag=True, help="Count failed jobs as still to do.")
@_json_option
def check(study_file: Path, retry_failed: bool, as_json: bool) -> None:
    """Check, without running anything, that the jobs not yet done can run: each LLM
    (its package, model file or download, API key, server), the predictor (trained, of the
    profile's recipe), the PE pool (corpus, index, the predictor's test split under paper) and
    the clip and cover generators. Prints every problem, one line each, and exits 1 if any."""
    from popcorn.study.check import StudyNotReadyError, check_study
    from popcorn.study.spec import load_study

    spec = load_study(study_file)
    problems = check_study(spec, retry_failed)
    if not problems:
        ready = {"ready": True, "problems": []}
        click.echo(json.dumps(ready) if as_json else f"{study_file.name}: ready to run")
        return
    with _refusal_shown(as_json):
        raise StudyNotReadyError(spec, problems)


@study.command()
@_file_argument
@_json_option
def status(study_file: Path, as_json: bool) -> None:
    """Jobs per stage and status, overall and per configuration, and each configuration's
    most common failure reasons (stage, reason, jobs, one job's error)."""
    from rich.console import Console
    from rich.table import Table

    from popcorn.safety import shown
    from popcorn.study.run import status as get_status
    from popcorn.study.spec import load_study

    found = get_status(load_study(study_file))
    if as_json:
        click.echo(json.dumps(found))
        return
    states = sorted({s for c in found["configs"].values() for s in c})
    table = Table(title=f"{found['jobs']} jobs (profile {found['profile']})")
    table.add_column("configuration (LLM | mode | clip | cover)")
    for state in states:
        table.add_column(state, justify="right")
    for config, counts in sorted(found["configs"].items()):
        # A model name is the study file's text: shown as written, never read as markup.
        table.add_row(shown(config), *(str(counts.get(s, 0)) for s in states))
    Console().print(table)
    if found["in_ledger"] < found["jobs"]:
        Console().print(f"{found['jobs'] - found['in_ledger']} jobs not started yet")
    for line in failure_lines(found["failures"]):
        click.echo(line)


def failure_lines(failures: dict[str, dict[str, Any]]) -> list[str]:
    """Per configuration with failed jobs, its most common reasons, one short line each:
    ``CONFIG: N failed: STAGE REASON (JOBS): EXAMPLE``."""
    from popcorn.safety import one_line

    if not failures:
        return []
    lines = ["most common failure reasons (per configuration):"]
    for config, found in sorted(failures.items()):
        for each in found["reasons"]:
            example = each["example"][:100]
            line = f"{config}: {found['failed']} failed: {each['stage']} {each['reason']} "
            lines.append("  " + one_line(f"{line}({each['jobs']}): {example}"))
    return lines


@study.command()
@_file_argument
@_json_option
def report(study_file: Path, as_json: bool) -> None:
    """Write the report (Markdown, HTML, figures, results table as CSV and parquet)."""
    from popcorn.safety import plain
    from popcorn.study.report import write_report
    from popcorn.study.spec import load_study

    spec = load_study(study_file)
    written = write_report(spec)
    if as_json:
        click.echo(json.dumps(written))
        return
    page = plain(spec.folder / "report" / "report.html")
    click.echo(f"report: {page} ({len(written['files'])} files)")
