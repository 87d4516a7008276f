"""A click command whose ``--help`` lists its options in named groups."""

from __future__ import annotations

from typing import Any

import click


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
