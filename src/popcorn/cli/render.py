"""``popcorn render``: (re)render a run folder's cover and clip."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel

from popcorn.cli.help import LazyHelpOption
from popcorn.cli.output import json_lines
from popcorn.config import MediaSettings, parse_toml
from popcorn.config_fields import CliField, cli_fields
from popcorn.profiles import PROFILE_NAMES
from popcorn.safety import one_line, plain, redact


def _generators_help(kind: str) -> str:
    """The ``--video`` / ``--cover`` help: every registered generator with its summary, read
    when help is shown (built-ins' tables are plain data; a plugin's module is imported for
    its summary, which is why plugins keep heavy imports inside their factories)."""
    from popcorn.media.registry import COVER, VIDEO
    from popcorn.registry import PluginError

    registry = VIDEO if kind == "video" else COVER
    rows = []
    for entry in registry:
        try:
            entry.load()
        except PluginError:
            rows.append(f"{one_line(entry.name)}: broken (see popcorn generators)")
            continue
        summary = one_line(entry.summary)
        rows.append(f"{one_line(entry.name)}: {summary}" if summary else one_line(entry.name))
    return (
        f"{'Clip' if kind == 'video' else 'Cover'} generator: {'; '.join(rows)}; or none. "
        "Presets follow the profile: paper runs the study's settings, popcorn Popcorn's "
        "('popcorn generators' lists both, and each generator's own options).  "
        "[default: preview]"
    )


_LAZY_HELP = {
    "video": partial(_generators_help, "video"),
    "cover": partial(_generators_help, "cover"),
}


def _click_type(field: CliField) -> Any:
    """The click type of a setting's flag, from its annotation and limits."""
    kind = field.annotation
    if get_origin(kind) in (Union, UnionType):  # ``int | None``: the flag gives an int
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is Literal:
        return click.Choice([str(v) for v in get_args(kind)])
    if kind in (int, float) and field.low is None and field.high is None:
        return kind
    if kind is int:
        low = None if field.low is None else int(field.low)
        return click.IntRange(low, None if field.high is None else int(field.high))
    if kind is float:
        return click.FloatRange(field.low, field.high, min_open=field.low_open)
    return None


_F = TypeVar("_F", bound=Callable[..., Any])


def setting_option(section: type[BaseModel], field: CliField) -> Callable[[_F], _F]:
    """The click option of one setting of ``section``, all of it read from the field."""
    default = section.model_fields[field.setting].default
    kwargs: dict[str, Any] = {"metavar": field.metavar, "hidden": field.hidden}
    if field.annotation is bool:
        kwargs.update(is_flag=True, default=None)
    elif isinstance(default, dict):  # a generator's own options: KEY=VALUE, repeatable
        kwargs.update(multiple=True, callback=_key_values)
    else:
        kwargs["type"] = _click_type(field)
    help_text = field.help
    if default not in (None, False, {}) and field.setting not in _LAZY_HELP:
        help_text += f"  [default: {default}]"
    if field.setting in _LAZY_HELP:
        return click.option(
            field.flag, field.param, cls=LazyHelpOption, help_text=_LAZY_HELP[field.setting],
            **kwargs,
        )  # fmt: skip
    return click.option(field.flag, field.param, help=help_text, **kwargs)


def _key_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs as a dict; a value is read as TOML (``3``, ``0.5``, ``true``,
    ``"text"``), else taken as text, so a flag and popcorn.toml give the same value."""
    if not values:
        return None
    found: dict[str, Any] = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", ctx, param)
        try:
            found[key.strip()] = parse_toml(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            found[key.strip()] = value
    return found


MEDIA_FIELDS = cli_fields(MediaSettings)
MEDIA_GROUPS: dict[str, list[str]] = {}
"""The ``--help`` headings of the media flags, from their settings' ``group``."""
for _field in MEDIA_FIELDS:
    MEDIA_GROUPS.setdefault(_field.group, []).append(_field.param)


def media_options(func: Any) -> Any:
    """The options shared by ``render`` and ``generate``: one per ``[media]`` setting that
    declares a flag, plus ``--device`` (the run's, which the media follow)."""
    options = [
        *(setting_option(MediaSettings, f) for f in MEDIA_FIELDS),
        click.option(
            "--device",
            metavar="DEVICE",
            help="Where models run: auto, cpu, cuda, cuda:N or mps (the LLM, the media and the "
            "predictor).  [default: auto: a CUDA GPU when there is one]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_DEPRECATED = {"media_device": "--media-device", "device_map": "--device-map",
               "n_gpu_layers": "--n-gpu-layers"}  # fmt: skip


def deprecated_device_flags(flags: dict[str, Any]) -> None:
    """The old per-stage device flags still work, with a note naming --device."""
    for name, flag in _DEPRECATED.items():
        if flags.get(name) is not None:
            click.echo(
                f"popcorn: note: {flag} is deprecated; --device sets every stage's device", err=True
            )


def media_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """Take the media flags out of ``flags`` as overrides of the ``[media]`` settings (None:
    not given, so popcorn.toml, the environment or the default decides)."""
    return {f.setting: flags.pop(f.param) for f in MEDIA_FIELDS}


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@media_options
@click.option("--force", is_flag=True, help="Render again even if nothing changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the media record as JSON.")
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="Settings file ([media] section).  [default: ./popcorn.toml if present]",
)
@click.option(
    "--profile",
    type=click.Choice(PROFILE_NAMES),
    help="Whose generator presets to use.  [default: the run's own profile]",
)
def render(
    run_dir: Path,
    force: bool,
    as_json: bool,
    config: Path | None,
    profile: str | None,
    **flags: Any,
) -> None:
    """Render the cover and the 3-second clip of RUN_DIR's script, with other generators or
    settings if asked. Files: RUN_DIR/cover.png and RUN_DIR/clip.mp4 (H.264). A run written
    under the paper profile renders with the study's presets unless --profile says otherwise."""
    from popcorn.cli.watch import StageWatch
    from popcorn.config import load_settings
    from popcorn.pipeline import Pipeline
    from popcorn.runs.store import Run

    deprecated_device_flags(flags)
    profile = profile or Run.load(run_dir).manifest.profile
    device = flags.pop("device")
    overrides = {"media": media_overrides(flags), "run": {"profile": profile, "device": device}}
    pipeline = Pipeline(load_settings(config, overrides), score="never")
    pipeline.check()
    with StageWatch() as watch:
        watch.step("media", "running")
        media = pipeline.render(run_dir, force=force)
    if as_json:
        click.echo(json.dumps(media.record, ensure_ascii=False))
        return
    show_media(run_dir, media.record)


def warn(warnings: Iterable[str]) -> None:
    """Each warning as one line on stderr; a warning can quote a corpus, a model or a server."""
    for warning in warnings:
        click.echo(f"popcorn: warning: {redact(one_line(warning))}", err=True)


def show_media(run_dir: Path, stage: dict[str, Any]) -> None:
    warn(stage.get("warnings", ()))
    video, cover = stage.get("video"), stage.get("cover")
    if video:
        label = " (PREVIEW animatic)" if video["preview"] else ""
        click.echo(
            plain(
                f"clip   {Path(run_dir) / video['file']}: {video['width']}x{video['height']}, "
                f"{video['frames']} frames at {video['fps']} fps{label}"
            )
        )
    if cover:
        label = " (PREVIEW card)" if cover["preview"] else ""
        if cover.get("flagged"):
            label += " (blanked by the model's safety checker)"
        click.echo(
            plain(
                f"cover  {Path(run_dir) / cover['file']}: {cover['width']}x{cover['height']}{label}"
            )
        )


@click.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object a line: kind, name, model, summary, notes, options, honours "
    "(or broken: why).",
)
def generators(as_json: bool) -> None:
    """List the clip and cover generators, their default models and settings.

    Presets follow the profile: under paper each runs at the study's exact settings, under
    popcorn at Popcorn's. Under each preset: the study's settings, then every setting where
    Popcorn's differ and why (or that the study did not use the model)."""
    rows = _generator_rows()
    if as_json:
        json_lines(rows)
        return
    for row in rows:
        if "broken" in row:
            click.echo(f"{row['kind']:<6} {row['name']:<12} broken: {row['broken']}")
            continue
        click.echo(f"{row['kind']:<6} {row['name']:<12} {row['summary']}")
        if row["model"] is not None:
            click.echo(f"{'':<19} model: {row['model']}")
        for note in row["notes"]:
            click.echo(f"{'':<19} {note}")
        flag = "--video-opt" if row["kind"] == "video" else "--cover-opt"
        for option, text in row["options"].items():
            click.echo(f"{'':<19} {flag} {option}=...: {text}")
        if row["honours"] is not None:
            click.echo(f"{'':<19} honours: {', '.join(row['honours']) or 'no setting'}")


def _generator_rows() -> list[dict[str, Any]]:
    """Every clip and cover generator as plain data (``honours``: the media settings it
    follows, None when it does not say). Names, models and summaries of plugins are their own
    text: kept to one line with no control characters."""
    from popcorn.media.registry import COVER, VIDEO, preset_notes
    from popcorn.media.registry import listing as listed

    rows: list[dict[str, Any]] = []
    for kind, name, model, summary in listed():
        if summary.startswith("broken: "):
            broken = summary.removeprefix("broken: ")
            rows.append({"kind": kind, "name": one_line(name), "broken": one_line(broken)})
            continue
        entry = (VIDEO if kind == "video" else COVER).entry(name)
        honours = entry.honours()
        rows.append(
            {
                "kind": kind,
                "name": one_line(name),
                "model": None if model == "-" else one_line(model),
                "summary": one_line(summary),
                "notes": preset_notes(kind, name),
                "options": {one_line(k): one_line(v) for k, v in entry.options().items()},
                "honours": None if honours is None else sorted(honours),
            }
        )
    return rows
