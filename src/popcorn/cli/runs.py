"""``popcorn runs``: list, show, open and delete the runs in the run store."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from popcorn.errors import PopcornError
from popcorn.safety import one_line, plain, redact, shown

if TYPE_CHECKING:
    from popcorn.runs.store import Run
    from popcorn.script import Script


def _out_option(func: Any) -> Any:
    return click.option(
        "--out",
        type=click.Path(path_type=Path),
        help="The run store.  [default: popcorn-runs, or [run] out in popcorn.toml]",
    )(func)


def _store(out: Path | None) -> Path:
    from popcorn.config import load_settings

    return load_settings(None, {"run": {"out": out}}).run.out


def _note(message: str) -> None:
    click.echo(f"popcorn: note: {one_line(message)}", err=True)


def _script(run: Run) -> tuple[Script | None, str | None]:
    """The run's script, or None and why when its script file is damaged."""
    try:
        return run.script(), None
    except (PopcornError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        name = run.manifest.files.get("script", "script.json")
        return None, f"{run.path.name}: its {name} cannot be read ({one_line(err)[:200]})"


def _score(stages: dict[str, Any]) -> float | None:
    """The predicted popularity a manifest records, when it is a finite number."""
    record = stages.get("score")
    value = record.get("score") if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _summary(run: Run, notes: list[str] | None = None) -> dict[str, Any]:
    m = run.manifest
    script, problem = _script(run)
    if problem and notes is not None:
        notes.append(problem)
    error = m.error.get("message") if isinstance(m.error, dict) else None
    return {
        "run": run.path.name,
        "created_at": m.created_at,
        "status": m.status,
        "profile": getattr(m, "profile", None),
        "mode": m.mode,
        "llm": m.llm.get("spec"),
        "query": m.query,
        "title": script.title if script else None,
        "score": _score(m.stages),
        "files": dict(m.files),
        "error": error,
    }


def _scan(store: Path, prefix: str = "") -> list[Run]:
    """The readable runs in ``store``; a note on stderr for each folder skipped (of those whose
    name starts with ``prefix``), so one damaged folder never hides the others."""
    from popcorn.runs.store import RunStore

    runs, skipped = RunStore(store).scan_folders()
    for path, note in skipped:
        if path.name.startswith(prefix):
            _note(note)
    return runs


def _find(store: Path, name: str) -> Run:
    """The run called ``name`` (its folder name, or a unique start of it) in ``store``; a
    damaged folder of that exact name is a one-line error saying why."""
    from popcorn.errors import UsageError
    from popcorn.runs.store import Run

    exact = _exact(store, name)
    if exact is not None:
        return Run.load(exact)
    matches = [r for r in _scan(store, name) if r.path.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run {name!r} in {str(store)!r}: see 'popcorn runs list'")
    raise UsageError(f"{len(matches)} runs start with {name!r}: give more of the name")


def _exact(store: Path, name: str) -> Path | None:
    """The folder ``name`` directly in ``store``, if it is a real folder (not a link)."""
    if not name or "/" in name or name in (".", ".."):
        return None
    path = store / name
    try:
        return path if stat.S_ISDIR(os.lstat(path).st_mode) else None
    except OSError:
        return None


@click.group()
def runs() -> None:
    """The runs in the run store (--out): list them, show one, open its clip, delete.

    \b
    Examples:
      popcorn runs list --status failed
      popcorn runs show a-cat-learning-to-skateboard-1a2b
      popcorn runs show a-cat --transcript
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
    """The newest runs first: a table on a terminal; piped, one run a line with tab-separated
    columns (created, status, mode, score, title / query, run) after a header line."""
    from rich.table import Table

    from popcorn.cli.output import console, is_terminal

    notes: list[str] = []
    found = [
        _summary(r, notes)
        for r in _scan(_store(out))
        if (status is None or r.status == status)
        and (contains is None or contains.lower() in r.manifest.query.lower())
    ]
    found = sorted(found, key=lambda r: str(r["created_at"]), reverse=True)[:limit]
    for note in notes:
        _note(note)
    if as_json:
        for row in found:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not found:
        click.echo(plain(f"no runs in {_store(out)}"), err=True)
        return
    rows = [_list_row(row) for row in found]
    if not is_terminal(console()):
        # A pipe or a file: one run a line, tab-separated, full names, no colour or wrapping.
        for cells in [list(_LIST_COLUMNS), *rows]:
            click.echo("\t".join(cells))
        return
    screen = console()
    table = Table(box=None, padding=(0, 1))
    for column in _LIST_COLUMNS:
        table.add_column(column, no_wrap=True)
    room = _title_room(rows, screen.width)
    for cells in rows:
        title = cells[4] if len(cells[4]) <= room else cells[4][: room - 1] + "…"
        table.add_row(*(shown(cell) for cell in [*cells[:4], title, cells[5]]))
    screen.print(table)


def _title_room(rows: list[list[str]], width: int) -> int:
    """How wide the title column can be on a terminal ``width`` wide: one line a run, and the
    title gives way so that the run's name, which the other commands take, stays whole."""
    others = [
        max(len(column), *(len(cells[i]) for cells in rows))
        for i, column in enumerate(_LIST_COLUMNS)
        if i != 4
    ]
    return max(12, width - sum(others) - 2 * len(_LIST_COLUMNS))


_LIST_COLUMNS = ("created", "status", "mode", "score", "title / query", "run")


def _list_row(row: dict[str, Any]) -> list[str]:
    """A run's cells for ``runs list``: plain text with no tabs or newlines."""
    score = "" if row["score"] is None else f"{row['score']:.2f}"
    text = one_line(row["title"] or row["query"])[:70]
    created = str(row["created_at"])[:16].replace("T", " ")
    return [
        one_line(cell) for cell in (created, row["status"], row["mode"], score, text, row["run"])
    ]


@runs.command()
@click.argument("name")
@_out_option
@click.option("--json", "as_json", is_flag=True, help="The whole manifest as JSON.")
@click.option(
    "--transcript",
    is_flag=True,
    help="The LLM transcript instead: each attempt's messages, the model's answer and what "
    "became of it (with --json: the transcript file as it is).",
)
def show(name: str, out: Path | None, as_json: bool, transcript: bool) -> None:
    """One run: its query, script, media, score and files."""
    from rich.console import Console
    from rich.table import Table

    run = _find(_store(out), name)
    if transcript:
        _show_transcript(run, as_json)
        return
    if as_json:
        click.echo(json.dumps(run.manifest.model_dump(mode="json"), ensure_ascii=False))
        return
    notes: list[str] = []
    row = _summary(run, notes)
    script, _ = _script(run)
    for note in notes:
        _note(note)
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


def _show_transcript(run: Run, as_json: bool) -> None:
    """The run's transcript: every attempt's messages, the answer and its outcome, as plain
    text (the model's words and the prompts are shown literally, without control sequences)."""
    from popcorn.errors import RunStoreError

    name = run.manifest.files.get("transcript", "transcript.json")
    try:
        found = run.read_json(name)
        attempts = found["attempts"]
    except FileNotFoundError:
        raise RunStoreError(
            f"run {run.path.name} has no {name}: no model was asked yet, or the file was "
            f"deleted (see 'popcorn runs show {run.path.name}')"
        ) from None
    except (PopcornError, OSError, ValueError, KeyError, TypeError) as err:
        raise RunStoreError(
            f"run {run.path.name}'s {name} cannot be read ({one_line(err)[:200]})"
        ) from None
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    lines: list[str] = []
    for attempt in attempts if isinstance(attempts, list) else []:
        lines += _attempt_lines(attempt if isinstance(attempt, dict) else {})
    text = redact(plain("\n".join(lines))) if lines else f"{run.path.name}: no attempts recorded"
    click.echo(text)


def _attempt_lines(attempt: dict[str, Any]) -> list[str]:
    """One attempt of a transcript as text: a heading, each message, the answer, the outcome."""
    heading = f"=== attempt {attempt.get('attempt', '?')}"
    if "draft" in attempt:
        heading += f", draft {attempt['draft']}"
    seconds = attempt.get("seconds")
    took = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "time not recorded"
    heading += f" (seed {attempt.get('seed', '?')}, {took})"
    lines = [heading]
    for message in attempt.get("messages") or []:
        if isinstance(message, dict):
            lines += [f"--- {message.get('role', '?')}", str(message.get("content", ""))]
    lines += ["--- answer", str(attempt.get("raw", ""))]
    outcome = attempt.get("outcome") or {}
    if outcome.get("ok"):
        lines.append("--- outcome: kept")
    else:
        why = " ".join(str(outcome.get(k) or "") for k in ("reason", "detail")).strip()
        lines.append(f"--- outcome: not kept ({one_line(why) or 'no reason recorded'})")
    gate = attempt.get("gate")
    if isinstance(gate, dict) and not gate.get("ok", True):
        lines.append(f"--- quality gate: {one_line(gate.get('reason') or '')}")
    return [*lines, ""]


@runs.command("open")
@click.argument("name")
@_out_option
@click.option("--folder", is_flag=True, help="Open the run folder instead of its clip.")
def open_run(name: str, out: Path | None, folder: bool) -> None:
    """Open a run's clip (or cover, or folder) with this machine's default application. With
    no desktop (no display, or the opener fails) it says so in one line, with the path to open
    by hand, and exits 1."""
    from popcorn.errors import UsageError

    run = _find(_store(out), name)
    files = run.manifest.files
    target = run.path
    if not folder:
        role = "clip" if files.get("clip") else "cover"
        chosen = files.get(role)
        if not chosen:
            raise UsageError(f"run {run.path.name} has no clip or cover yet: --folder opens it")
        target = _own_file(run, role, chosen)
    problem = _open_with_desktop(target)
    if problem is not None:
        raise UsageError(f"{problem}: open {plain(str(target))} by hand (or copy it to a desktop)")
    click.echo(plain(str(target)))


def _open_with_desktop(target: Path) -> str | None:
    """Ask the desktop to open ``target``; None when it took it, else why not. The opener's own
    messages (xdg-open's, a browser's) are not shown: they say nothing the user can act on."""
    import subprocess

    if sys.platform == "win32":
        try:
            os.startfile(target)  # type: ignore[attr-defined]  # Windows only
        except OSError as err:
            return f"Windows could not open it ({one_line(err.strerror or err)})"
        return None
    if sys.platform == "darwin":
        opener = ["open", str(target)]
    elif not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    else:
        opener = ["xdg-open", str(target)]
    quiet = subprocess.DEVNULL
    try:
        process = subprocess.Popen(opener, stdin=quiet, stdout=quiet, stderr=quiet)
    except OSError:
        return f"{opener[0]} is not installed"
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None  # still running: the application it started is showing the file
    return None if code == 0 else f"{opener[0]} could not open it (exit status {code})"


def _own_file(run: Run, role: str, name: str) -> Path:
    """``name`` as a regular file directly inside the run folder: a manifest can name any path
    (``/etc/passwd``, ``../x``, a link), and only the run's own files are opened."""
    from popcorn.errors import RunStoreError

    refused = RunStoreError(
        f"run {run.path.name}'s manifest names {name[:200]!r} as its {role}, which is not a file "
        "of the run folder: not opened (render the run again to replace it)"
    )
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise refused
    path = run.path / name
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise refused
        if path.resolve().parent != run.path.resolve():
            raise refused
    except FileNotFoundError:
        raise RunStoreError(
            f"run {run.path.name} has no {name} any more: render it again ('popcorn render "
            f"{run.path}')"
        ) from None
    except OSError:
        raise refused from None
    return path


@runs.command()
@click.argument("names", nargs=-1, required=True)
@_out_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force",
    is_flag=True,
    help="Also delete a damaged run folder (one whose manifest cannot be read), named in full.",
)
def delete(names: tuple[str, ...], out: Path | None, yes: bool, force: bool) -> None:
    """Delete runs (their folders, media included). A run another process is writing is left
    alone."""
    from popcorn.errors import UsageError

    store = _store(out)
    chosen = [_chosen(store, name, force) for name in names]
    if not yes:
        if not sys.stdin.isatty():
            # Nobody can answer the question: a script or a pipe says --yes itself.
            raise UsageError("runs delete asks before deleting: add --yes when no one can answer")
        listed = ", ".join(path.name for path in chosen)
        if not click.confirm(plain(f"delete {len(chosen)} run(s): {listed}?"), default=False):
            raise UsageError("nothing deleted")
    for path in chosen:
        _delete(store, path)
        click.echo(plain(f"deleted {path.name}"), err=True)


def _chosen(store: Path, name: str, force: bool) -> Path:
    """The folder to delete for ``name``; a damaged one only with ``force``."""
    from popcorn.errors import RunStoreError
    from popcorn.runs.store import MANIFEST

    try:
        return _find(store, name).path
    except RunStoreError as err:
        exact = _exact(store, name)
        if exact is None or not os.path.lexists(exact / MANIFEST):
            raise  # not a run at all: not ours to delete
        if not force:
            raise RunStoreError(
                f"{one_line(err)} ('popcorn runs delete {name} --force' deletes it anyway)"
            ) from None
        return exact


def _delete(store: Path, path: Path) -> None:
    from popcorn.errors import UsageError
    from popcorn.runs.lock import LockedError
    from popcorn.runs.store import lock_folder

    try:
        inside = not path.is_symlink() and path.parent.resolve() == store.resolve()
    except OSError:
        inside = False
    if not inside:
        raise UsageError(f"{path.name} is not a run folder inside {str(store)!r}")
    try:
        with lock_folder(path, wait=0):
            shutil.rmtree(path)
    except LockedError as err:
        raise UsageError(f"{path.name} was not deleted: {err}") from None
    except FileNotFoundError:
        pass  # gone already: that is what was asked
    except OSError as err:
        raise UsageError(
            f"{path.name} was not entirely deleted: {err.strerror or err}"
            f"{_where(err.filename)} (check its permissions, then delete it again)"
        ) from None


def _where(filename: object) -> str:
    return f" ({plain(filename)!r})" if isinstance(filename, str) else ""
