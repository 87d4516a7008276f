"""What a single ``generate`` or ``render`` shows while it works, on stderr.

On a terminal: a spinner naming the running step, with the diffusion step and the time left
while a clip or cover renders. Otherwise (a pipe, a log, CI): one line per tenth of the
denoising steps, so a long render is never silent (``-v`` logs each step's time too); quick
work stays quiet, and an error stays one line.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import Any, ClassVar

import click

from popcorn.progress import StepClock, reporting


class StageWatch:
    """Use as a context manager around the work; pass :meth:`step` as the pipeline's
    ``on_step``. Diffusion steps reach it through :mod:`popcorn.progress`."""

    _LABELS: ClassVar[dict[str, str]] = {
        "script": "writing the script",
        "media": "rendering",
        "score": "scoring",
    }

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.status: Any = None
        self.stage = "starting"
        self.clock = StepClock()
        self._tenths: dict[str, int] = {}
        self._stack = ExitStack()

    def __enter__(self) -> StageWatch:
        # A real terminal only: FORCE_COLOR alone (a log, CI) must not get cursor movements.
        if sys.stderr.isatty() and self.console.is_terminal:
            self.status = self.console.status("starting")
            self.status.start()
        self._stack.enter_context(reporting(self.progress))
        return self

    def step(self, step: str, state: str) -> None:
        if state != "running":
            return
        self.stage = self._LABELS.get(step, step)
        if self.status is not None:
            self.status.update(f"{self.stage}...")

    def progress(self, what: str, done: int, total: int) -> None:
        words = self.clock.words(what, done, total)
        if self.status is not None:
            self.status.update(f"{self.stage}: {words}")
            return
        tenth = done * 10 // total
        if done > 0 and tenth > self._tenths.get(what, 0):
            self._tenths[what] = tenth
            click.echo(f"popcorn: {words}", err=True)
        elif done == 0:
            self._tenths[what] = 0

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.status is not None:
            self.status.stop()
