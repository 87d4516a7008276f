"""A click command whose ``--help`` lists its options in named groups, and an option whose help
is written only when help is shown (from the registries, which plugins extend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


class LazyHelpOption(click.Option):
    """An option whose help comes from ``help_text()`` when ``--help`` is shown, not when the
    command is declared: registry listings can change with the installed plugins, and reading
    them costs nothing on a command's normal path."""

    def __init__(self, *args: Any, help_text: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._help_text = help_text

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        # Written afresh each time: a plugin installed since the last help changes it.
        self.help = self._help_text()
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = None


class GroupedCommand(click.Command):
    """Options listed under headings: ``groups`` maps a heading to parameter names; options in
    no group are listed last under "Other"."""

    def __init__(self, *args: Any, groups: dict[str, list[str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.groups = groups or {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {
            p.name: p.get_help_record(ctx)
            for p in self.get_params(ctx)
            if isinstance(p, click.Option) and p.name is not None
        }
        placed: set[str] = set()
        for heading, names in [*self.groups.items(), ("Other", list(records))]:
            rows = [records[n] for n in names if n in records and n not in placed and records[n]]
            placed.update(names)
            if rows:
                with formatter.section(heading):
                    formatter.write_dl([r for r in rows if r is not None])
