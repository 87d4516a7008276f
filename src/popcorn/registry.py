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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from popcorn.errors import PopcornError, UsageError


@dataclass
class Entry:
    """One registered component; ``target`` is a factory or ``"module:attribute"`` naming one."""

    name: str
    target: Callable[..., Any] | str
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    plugin: str | None = None
    """The distribution that registered it through an entry point (None for built-ins)."""

    def load(self) -> Callable[..., Any]:
        if isinstance(self.target, str):
            module, _, attribute = self.target.partition(":")
            try:
                loaded: Any = import_module(module)
                for part in attribute.split(".") if attribute else ():
                    loaded = getattr(loaded, part)
            except (ImportError, AttributeError) as err:
                where = f"plugin {self.plugin!r}" if self.plugin else "popcorn"
                raise PopcornError(
                    f"{self.name!r} ({where}) cannot be loaded from {self.target!r}: {err}"
                ) from None
            self.target = loaded
        factory: Callable[..., Any] = self.target  # type: ignore[assignment]
        if not self.summary:
            doc = getattr(factory, "summary", None) or (factory.__doc__ or "").strip()
            self.summary = str(doc).strip().splitlines()[0] if doc else ""
        return factory


class Registry:
    """The components of one extension point, in registration order (built-ins first)."""

    def __init__(self, kind: str, group: str, also: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self.also = also
        """Values the callers accept besides the registered names (e.g. ``none``), named in
        the error for an unknown name."""
        self._entries: dict[str, Entry] = {}
        self._plugins_read = False
        self._lock = threading.Lock()

    def add(
        self,
        name: str,
        target: Callable[..., Any] | str,
        summary: str = "",
        **details: Any,
    ) -> None:
        """Register ``target`` under ``name`` (a later registration replaces an earlier one)."""
        self._entries[name] = Entry(name, target, summary, dict(details))

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
            for ep in entry_points(group=self.group):
                if ep.name in self._entries and self._entries[ep.name].plugin is None:
                    continue  # a plugin never shadows a built-in
                dist = getattr(ep, "dist", None)
                entry = Entry(ep.name, ep.value, plugin=dist.name if dist else "unknown")
                self._entries[ep.name] = entry

    def refresh(self) -> None:
        """Read the entry points again (a plugin installed while this process runs)."""
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v.plugin is None}
            self._plugins_read = False

    def names(self) -> list[str]:
        self._read_plugins()
        return list(self._entries)

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
            raise UsageError(f"unknown {self.kind} {name!r}; available: {known}")
        return found

    def factory(self, name: str) -> Callable[..., Any]:
        return self.entry(name).load()

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the component ``name`` with the factory's arguments."""
        return self.factory(name)(*args, **kwargs)
