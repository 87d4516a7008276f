"""Which models are loaded in this process, and when they are let go.

Every model a stage loads (an LLM, a clip or cover pipeline, the PE embedder and index, the
predictor and its encoders) is held here, under a *role* and a key made of exactly what tells
two loads apart (source, dtype, device, ...). Asking twice for the same key gives the same
object; the first caller loads it, callers for the same key meanwhile wait for that load
instead of loading it again. Releasing a role drops every model of it, runs the free hook each
one was registered with (llama.cpp closes its context) and returns the GPU's cached memory.

The unload policy is the pipeline's (:class:`~popcorn.pipeline.Pipeline`): with
``unload_stages`` it releases the LLMs before a batch of renders and each generator after its
part of the batch, so a GPU holds one stage's models at a time; otherwise everything stays
loaded for the process. ``loads`` and ``releases`` count what happened, per role, so a test or
a benchmark can check that a study loads each model once per stage.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from popcorn.progress import logged_load

T = TypeVar("T")

ROLES = ("llm", "video", "cover", "embedder", "retriever", "predictor", "encoder", "captioner")
"""The roles models are held under; a stage releases its own roles."""


@dataclass
class _Held:
    model: Any
    free: Callable[[Any], None] | None


@dataclass
class Residency:
    """The loaded models of one process (:data:`MODELS`), by role and key."""

    loads: Counter[str] = field(default_factory=Counter)
    """Loads per role since the process started (or :meth:`reset_counts`)."""
    releases: Counter[str] = field(default_factory=Counter)
    """Models dropped per role."""
    _held: OrderedDict[tuple[str, Hashable], _Held] = field(default_factory=OrderedDict)
    """Least recently used first."""
    _loading: dict[tuple[str, Hashable], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(
        self,
        role: str,
        key: Hashable,
        load: Callable[[], T],
        *,
        free: Callable[[T], None] | None = None,
        what: str | None = None,
        keep: int | None = None,
    ) -> T:
        """The model ``key`` of ``role``, loaded by ``load()`` the first time it is asked for.

        ``free(model)`` runs when it is released (beyond dropping the reference); ``what``
        names it in the log line of the load (``-v``). ``keep`` bounds how many models of
        ``role`` stay held: loading one more lets the least recently used go. A load that
        raises leaves nothing behind, so the next caller tries again.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        slot = (role, key)
        with self._lock:
            held = self._held.get(slot)
            if held is not None:
                self._held.move_to_end(slot)
                return held.model  # type: ignore[no-any-return]
            gate = self._loading.setdefault(slot, threading.Lock())
        with gate:  # one load per key; other keys load meanwhile
            with self._lock:
                held = self._held.get(slot)
            if held is not None:
                return held.model  # type: ignore[no-any-return]
            if what is None:
                model = load()
            else:
                with logged_load(what):
                    model = load()
            with self._lock:
                self._held[slot] = _Held(model, free)
                self._loading.pop(slot, None)
                self.loads[role] += 1
                mine = [s for s in self._held if s[0] == role and s != slot]
                evicted = mine[: max(0, len(mine) + 1 - keep)] if keep is not None else []
            self._drop(evicted)
            return model

    def adopt(self, role: str, key: Hashable, model: Any) -> None:
        """Hold ``model``, built elsewhere, as the model ``key`` of ``role`` (a benchmark's
        stand-in for a download); not counted as a load, released like one."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        with self._lock:
            self._held[(role, key)] = _Held(model, None)

    def loaded(self, role: str | None = None) -> list[Hashable]:
        """The keys held now, of ``role`` or of every role."""
        with self._lock:
            return [key for (r, key) in self._held if role is None or r == role]

    def release(self, *roles: str) -> int:
        """Drop every model of ``roles`` (of all roles when none is given) and free the GPU's
        cached memory; the next use loads again. Returns how many models were dropped."""
        with self._lock:
            slots = [s for s in self._held if not roles or s[0] in roles]
        return self._drop(slots)

    def drop(self, role: str, key: Hashable) -> bool:
        """Let the model ``key`` of ``role`` go (e.g. one whose files changed on disk);
        whether it was held."""
        return self._drop([(role, key)]) > 0

    def _drop(self, slots: list[tuple[str, Hashable]]) -> int:
        with self._lock:
            dropped = [(s[0], self._held.pop(s)) for s in slots if s in self._held]
            for role, _ in dropped:
                self.releases[role] += 1
        count = len(dropped)
        for _, held in dropped:
            if held.free is not None:
                with suppress(Exception):  # a model that fails to close is still let go
                    held.free(held.model)
        del dropped
        if count:
            gc.collect()
            torch = sys.modules.get("torch")  # only if something imported it
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        return count

    def reset_counts(self) -> None:
        """Start ``loads`` and ``releases`` from zero (tests, benchmarks)."""
        with self._lock:
            self.loads.clear()
            self.releases.clear()


MODELS = Residency()
"""This process's models; every backend loads through it."""
