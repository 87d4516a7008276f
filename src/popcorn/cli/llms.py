"""``popcorn llms``: the LLM spec forms this installation understands."""

from __future__ import annotations

import click


@click.command()
def llms() -> None:
    """List the forms accepted by --llm, with what each one runs."""
    from popcorn.llm.registry import providers

    for info in providers():
        click.echo(f"{info.form:<18} {info.summary}")
