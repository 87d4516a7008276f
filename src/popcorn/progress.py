"""Progress of long steps inside a stage (diffusion steps), for whoever is watching, and
the log lines (``-v``) of model loads.

Library code calls :func:`report` as it goes (``report("clip", 12, 50)``); nothing happens
unless a caller has installed a reporter with :func:`reporting` for the work it runs (the CLI
does: a spinner line with the step and its ETA on a terminal, one line per tenth of the steps
otherwise). The reporter lives in a context variable, so concurrent jobs in other threads
(the web app, a study's threads) report nowhere unless they install their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("popcorn.load")

Reporter = Callable[[str, int, int], None]
"""``(what, done, total)``: ``done`` of ``total`` steps of ``what`` ("clip", "cover")."""

_current: ContextVar[Reporter | None] = ContextVar("popcorn_progress", default=None)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Send the progress of the work run inside this block to ``reporter``."""
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


def report(what: str, done: int, total: int) -> None:
    """``done`` of ``total`` steps of ``what`` are finished (a reporter's failure is ignored:
    progress must never break the work)."""
    reporter = _current.get()
    if reporter is not None:
        with suppress(Exception):  # a display problem is not the job's problem
            reporter(what, done, total)


def step_callback(what: str, total: int) -> Callable[..., dict[str, Any]] | None:
    """A diffusers ``callback_on_step_end`` reporting each denoising step of ``what``, or None
    when nobody is watching (the call then runs exactly as without progress)."""
    if _current.get() is None or total < 1:
        return None
    report(what, 0, total)

    def on_step_end(pipe: Any, step: int, timestep: Any, state: dict[str, Any]) -> dict[str, Any]:
        report(what, step + 1, total)
        return state

    return on_step_end


class StepClock:
    """Turns step reports into words: ``clip: step 12/50, 0:31 left`` (the rate since the
    first step, so loading and the first step's warm-up do not skew it)."""

    def __init__(self) -> None:
        self._started: dict[str, tuple[float, int]] = {}

    def words(self, what: str, done: int, total: int) -> str:
        now = time.monotonic()
        if done <= 1 or what not in self._started:
            self._started[what] = (now, done)
        start, first = self._started[what]
        text = f"{what}: step {done}/{total}"
        if done > first and done < total:
            left = (now - start) / (done - first) * (total - done)
            text += f", {_clock(left)} left"
        return text


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@contextmanager
def logged_load(what: str) -> Iterator[None]:
    """Log (``-v``) how long loading ``what`` took and the memory it left in use."""
    started = time.perf_counter()
    yield
    log.info("loaded %s in %.1f s (%s)", what, time.perf_counter() - started, memory())


def memory() -> str:
    """This process's peak resident memory, and the GPU's when torch has used one."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    text = f"peak RSS {peak:,.0f} MiB"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        text += f", GPU peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return text


def quiet_transformers() -> None:
    """Switch off transformers' own bars (loading weights, which would clutter every command
    that loads an embedder) and leave the hub's download bars as they were: transformers'
    switch turns those off for the whole process too, and a first download is a long wait
    that must show its size and progress."""
    import huggingface_hub.utils
    import transformers.utils.logging

    hub: Any = huggingface_hub.utils
    hf_logging: Any = transformers.utils.logging

    hub_was_off = hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if not hub_was_off:
        hub.enable_progress_bars()
