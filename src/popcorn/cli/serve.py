"""``popcorn serve``: the web app."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 exposes the app to the network.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--llm",
    "llms",
    multiple=True,
    help="LLM specs offered in the page (repeat); default: the configured one.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Run store.  [default: popcorn-runs]")
@click.option("--corpus", type=click.Path(path_type=Path), help="PE corpus folder.")
@click.option("--predictor", type=click.Path(path_type=Path), help="Predictor folder.")
@click.option("--config", type=click.Path(path_type=Path), help="Settings file.")
def serve(
    host: str,
    port: int,
    llms: tuple[str, ...],
    out: Path | None,
    corpus: Path | None,
    predictor: Path | None,
    config: Path | None,
) -> None:
    """Start the web app: one query runs Basic and PE side by side, with references, cover,
    clip and predicted popularity; past runs can be re-opened and downloaded. Uses the same
    settings as the CLI (popcorn.toml, POPCORN_* variables)."""
    from popcorn.app.server import serve as run_server
    from popcorn.app.work import AppConfig
    from popcorn.config import load_settings

    settings = load_settings(
        config,
        {"run": {"out": out}, "pe": {"corpus": corpus}, "predictor": {"path": predictor}},
    )
    app_config = AppConfig(
        out=settings.run.out.resolve(),
        corpus=settings.pe.corpus.resolve(),
        predictor=settings.predictor.path.resolve(),
        llms=list(dict.fromkeys(llms or (settings.llm.spec,))),
    )
    click.echo(f"popcorn: serving on http://{host}:{port} (Ctrl-C stops)", err=True)
    run_server(app_config, host=host, port=port)
