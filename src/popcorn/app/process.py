"""The model process: the app's model work (LLMs, the PE index, renderers, the predictor) runs in
a child process, so a crash of a native library (llama.cpp, torch) ends one request with an
error instead of the whole app and its queue.

The parent (:class:`ModelProcess`) sends one request at a time over a pipe; the child answers
with stage progress, each mode's result or error, and an end mark. Models stay loaded in the
child between requests (:class:`Models`); when the child dies the parent starts a fresh one for
the next request. The parent never waits on the child without a bound: it reads with a short
wait, so a child that hangs or was stopped (SIGSTOP) is noticed and killed (:meth:`kill`) by
whoever set the request's time limit. The child is started with ``spawn``: a fork of the app's
threads could deadlock, and CUDA cannot be used after a fork.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from popcorn.app.readiness import skip_reason
from popcorn.app.requests import MODES, AppConfig, Request, describe_run
from popcorn.errors import PopcornError

if TYPE_CHECKING:
    from popcorn.pipeline import Pipeline

__all__ = ["MODES", "ModelProcess", "ModelProcessDied", "Models", "serve_requests"]
LLMS_KEPT = 2
"""In-process LLMs the model process keeps loaded: a request for one more lets them all go
first (one LLM's weights can fill a GPU). Pipelines are built per request: they hold no model."""

Progress = Callable[[str, str, str], None]
"""progress(stage, state, reason): reason says why a stage was skipped ("" otherwise)."""

_HINTS = {
    signal.SIGILL: (
        ": a native library ran a CPU instruction this machine lacks; rebuild the embedded "
        "LLM with 'bash scripts/setup.sh'"
    ),
    signal.SIGKILL: ": the system may have run out of memory",
}


class ModelProcessDied(PopcornError):
    """The model process ended while working on a request."""


def exit_reason(exitcode: int | None) -> str:
    """How the model process ended, for the request it was working on."""
    if exitcode is None:
        return "the model process stopped answering"
    if exitcode >= 0:
        return f"the model process exited with code {exitcode}"
    try:
        sig = signal.Signals(-exitcode)
    except ValueError:
        return f"the model process crashed (signal {-exitcode})"
    detail = (signal.strsignal(sig) or "").lower()
    return f"the model process crashed ({sig.name}, {detail}){_HINTS.get(sig, '')}"


State = Literal["alive", "stopped", "ended"]


class ModelProcess:
    """The parent's handle on one child; :meth:`receive` raises :class:`ModelProcessDied`."""

    def __init__(self, config: AppConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=serve_requests, args=(config, child_end), name="popcorn-models", daemon=True
        )
        self._process.start()
        child_end.close()  # only the child holds it now, so its death reads as end-of-file
        # The worker ends a child it gave up on while the app may be ending it too.
        self._ending = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def state(self) -> State:
        """``alive``, ``stopped`` (suspended by a signal: it will answer nothing until
        continued) or ``ended``."""
        if not self._process.is_alive():
            return "ended"
        try:
            # /proc/PID/stat: "pid (name) state ...": the name may hold spaces and parentheses.
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1]
        except (OSError, IndexError):
            return "alive"  # no /proc (not Linux): a stopped child is caught by the time limit
        return "stopped" if fields.split()[:1] in (["T"], ["t"]) else "alive"

    def send(self, request: Request) -> None:
        try:
            self._conn.send(request)
        except OSError:
            raise ModelProcessDied(self._reason()) from None

    def receive(self, wait: float = 0.5) -> tuple[Any, ...] | None:
        """The child's next message, or None when none came within ``wait`` seconds."""
        end = time.monotonic() + wait
        while True:
            if self._conn.poll(max(0.0, min(0.5, end - time.monotonic()))):
                try:
                    message: tuple[Any, ...] = self._conn.recv()
                    return message
                except (EOFError, OSError):
                    break
            # A message sent just before the child died is still read first.
            if not self._process.is_alive() and not self._conn.poll(0):
                break
            if time.monotonic() >= end:
                return None
        raise ModelProcessDied(self._reason())

    def _reason(self) -> str:
        self._process.join(10)
        return exit_reason(self._process.exitcode)

    def kill(self) -> None:
        """End the child now, whatever it is doing (SIGKILL ends a stopped process too); the
        locks of the run folders it was writing go with it."""
        with self._ending:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(10)
            self._conn.close()

    def close(self) -> None:
        """Ask the child to finish, and stop it if it does not within a few seconds."""
        with self._ending:
            if self.state() == "alive":
                with contextlib.suppress(OSError):  # it may be gone already
                    self._conn.send(None)
                self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._conn.close()


def serve_requests(config: AppConfig, conn: Connection) -> None:
    """The child's loop: run each request sent until the parent sends None or goes away."""
    from popcorn.errors import error_line

    # Ctrl-C in the terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    models = Models(config)

    def progress(name: str, state: str, reason: str = "") -> None:
        conn.send(("stage", name, state, reason))

    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        for mode in request.modes:
            try:
                result = models.run_mode(request, mode, progress)
            except Exception as error:  # the request's error; the process serves the next one
                conn.send(("error", mode, error_line(error)))
            else:
                conn.send(("result", mode, result))
        conn.send(("end",))


class Models:
    """What the child runs requests with. The models themselves (LLMs, the PE index, the
    renderers, the predictor) are held by :data:`~popcorn.residency.MODELS` and shared by
    every request's pipeline; switching between more than :data:`LLMS_KEPT` LLMs lets the
    loaded ones go first."""

    def __init__(self, config: AppConfig, llms_kept: int = LLMS_KEPT) -> None:
        self.config = config
        self.llms_kept = llms_kept
        self._llms: list[str] = []
        """The LLMs asked for since the loaded ones were last let go."""

    def pipeline(self, request: Request, mode: str) -> Pipeline:
        """The pipeline for ``request``'s LLM, mode and generators."""
        from popcorn.pipeline import Pipeline
        from popcorn.residency import MODELS

        r = request
        if r.llm not in self._llms:
            if len(self._llms) >= self.llms_kept:
                MODELS.release("llm")
                self._llms.clear()
            self._llms.append(r.llm)
        s = self.config.settings
        settings = s.model_copy(
            update={
                "llm": s.llm.model_copy(update={"spec": r.llm}),
                "pe": s.pe.model_copy(update={"refs": r.refs, "categories": r.categories}),
            }
        )
        return Pipeline(settings, pe=mode == "pe").with_media(video=r.video, cover=r.cover)

    def run_mode(self, request: Request, mode: str, progress: Progress) -> dict[str, Any]:
        """Script, media and score of one mode; ``progress(stage, state)`` tells the page."""
        r = request
        pipeline = self.pipeline(r, mode)
        if r.candidates > 1 and pipeline.predictor is not None:
            progress(f"{mode}: script", "running", "")
            outcome = pipeline.best_of(r.query, r.candidates, 2)
            for step in ("script", "media", "score"):
                progress(f"{mode}: {step}", "done", "")
            result = describe_run(outcome.winner.result.run_dir)
            # The page needs the candidates' run names, never the server's folders.
            result["candidates"] = [
                {**c.to_dict(), "run_dir": c.result.run_dir.name} for c in outcome.candidates
            ]
            return result
        settings = self.config.settings

        def on_step(name: str, state: str) -> None:
            # A skipped step says why (no predictor, no clip), so the page can tell the user.
            why = skip_reason(settings, name, r.video, r.cover) if state == "skipped" else ""
            progress(f"{mode}: {name}", state, why)

        done = pipeline.run(r.query, on_step=on_step)
        return describe_run(done.run_dir)
