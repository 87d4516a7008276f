"""``popcorn runs``: list, show, open and delete the runs in the run store."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.safety import one_line, plain, shown

if TYPE_CHECKING:
    from popcorn.runs.store import Run


def _out_option(func: Any) -> Any:
    return click.option(
        "--out",
        type=click.Path(path_type=Path),
        help="The run store.  [default: popcorn-runs, or [run] out in popcorn.toml]",
    )(func)


def _store(out: Path | None) -> Path:
    from popcorn.config import load_settings

    return load_settings(None, {"run": {"out": out}}).run.out


def _summary(run: Run) -> dict[str, Any]:
    m = run.manifest
    script = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        script = run.script()
    score = (m.stages.get("score") or {}).get("score")
    return {
        "run": run.path.name,
        "created_at": m.created_at,
        "status": m.status,
        "profile": getattr(m, "profile", None),
        "mode": m.mode,
        "llm": m.llm.get("spec"),
        "query": m.query,
        "title": script.title if script else None,
        "score": score,
        "files": dict(m.files),
        "error": (m.error or {}).get("message"),
    }


def _find(store: Path, name: str) -> Run:
    """The run called ``name`` (its folder name, or a unique start of it) in ``store``."""
    from popcorn.errors import UsageError
    from popcorn.runs.store import Run, RunStore

    exact = store / name
    if "/" not in name and exact.is_dir() and not exact.is_symlink():
        return Run.load(exact)
    matches = [r for r in RunStore(store) if r.path.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run {name!r} in {str(store)!r}: see 'popcorn runs list'")
    raise UsageError(f"{len(matches)} runs start with {name!r}: give more of the name")


@click.group()
def runs() -> None:
    """The runs in the run store (--out): list them, show one, open its clip, delete.

    \b
    Examples:
      popcorn runs list --status failed
      popcorn runs show a-cat-learning-to-skateboard-1a2b
      popcorn runs open a-cat --folder
      popcorn runs delete a-cat-learning-to-skateboard-1a2b --yes
    """


@runs.command("list")
@_out_option
@click.option("--query", "contains", help="Only runs whose query contains this text.")
@click.option("--status", type=click.Choice(["done", "failed", "running"]))
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def list_runs(
    out: Path | None, contains: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """The newest runs first."""
    from rich.console import Console
    from rich.table import Table

    from popcorn.runs.store import RunStore

    found = [
        _summary(r)
        for r in RunStore(_store(out))
        if (status is None or r.status == status)
        and (contains is None or contains.lower() in r.manifest.query.lower())
    ]
    found = sorted(found, key=lambda r: str(r["created_at"]), reverse=True)[:limit]
    if as_json:
        for row in found:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not found:
        click.echo(plain(f"no runs in {_store(out)}"), err=True)
        return
    table = Table(box=None, padding=(0, 1))
    for column in ("created", "status", "mode", "score", "title / query", "run"):
        table.add_column(column, overflow="fold")
    for row in found:
        score = "" if row["score"] is None else f"{row['score']:.2f}"
        text = row["title"] or one_line(row["query"])
        table.add_row(
            str(row["created_at"])[:16].replace("T", " "),
            row["status"],
            row["mode"],
            score,
            shown(text[:70]),
            shown(row["run"]),
        )
    Console().print(table)


@runs.command()
@click.argument("name")
@_out_option
@click.option("--json", "as_json", is_flag=True, help="The whole manifest as JSON.")
def show(name: str, out: Path | None, as_json: bool) -> None:
    """One run: its query, script, media, score and files."""
    from rich.console import Console
    from rich.table import Table

    run = _find(_store(out), name)
    if as_json:
        click.echo(json.dumps(run.manifest.model_dump(mode="json"), ensure_ascii=False))
        return
    row = _summary(run)
    script = run.script()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("Run", shown(run.path))
    table.add_row("Query", shown(row["query"]))
    table.add_row("Status", shown(f"{row['status']} ({row['mode']}, {row['llm']})"))
    if script is not None:
        table.add_row("Title", shown(script.title))
        table.add_row("Cover prompt", shown(script.cover_prompt))
        table.add_row("Video prompt", shown(script.video_prompt))
    if row["score"] is not None:
        table.add_row("Popularity", f"{row['score']:.3f} predicted log2(1 + comments)")
    if row["error"]:
        table.add_row("Error", shown(one_line(row["error"])))
    table.add_row("Files", shown(", ".join(sorted(row["files"].values()))))
    Console(soft_wrap=False).print(table)


@runs.command("open")
@click.argument("name")
@_out_option
@click.option("--folder", is_flag=True, help="Open the run folder instead of its clip.")
def open_run(name: str, out: Path | None, folder: bool) -> None:
    """Open a run's clip (or cover, or folder) with this machine's default application."""
    from popcorn.errors import UsageError

    run = _find(_store(out), name)
    files = run.manifest.files
    target = run.path
    if not folder:
        chosen = files.get("clip") or files.get("cover")
        if not chosen:
            raise UsageError(f"run {run.path.name} has no clip or cover yet: --folder opens it")
        target = run.path / chosen
    click.echo(plain(str(target)))
    if click.launch(str(target), locate=False) != 0:
        raise UsageError(f"no application opened {str(target)!r} (no desktop here?)")


@runs.command()
@click.argument("names", nargs=-1, required=True)
@_out_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(names: tuple[str, ...], out: Path | None, yes: bool) -> None:
    """Delete runs (their folders, media included). A run another process is writing is left
    alone."""
    from popcorn.errors import UsageError
    from popcorn.runs.lock import LockedError

    store = _store(out)
    chosen = [_find(store, name) for name in names]
    if not yes:
        listed = ", ".join(r.path.name for r in chosen)
        if not click.confirm(plain(f"delete {len(chosen)} run(s): {listed}?"), default=False):
            raise UsageError("nothing deleted")
    for run in chosen:
        if run.path.is_symlink() or run.path.parent.resolve() != store.resolve():
            raise UsageError(f"{run.path.name} is not a run folder inside {str(store)!r}")
        try:
            with run.lock(wait=0):
                shutil.rmtree(run.path)
        except LockedError as err:
            raise UsageError(f"{run.path.name} was not deleted: {err}") from None
        except FileNotFoundError:
            pass  # the lock's release found the folder gone: that is what was asked
        click.echo(plain(f"deleted {run.path.name}"), err=True)
