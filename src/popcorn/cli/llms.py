"""``popcorn llms``: the LLM spec forms this installation understands."""

from __future__ import annotations

import click

from popcorn.safety import one_line


@click.command()
def llms() -> None:
    """List the forms accepted by --llm, with what each one runs and the options of its own
    (--llm-opt); an installed plugin that cannot be loaded is listed as broken, with its
    error."""
    from popcorn.llm.registry import LLMS, broken_providers, providers

    # A plugin's form and summary are its own text: shown without its control characters.
    for info in providers():
        click.echo(f"{one_line(info.form):<18} {one_line(info.summary)}")
        for option, text in LLMS.entry(info.name).options().items():
            click.echo(f"{'':<18} --llm-opt {one_line(option)}=...: {one_line(text)}")
    for broken in broken_providers():
        plugin = f" (plugin: {one_line(broken.plugin)})" if broken.plugin else ""
        name = one_line(broken.name) or "?"
        click.echo(f"{name:<18} broken: {one_line(broken.error)}{plugin}")
