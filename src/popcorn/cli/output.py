"""Consoles for what the CLI prints, and the test of whether a person is reading it.

On a terminal Rich wraps long lines to the window. Piped into a file, a log or another
program, Rich assumes 80 columns and would hard-wrap each long line there with trailing spaces,
which breaks ``grep`` and makes logs hard to read: there, lines are left whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A Rich console on stdout (or stderr) that does not wrap lines when it is not a terminal."""
    from rich.console import Console

    made = Console(stderr=stderr)
    if not is_terminal(made):
        made.soft_wrap = True
    return made


def is_terminal(made: Console) -> bool:
    """Whether ``made`` writes to a real terminal (FORCE_COLOR alone, as in CI, is not one)."""
    isatty = getattr(made.file, "isatty", None)
    return bool(made.is_terminal and isatty is not None and isatty())


def json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """Print each row as one JSON object on its own line (what ``--json`` listings print)."""
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False))
