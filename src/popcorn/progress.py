"""Progress of long steps inside a stage (diffusion steps), for whoever is watching; counted
progress of many items (a batch's queries, a study's jobs, videos embedded); and the log lines
(``-v``) of model loads.

Library code calls :func:`report` as it goes (``report("clip", 12, 50)``); nothing happens
unless a caller has installed a reporter with :func:`reporting` for the work it runs (the CLI
does: a spinner line with the step and its ETA on a terminal, one line per tenth of the steps
otherwise). The reporter lives in a context variable, so concurrent jobs in other threads
(the web app, a study's threads) report nowhere unless they install their own.

:class:`Counts` shows counted work: a Rich bar on a terminal, and otherwise (a pipe, a log
under nohup or a scheduler) plain lines with no escapes or carriage returns, so a log shows
how far the work is while it runs, not only when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from popcorn.safety import plain

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


@dataclass
class _Count:
    """Where one counted piece of work stands, and when its last plain line was written."""

    total: int
    started: float
    done: int = 0
    failed: int | None = None
    shown_step: int = -1
    shown_at: float = 0.0
    finished: bool = False
    first: tuple[float, int] | None = None
    """When the first items were done, and how many."""

    def words(self, what: str, now: float) -> str:
        """``generating: 12/40 (30%), 1 failed, 0:42 elapsed, 1:38 left``."""
        percent = f" ({self.done * 100 // self.total}%)" if self.total else ""
        text = f"{what}: {self.done}/{self.total}{percent}"
        if self.failed is not None:
            text += f", {self.failed} failed"
        elapsed = now - self.started
        text += f", {_clock(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", {_clock(self._each(now) * (self.total - self.done))} left"
        return text

    def _each(self, now: float) -> float:
        """Seconds per item: since the first item finished when more have (loading a model
        before the first one must not inflate the rest), else since the start."""
        if self.first is not None and self.done > self.first[1]:
            return (now - self.first[0]) / (self.done - self.first[1])
        return (now - self.started) / self.done


class Counts:
    """Counted progress on ``console`` (stderr's), for work whose items finish one by one:
    ``update(what, done, total)`` as they do (from any thread).

    On a terminal, a Rich bar per ``what``. Otherwise plain lines: one each time another
    ``1/steps`` of the total is done (so one per item for small totals, one per few percent for
    large ones), the last one when all is done, and while nothing finishes a line every
    ``heartbeat`` seconds, so a log never looks stuck. Use as a context manager.
    """

    def __init__(self, console: Any, *, steps: int = 20, heartbeat: float = 30.0) -> None:
        self._steps = steps
        self._heartbeat = heartbeat
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._file = console.file
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        # A real terminal only: FORCE_COLOR alone (a log, CI) must not get a redrawn bar.
        if console.is_terminal and getattr(self._file, "isatty", lambda: False)():
            self._bar = _rich_bar(console)

    def __enter__(self) -> Counts:
        if self._bar is not None:
            self._bar.start()
        else:
            self._beat = threading.Thread(
                target=self._beating, name="popcorn-progress", daemon=True
            )
            self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._bar is not None:
            self._bar.stop()

    def done(self, what: str) -> int:
        """How many items of ``what`` are done so far (0 before the first update)."""
        with self._lock:
            count = self._counts.get(what)
            return 0 if count is None else count.done

    def update(self, what: str, done: int, total: int, failed: int | None = None) -> None:
        """``done`` of ``total`` items of ``what`` are finished, ``failed`` of them failed (None:
        failures are not counted, and not shown)."""
        with self._lock:
            now = time.monotonic()
            count = self._counts.setdefault(what, _Count(total, now))
            if count.first is None and done > 0:
                count.first = (now, done)
            count.done, count.total = done, total
            if failed is not None:
                count.failed = failed
            if self._bar is not None:
                self._advance_bar(what, count)
            elif _worth_a_line(count, self._steps):
                self._write(what, count, now)

    def _advance_bar(self, what: str, count: _Count) -> None:
        note = "" if count.failed is None else f"{count.failed} failed"
        if what not in self._tasks:
            self._tasks[what] = self._bar.add_task(what, total=count.total, note=note)
        self._bar.update(self._tasks[what], completed=count.done, total=count.total, note=note)

    def _write(self, what: str, count: _Count, now: float) -> None:
        count.shown_at = now
        with suppress(Exception):  # a closed stderr is not the work's problem
            print(f"popcorn: {plain(count.words(what, now))}", file=self._file, flush=True)

    def _beating(self) -> None:
        """Every so often, a line for each unfinished piece of work that has been quiet."""
        while not self._stop.wait(min(self._heartbeat, 5.0)):
            with self._lock:
                now = time.monotonic()
                for what, count in self._counts.items():
                    quiet = now - max(count.shown_at, count.started)
                    if count.done < count.total and quiet >= self._heartbeat:
                        self._write(what, count, now)


def _worth_a_line(count: _Count, steps: int) -> bool:
    """Whether this update starts another ``1/steps`` of the total, or ends the work (once)."""
    if count.done >= count.total:
        if count.finished:
            return False
        count.finished = True
        return True
    step = count.done * steps // count.total
    if step <= count.shown_step:
        return False
    count.shown_step = step
    return True


def _rich_bar(console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    )


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
