"""``popcorn llms``: the LLM spec forms this installation understands."""

from __future__ import annotations

from typing import Any

import click

from popcorn.cli.output import json_lines
from popcorn.safety import one_line


@click.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object a line: name, form, summary, plugin, options (or broken: why).",
)
def llms(as_json: bool) -> None:
    """List the forms accepted by --llm, with what each one runs and the options of its own
    (--llm-opt); an installed plugin that cannot be loaded is listed as broken, with its
    error."""
    rows = _listing()
    if as_json:
        json_lines(rows)
        return
    for row in rows:
        if "broken" in row:
            plugin = f" (plugin: {row['plugin']})" if row["plugin"] else ""
            click.echo(f"{row['name'] or '?':<18} broken: {row['broken']}{plugin}")
            continue
        click.echo(f"{row['form']:<18} {row['summary']}")
        for option, text in row["options"].items():
            click.echo(f"{'':<18} --llm-opt {option}=...: {text}")


def _listing() -> list[dict[str, Any]]:
    """Every backend that loads, then every plugin that does not, as plain data. A plugin's
    form, summary and error are its own text: kept to one line without control characters."""
    from popcorn.llm.registry import LLMS, broken_providers, providers

    rows: list[dict[str, Any]] = []
    for info in providers():
        options = LLMS.entry(info.name).options()
        rows.append(
            {
                "name": one_line(info.name),
                "form": one_line(info.form),
                "summary": one_line(info.summary),
                "plugin": one_line(info.plugin) if info.plugin else None,
                "options": {one_line(k): one_line(v) for k, v in options.items()},
            }
        )
    for broken in broken_providers():
        rows.append(
            {
                "name": one_line(broken.name),
                "plugin": one_line(broken.plugin) if broken.plugin else None,
                "broken": one_line(broken.error),
            }
        )
    return rows
