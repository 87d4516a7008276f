"""Entry point: the command group and the boundary that turns our errors into one line."""

from __future__ import annotations

import io
import logging
import os
import sys

import click

from popcorn import __version__
from popcorn.errors import PopcornError, missing_extra
from popcorn.safety import one_line, plain, redact

_COMMANDS = {
    "corpus": ("popcorn.cli.corpus", "corpus"),
    "doctor": ("popcorn.cli.doctor", "doctor"),
    "generate": ("popcorn.cli.generate", "generate"),
    "generators": ("popcorn.cli.render", "generators"),
    "llms": ("popcorn.cli.llms", "llms"),
    "predictor": ("popcorn.cli.predictor", "predictor"),
    "pull": ("popcorn.cli.pull", "pull"),
    "render": ("popcorn.cli.render", "render"),
    "runs": ("popcorn.cli.runs", "runs"),
    "score": ("popcorn.cli.predictor", "score"),
    "serve": ("popcorn.cli.serve", "serve"),
    "study": ("popcorn.cli.study", "study"),
}


class _LazyGroup(click.Group):
    """Imports a command's module only when that command (or its help) is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        from importlib import import_module

        command: click.Command = getattr(import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="popcorn")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (retries, loads) to stderr.")
@click.option(
    "--debug", is_flag=True, envvar="POPCORN_DEBUG", help="Show full tracebacks for errors."
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, debug: bool) -> None:
    """Popcorn turns a one-line idea into a micro-video: an LLM writes a title, a cover-image
    prompt and a 3-second video prompt, diffusion models (or a preview animatic) render the
    cover and the clip, and a trained predictor scores its popularity. Runs are saved under
    --out and resumed; studies cross LLMs, prompt enhancement and generators.

    \b
    Examples:
      popcorn generate "A cat learning to skateboard"
      popcorn generate --queries queries.csv --llm deepseek:deepseek-chat --concurrency 8
      popcorn corpus import microlens ~/data/MicroLens-100k && popcorn corpus index
      popcorn generate "How to cook ramen at home" --pe --refs 10
      popcorn predictor features --videos ~/data/MicroLens-100k/videos && popcorn predictor train
      popcorn study run study.toml && popcorn study report study.toml
      popcorn serve
    """
    ctx.obj = {"debug": debug}
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter("popcorn: %(levelname)s: %(message)s"))
    # Other libraries stay at WARNING: -v is about Popcorn's own events (loads, cache hits,
    # retries, stage timings), not transformers' or httpx's INFO noise.
    handler.addFilter(_not_printed_already)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("popcorn").setLevel(logging.INFO if verbose else logging.WARNING)


def _not_printed_already(record: logging.LogRecord) -> bool:
    """False for a record a library's own handler prints already: huggingface_hub gives its
    logger a handler of its own and still passes records on to ours, which would show each
    of its warnings twice."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


class _SafeFormatter(logging.Formatter):
    """Log lines can quote a model's answer or a server's error body: no terminal control
    sequences and no credentials reach stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(plain(super().format(record)))


def _error_line(prefix: str, message: object) -> None:
    """One line on stderr; ``message`` may quote model output, a file or a server's reply."""
    click.echo(f"popcorn: {prefix}{redact(one_line(message))}", err=True)


def _show_click_error(err: click.ClickException) -> None:
    """click's own message (usage and the error), which can echo what the user typed."""
    buffer = io.StringIO()
    err.show(file=buffer)
    click.echo(redact(plain(buffer.getvalue())), err=True, nl=False)


_GLOBAL_FLAGS = ("-v", "--verbose", "--debug")


def _global_flags_first(args: list[str]) -> list[str]:
    """``-v`` / ``--debug`` anywhere before ``--`` (e.g. ``popcorn generate -v ...``) as if
    given before the subcommand, where click reads them."""
    end = args.index("--") if "--" in args else len(args)
    found = [a for a in args[:end] if a in _GLOBAL_FLAGS]
    rest = [a for a in args[:end] if a not in _GLOBAL_FLAGS]
    return [*found, *rest, *args[end:]]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; our own errors end in one line on stderr and a non-zero exit."""
    argv = _global_flags_first(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in argv or bool(os.environ.get("POPCORN_DEBUG"))
    try:
        cli.main(args=argv, prog_name="popcorn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("popcorn: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        _show_click_error(err)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("popcorn: interrupted; finished runs are kept, rerun to resume", err=True)
        sys.exit(130)
    except PopcornError as err:
        if debug:
            raise
        _error_line("error: ", err)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as err:  # a bug: say so in one line unless asked for the traceback
        if debug:
            raise
        missing = missing_extra(err) if isinstance(err, ModuleNotFoundError) else None
        if missing is not None:  # an optional package is not installed: no bug, and its fix
            _error_line("error: ", missing)
            sys.exit(1)
        from popcorn.registry import plugin_blamed

        blamed = plugin_blamed(err)
        if blamed is not None:  # not ours to fix: the plugin's authors (or its user) must
            plugin, module = blamed
            _error_line(
                "error: ",
                f"the plugin {plugin!r} failed in its module {module!r}: "
                f"{type(err).__name__}: {err} (rerun with --debug for the traceback; fix, "
                f"update or uninstall it: pip uninstall {plugin})",
            )
            sys.exit(1)
        _error_line(
            "internal error: ",
            f"{type(err).__name__}: {err} "
            "(rerun with --debug for the traceback, and please report it)",
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
