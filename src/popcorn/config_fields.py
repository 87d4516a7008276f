"""How a setting is declared, once, on its field: its range, its command-line flag and help
group, and whether it changes what its stage makes. :mod:`popcorn.config` declares the
settings with :func:`setting`; the CLI generates flags from :func:`cli_fields`, and study job
keys hash :func:`output_settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field


def limits(section: type[BaseModel], name: str) -> tuple[float | None, float | None, bool]:
    """(lowest, highest, lowest excluded) a numeric setting accepts, read from its model field,
    so every entry point (flags, the app, study files) checks the same range."""
    low = high = None
    low_open = False
    for rule in section.model_fields[name].metadata:
        if getattr(rule, "gt", None) is not None:
            low, low_open = rule.gt, True
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        if getattr(rule, "le", None) is not None:
            high = rule.le
    return low, high, low_open


def int_limits(section: type[BaseModel], name: str) -> tuple[int, int]:
    low, high, _ = limits(section, name)
    assert low is not None and high is not None, f"{name} has no range"
    return int(low), int(high)


def setting(
    default: Any,
    help: str = "",
    *,
    group: str | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    hidden: bool = False,
    output: bool | Literal["changed"] = True,
    **rules: Any,
) -> Any:
    """A settings field that also declares its command-line flag and whether it changes what a
    stage makes: the one place a setting is described (see :func:`cli_fields`,
    :func:`output_settings`).

    ``group`` is its heading in ``--help`` (None: no flag); ``flag`` its name when not
    ``--field-name``; ``output`` whether it enters the keys of what its stage makes (True),
    never (False: where or how fast, not what), or only once set away from its default
    ("changed": a setting added after keys were made, so older keys stay valid)."""
    extra: dict[str, Any] = {"output": output}
    if group is not None:
        extra["cli"] = {"group": group, "flag": flag, "metavar": metavar, "hidden": hidden}
    return Field(default, description=help or None, json_schema_extra=extra, **rules)


def _extra(section: type[BaseModel], name: str) -> dict[str, Any]:
    found = section.model_fields[name].json_schema_extra
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class CliField:
    """A setting's command-line flag, read from its field."""

    setting: str
    """The field's name in its section."""
    flag: str
    param: str
    """The click parameter name (the flag's, with underscores)."""
    group: str
    help: str
    metavar: str | None
    hidden: bool
    annotation: Any
    low: float | None
    high: float | None
    low_open: bool


def cli_fields(section: type[BaseModel]) -> list[CliField]:
    """The flags of ``section``'s settings, in field order; fields without a group have none."""
    found = []
    for name, info in section.model_fields.items():
        cli = _extra(section, name).get("cli")
        if not isinstance(cli, dict):
            continue
        flag = cli["flag"] or "--" + name.replace("_", "-")
        low, high, low_open = limits(section, name)
        found.append(
            CliField(
                setting=name,
                flag=flag,
                param=flag.lstrip("-").replace("-", "_"),
                group=cli["group"],
                help=info.description or "",
                metavar=cli["metavar"],
                hidden=cli["hidden"],
                annotation=info.annotation,
                low=low,
                high=high,
                low_open=low_open,
            )
        )
    return found


def output_settings(section: type[BaseModel], model: BaseModel) -> dict[str, Any]:
    """The values of ``model``'s settings that change what its stage makes, as JSON: the
    fields declared with ``output=True``, and those declared ``"changed"`` when not at their
    default. Study job keys hash these (:func:`popcorn.study.spec.settings_digest`)."""
    values = model.model_dump(mode="json")
    found = {}
    for name, info in section.model_fields.items():
        output = _extra(section, name).get("output", True)
        if output is True or (output == "changed" and getattr(model, name) != info.default):
            found[name] = values[name]
    return found


ComponentOptions = dict[str, str | int | float | bool]
"""A component's own options (``--video-opt KEY=VALUE``, ``[media.video_extra]``; likewise
``--cover-opt``, ``--llm-opt``): the names it declares (``popcorn generators`` lists them),
handed to its factory as ``extra`` (:mod:`popcorn.registry`)."""
