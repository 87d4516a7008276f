"""Name -> factory, for every extension point, built-ins and plugins alike.

Each extension point (LLM backends, clip generators, cover generators, frame encoders, study
executors) is one :class:`Registry`. A built-in is registered as a ``"module:attribute"`` string,
so nothing heavy is imported until that component is asked for; a plugin package registers
its own under the registry's entry-point group, e.g. in its ``pyproject.toml``::

    [project.entry-points."popcorn.video"]
    mygen = "my_package.video:MyGenerator"

The entry point's name is the component's name; its target is the factory (a class or a
function), imported only when the component is built or described. A factory may carry a
``summary`` attribute (else its docstring's first line) and a ``model`` attribute, which
``popcorn generators`` shows. See docs/design/pipeline.md for a worked example.

Built-ins and plugins share one factory contract. Besides its summary and model, a component
may declare, as a factory attribute or a registration detail, ``honours`` (the setting names
it applies, e.g. ``{"frames", "fps", "video_seed"}``; a setting it does not honour is warned
about once and left out of its keys; undeclared: all) and ``options`` (name -> help of its own
options). Those options reach the factory as one ``extra`` dict (``--video-opt KEY=VALUE``,
``[media.video_extra]`` in popcorn.toml or a study file); an option it does not declare is an
error before anything is built.

A broken plugin (its module does not import, its entry point names nothing, its package's
``entry_points.txt`` cannot be read) takes down only itself: the registry still lists it, its
listing line says why it is broken, and only asking for that component raises
:class:`PluginError`, one line naming the plugin, its entry point and the error.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import distributions
from types import ModuleType
from typing import Any

from popcorn.errors import PopcornError, UsageError
from popcorn.safety import one_line

_SHOWN = 300
"""Characters of a plugin's own text (its summary, its error) that listings and errors quote."""


class PluginError(PopcornError):
    """An installed plugin cannot be imported or built; the message names it and its entry
    point, so the user knows what to fix or uninstall."""


def brief(text: Any, limit: int = _SHOWN) -> str:
    """``text`` from a plugin (a docstring, an error) as one short, terminal-safe line."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_error(err: BaseException) -> str:
    """``Type: message`` of an error raised by a plugin's own code, on one short line."""
    text = brief(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# The (entry-point group, distribution) whose module is being imported: components that module
# registers while it loads (e.g. through popcorn.llm.registry.provider) are that plugin's.
_importing: ContextVar[tuple[str, str] | None] = ContextVar("popcorn_importing", default=None)


@dataclass
class Entry:
    """One registered component; ``target`` is a factory or ``"module:attribute"`` naming one."""

    name: str
    target: Callable[..., Any] | str
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    plugin: str | None = None
    """The distribution that registered it through an entry point (None for built-ins)."""
    group: str = ""
    """The entry-point group a plugin registered it under."""
    value: str = ""
    """The plugin's entry point as written (``module:attribute``), for messages."""
    error: str | None = None
    """Why it cannot be loaded (``Type: message``), once that was found; None while it may be."""

    def origin(self) -> str:
        """Where a plugin's component comes from, for messages."""
        if self.plugin is None:
            return "popcorn"
        point = f"entry point '{self.name} = {self.value}'" if self.value else "a registration"
        return f"plugin {self.plugin!r}, {point} in {self.group}"

    def broken_message(self) -> str:
        """The one line an attempt to use a broken plugin's component ends with."""
        fix = f"; fix or uninstall it (pip uninstall {self.plugin})" if self.plugin else ""
        return f"{self.name!r} ({self.origin()}) is broken: {self.error}{fix}"

    def load(self) -> Callable[..., Any]:
        """The factory, imported on first use; :class:`PluginError` if a plugin's import fails
        (remembered: the module is not run again for each question)."""
        if self.error is not None:
            raise PluginError(self.broken_message())
        target = self.target
        factory: Callable[..., Any] = self._import(target) if isinstance(target, str) else target
        self.target = factory
        if not self.summary:
            self.summary = self._summary(factory)
        return factory

    def _import(self, target: str) -> Any:
        module, _, attribute = target.partition(":")
        token = _importing.set((self.group, self.plugin) if self.plugin else None)
        try:
            loaded: Any = import_module(module)
            for part in attribute.split(".") if attribute else ():
                loaded = getattr(loaded, part)
            if callable(loaded) or isinstance(loaded, ModuleType):
                if self.plugin is not None:
                    _remember_plugin_module(module, self.plugin)
                return loaded
            if self.plugin is None:
                raise TypeError(f"{target} is not callable")
            self.error = f"{target} is a {type(loaded).__name__}, not a factory"
        except (ImportError, AttributeError) as err:
            if self.plugin is None:
                raise PopcornError(
                    f"{self.name!r} (popcorn) cannot be loaded from {target!r}: {err}"
                ) from None
            self.error = describe_error(err)
        # A plugin's module runs code we do not own: whatever it raises (or exits with) while
        # it loads is that plugin's failure, not the caller's.
        except (Exception, SystemExit) as err:
            if self.plugin is None:
                raise
            self.error = describe_error(err)
        finally:
            _importing.reset(token)
        raise PluginError(self.broken_message())

    def declared(self, attribute: str) -> Any:
        """What the component says about itself under ``attribute`` (``honours``,
        ``options``, ``model``...): its registration's detail, else its factory's attribute;
        None when neither says, or when a plugin's own attribute fails to read."""
        if attribute in self.details:
            return self.details[attribute]
        factory = self.load()
        try:
            return getattr(factory, attribute, None)
        except Exception:  # a plugin's property that raises declares nothing
            return None

    def honours(self) -> frozenset[str] | None:
        """The settings the component applies (setting names, e.g. ``steps``,
        ``video_model``); None when it does not say, which means all of them."""
        found = self.declared("honours")
        if found is None:
            return None
        return frozenset(name for name in found if isinstance(name, str))

    def options(self) -> dict[str, str]:
        """The component's own options, name -> one line of help: what its ``extra`` accepts."""
        found = self.declared("options")
        if not isinstance(found, Mapping):
            return {}
        return {brief(k, 60): brief(v) for k, v in found.items() if isinstance(k, str)}

    def _summary(self, factory: Any) -> str:
        try:
            doc = getattr(factory, "summary", None) or (factory.__doc__ or "")
            lines = str(doc).strip().splitlines()
        except Exception:  # a plugin attribute that raises describes nothing
            return ""
        return brief(lines[0]) if lines else ""


class Registry:
    """The components of one extension point, in registration order (built-ins first)."""

    def __init__(self, kind: str, group: str, also: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self.also = also
        """Values the callers accept besides the registered names (e.g. ``none``), named in
        the error for an unknown name."""
        self._entries: dict[str, Entry] = {}
        self._problems: list[str] = []
        self._plugins_read = False
        self._lock = threading.Lock()

    def add(
        self,
        name: str,
        target: Callable[..., Any] | str,
        summary: str = "",
        **details: Any,
    ) -> None:
        """Register ``target`` under ``name`` (a later registration replaces an earlier one,
        except that a plugin's module never replaces a built-in)."""
        importing = _importing.get()
        plugin = importing[1] if importing and importing[0] == self.group else None
        if plugin is not None:
            existing = self._entries.get(name)
            if existing is not None and existing.plugin is None:
                return
            summary = brief(summary)
        self._entries[name] = Entry(
            name, target, summary, dict(details), plugin=plugin, group=self.group
        )

    def register(self, name: str, summary: str = "", **details: Any) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add`."""

        def decorate(target: Any) -> Any:
            self.add(name, target, summary, **details)
            return target

        return decorate

    def _read_plugins(self) -> None:
        with self._lock:
            if self._plugins_read:
                return
            self._plugins_read = True
            found, self._problems = _entry_points(self.group)
            for name, value, dist in found:
                existing = self._entries.get(name)
                if existing is not None and existing.plugin in (None, dist) and not existing.value:
                    # A plugin never shadows a built-in; and what a plugin's module registered
                    # when it was imported stays (importing it again would not register again).
                    continue
                self._entries[name] = Entry(name, value, plugin=dist, group=self.group, value=value)

    def refresh(self) -> None:
        """Read the entry points again (a plugin installed while this process runs)."""
        with self._lock:
            # Entry points are read again; registrations a plugin's module made stay, as they
            # would in a process that imported it.
            self._entries = {k: v for k, v in self._entries.items() if not v.value}
            self._problems = []
            self._plugins_read = False

    def names(self) -> list[str]:
        self._read_plugins()
        return list(self._entries)

    def problems(self) -> list[str]:
        """One line per installed package whose entry points for this group cannot be read
        (its components are unknown, so they cannot be listed by name)."""
        self._read_plugins()
        return list(self._problems)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[Entry]:
        self._read_plugins()
        return iter(list(self._entries.values()))

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; ``UsageError`` listing the valid names otherwise."""
        self._read_plugins()
        found = self._entries.get(name)
        if found is None:
            known = ", ".join([*self.names(), *self.also])
            raise UsageError(f"unknown {self.kind} {brief(repr(name), 80)}; available: {known}")
        return found

    def factory(self, name: str) -> Callable[..., Any]:
        return self.entry(name).load()

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the component ``name`` with the factory's arguments; a plugin whose factory
        raises anything but our own errors ends in one :class:`PluginError` naming it."""
        entry = self.entry(name)
        factory = entry.load()
        return build(entry, self.kind, factory, *args, **kwargs)


def build(entry: Entry, kind: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``; for a plugin's factory, an exception other than our own
    errors becomes one :class:`PluginError` naming the plugin (a built-in's stays a bug).

    An ``extra`` keyword (the component's own options) is checked against the options the
    component declares first, and left out when empty, so a factory that declares none is
    called as it always was."""
    if "extra" in kwargs:
        extra = kwargs.pop("extra") or {}
        check_extra(entry, kind, extra)
        if extra:
            kwargs["extra"] = dict(extra)
    if entry.plugin is None:
        return factory(*args, **kwargs)
    try:
        return factory(*args, **kwargs)
    except PopcornError:
        raise  # the plugin speaks our language: its message is meant for the user
    except (Exception, SystemExit) as err:
        raise PluginError(
            f"{kind} {entry.name!r} ({entry.origin()}) failed to start: {describe_error(err)}"
        ) from None


def check_extra(entry: Entry, kind: str, extra: Mapping[str, Any]) -> None:
    """``UsageError`` naming any of ``extra``'s options that the component does not declare."""
    known = entry.options()
    unknown = [name for name in extra if name not in known]
    if unknown:
        takes = f"it takes: {', '.join(known)}" if known else "it takes none"
        raise UsageError(
            f"{kind} {entry.name!r} has no option {brief(repr(unknown[0]), 60)} ({takes})"
        )


# Top-level package of each plugin module imported -> its distribution, to say which plugin's
# code an error came from.
_plugin_packages: dict[str, str] = {}


def _remember_plugin_module(module: str, plugin: str) -> None:
    package = module.partition(".")[0]
    if package != "popcorn":  # a plugin may point at our own code; that code stays ours
        _plugin_packages[package] = plugin


def plugin_blamed(err: BaseException) -> tuple[str, str] | None:
    """(distribution, module) of the installed plugin whose code raised ``err`` (the innermost
    of its frames), or None when no plugin's code is on its traceback: an error there is that
    plugin's to fix, not a bug of Popcorn's to report."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        plugin = _plugin_packages.get(module.partition(".")[0])
        if plugin is not None:
            found = (plugin, module)
        tb = tb.tb_next
    return found


_NORMALIZE = re.compile(r"[-_.]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
# module[:attribute], then the extras that old entry points may still carry ("[gpu]").
_TARGET = re.compile(r"([A-Za-z_][\w.]*(?::[A-Za-z_][\w.]*)?)\s*(?:\[[\w\s,.-]*\])?")


def _entry_points(group: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(name, value, distribution) for every entry point of ``group``, and one line for each
    installed package whose entry points cannot be read but mention the group.

    Read package by package (not with ``importlib.metadata.entry_points``, which gives up on
    all of them when one ``entry_points.txt`` is malformed); as there, the first package of a
    name on the path wins."""
    found: list[tuple[str, str, str]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for dist in distributions():
        try:
            # The folder's name where it gives one (what importlib.metadata itself compares):
            # parsing every package's METADATA would cost a tenth of a second per registry.
            key = getattr(dist, "_normalized_name", None) or str(dist.metadata["Name"] or "")
            key = _NORMALIZE.sub("-", key).lower()
        except Exception:  # unreadable metadata: not a package we can name or load from
            continue
        if key in seen:
            continue
        seen.add(key)
        try:
            text = dist.read_text("entry_points.txt") or ""
            if f"[{group}]" not in text:
                continue
            name = str(dist.metadata["Name"] or key)
        except Exception:
            continue  # undecodable: nothing says it is one of ours
        try:
            points = list(dist.entry_points.select(group=group))
        except Exception as err:
            problems.append(
                f"plugin package {brief(repr(name), 80)} has an unreadable entry_points.txt "
                f"({describe_error(err)}); reinstall or uninstall it"
            )
            continue
        for ep in points:
            # The name is what users type and every listing shows: a name holding spaces or
            # control characters is refused whole rather than shown or matched.
            target = _TARGET.fullmatch(ep.value)
            if _NAME.fullmatch(ep.name) and target:
                found.append((ep.name, target.group(1), name))
            else:
                problems.append(
                    f"plugin package {brief(repr(name), 80)} has an entry point "
                    f"{brief(repr(f'{ep.name} = {ep.value}'), 120)} in [{group}] that is not "
                    "'name = module:attribute'; reinstall or uninstall it"
                )
    return found, problems
