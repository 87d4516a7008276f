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
@click.option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.  [default: auto]")
@click.option(
    "--profile",
    type=click.Choice(["paper", "popcorn"]),
    help="paper: the LLMPopcorn study's conditions; popcorn: ours.  [default: popcorn]",
)
@click.option(
    "--timeout",
    type=click.IntRange(1, 7 * 24 * 3600),
    metavar="SECONDS",
    help="How long one request may run before its model process is stopped and replaced.  "
    "[default: 1800, 30 minutes]",
)
@click.option("--config", type=click.Path(path_type=Path), help="Settings file.")
def serve(
    host: str,
    port: int,
    llms: tuple[str, ...],
    out: Path | None,
    corpus: Path | None,
    predictor: Path | None,
    device: str | None,
    profile: str | None,
    timeout: int | None,
    config: Path | None,
) -> None:
    """Start the web app: one query runs Basic and PE side by side, with references, cover,
    clip and predicted popularity; past runs can be re-opened and downloaded. Uses the same
    settings as the CLI (popcorn.toml, POPCORN_* variables). The app answers only requests
    addressed to --host (and localhost names when that is a loopback address), and runs the
    models in a child process: a crash there, or a request past --timeout, fails one request,
    not the app. GET /api/health says whether the worker and the model process are alive."""
    from popcorn.app.requests import REQUEST_TIMEOUT, AppConfig
    from popcorn.app.server import listen, require_app_packages
    from popcorn.app.server import serve as run_server
    from popcorn.config import load_settings
    from popcorn.llm.registry import check_spec

    require_app_packages()

    settings = load_settings(
        config,
        {
            "run": {"out": out, "profile": profile, "device": device},
            "pe": {"corpus": corpus},
            "predictor": {"path": predictor},
        },
    )
    app_config = AppConfig(
        llms=list(dict.fromkeys(llms or (settings.llm.spec,))),
        host=host,
        settings=settings,
        timeout=REQUEST_TIMEOUT if timeout is None else float(timeout),
    )
    for spec in app_config.llms:
        check_spec(spec)  # a spec the page would offer only to fail every request with
    sock = listen(host, port)  # a taken port is a one-line error before anything is announced
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"popcorn: serving on http://{shown}:{port} (Ctrl-C stops)", err=True)
    run_server(app_config, sock)
