"""The app's work: one request runs Basic and PE side by side (script, media, score each).

Requests wait in a queue and run one at a time, so several users are queued rather than
fighting over one GPU; the page polls a request's state while it runs. The queue and every
request's state live here, in the app's process; the model work itself runs in a child process
(:mod:`popcorn.app.process`), so a crash of a native library fails the request it was working
on, the child is replaced, and the queue goes on.

Nothing a request meets may stop the queue: a request that runs past its time limit (a hung or
SIGSTOPped child) or is cancelled has its child killed and replaced, and the worker thread runs
under a supervisor that fails only the request it was on when anything unforeseen escapes, then
takes the next one. Finished requests are kept for the page a while, not for ever.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popcorn.app.process import ModelProcess, ModelProcessDied
from popcorn.app.requests import AppConfig, Request
from popcorn.errors import PopcornError, UsageError, error_line

if TYPE_CHECKING:
    from popcorn.runs.store import Run

MAX_QUEUE = 20
FINISHED_KEPT = 100
"""Finished requests the page can still poll; older ones are forgotten (404)."""
_WAIT = 0.5
"""How often a running request's time limit and cancel mark are looked at, in seconds."""
_log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")


@dataclass
class Task:
    id: str
    request: Request
    status: str = "queued"  # queued, running, then done, failed or cancelled
    stages: list[dict[str, str]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    cancel_asked: bool = False

    def stage(self, name: str, state: str, reason: str = "") -> None:
        """Set stage ``name``'s state; ``reason`` says why it was skipped (kept only then)."""
        for item in self.stages:
            if item["name"] == name:
                item["state"] = state
                if reason:
                    item["reason"] = reason
                return
        self.stages.append({"name": name, "state": state, **({"reason": reason} if reason else {})})

    def fail(self, mode: str, message: str) -> None:
        """Record ``mode``'s error: its running stage failed, the ones after it never ran."""
        self.errors[mode] = message
        for item in self.stages:
            if item["name"].startswith(mode) and item["state"] != "done":
                item["state"] = "failed" if item["state"] == "running" else "skipped"


class RequestStopped(PopcornError):
    """A running request was stopped by the app: it ran out of time, or was cancelled."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def duration(seconds: float) -> str:
    """``seconds`` as a person says it: ``30 min``, ``90 s``."""
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def scan_runs(store: Path) -> tuple[list[Run], list[str]]:
    """The runs of ``store`` that can be read, and a note naming each folder that cannot.

    Never raises: a store or folder that cannot be read costs the app its listing of that
    folder, never a request or the worker thread.
    """
    from popcorn.runs.store import RunStore

    try:
        return RunStore(store).scan()
    except Exception as error:  # an unreadable store, or whatever one planted folder raised
        return [], [f"cannot list the run store: {error_line(error)}"]


class Worker:
    """Owns the queue, the thread that hands requests to the model process, and that process."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self.queue: queue.Queue[Task | None] = queue.Queue()
        self.restarts = 0
        """How often the supervisor restarted the loop after something escaped it."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._process: ModelProcess | None = None
        self._current: Task | None = None
        self._closing = False
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._supervise, name="popcorn-app-worker", daemon=True)
        thread.start()
        return thread

    def submit(self, request: Request) -> Task:
        with self._lock:
            waiting = sum(t.status in ACTIVE for t in self.tasks.values())
            if waiting >= MAX_QUEUE:
                raise UsageError(f"{waiting} requests are waiting already: try again in a minute")
            task = Task(f"t{next(self._ids)}", request)
            for mode in request.modes:
                for step in ("script", "media", "score"):
                    task.stage(f"{mode}: {step}", "waiting")
            self.tasks[task.id] = task
            if not self._thread.is_alive() and not self._closing:
                # The supervisor catches what the loop raises; should the thread end anyway,
                # a new request must not wait for ever on a queue nobody reads.
                _log.error("the app's worker thread had ended; starting a new one")
                self.restarts += 1
                self._thread = self._start()
        self.queue.put(task)
        return task

    def cancel(self, task: Task) -> str:
        """Cancel ``task``: a queued one is dropped at once, a running one has its model process
        killed within a moment. Returns its status (``cancelled`` or, for a while, ``running``)."""
        with self._lock:
            if task.status not in ACTIVE:
                raise UsageError(f"request {task.id} has {task.status} already: nothing to cancel")
            task.cancel_asked = True
            if task.status == "queued":
                self._unfinished(task, "cancelled before it ran")
                task.status = "cancelled"
        self._prune()
        return task.status

    def ahead_of(self, task: Task) -> int:
        """Requests that will run before ``task`` (0 once it runs)."""
        if task.status != "queued":
            return 0
        with self._lock:
            return sum(
                t.status in ACTIVE and int(t.id[1:]) < int(task.id[1:]) for t in self.tasks.values()
            )

    def health(self) -> dict[str, Any]:
        """Whether the worker thread and the model process are alive, and the queue's length."""
        with self._lock:
            queued = sum(t.status == "queued" for t in self.tasks.values())
            running = [t.id for t in self.tasks.values() if t.status == "running"]
        process = self._process
        worker = self._thread.is_alive()
        return {
            "ok": worker,
            "worker": "alive" if worker else "ended",
            # "none" between a crash and the next request: a fresh one starts on demand.
            "model_process": process.state() if process is not None else "none",
            "queued": queued,
            "running": running[0] if running else None,
            "restarts": self.restarts,
        }

    @property
    def model_pid(self) -> int | None:
        """The model process's pid while one runs."""
        process = self._process
        return process.pid if process is not None and process.alive else None

    def close(self) -> None:
        """Stop taking requests and end the model process (the app is shutting down)."""
        self._closing = True
        self.queue.put(None)
        self._thread.join(10)  # a running request is stopped within a moment
        process, self._process = self._process, None
        if process is not None:
            process.close()

    def _supervise(self) -> None:
        while not self._closing:
            try:
                self._loop()
                return
            except Exception as error:  # a bug of ours: it costs one request, not the queue
                _log.exception("the app's worker failed; it goes on with the next request")
                self.restarts += 1
                task, self._current = self._current, None
                self._drop_process()  # in the middle of who knows what: start afresh
                if task is not None:
                    message = f"the app failed on this request ({error_line(error)})"
                    self._unfinished(task, self.config.public(message))
                    self._finish(task)

    def _loop(self) -> None:
        from popcorn.runs.store import now

        while True:
            task = self.queue.get()
            if task is None or self._closing:
                return
            with self._lock:
                if task.status != "queued":
                    continue  # cancelled while it waited
                task.status = "running"
            self._current = task
            started = now()
            cancelled = False
            try:
                self._run(task)
            except ModelProcessDied as death:
                self._process = None
                message = f"{death}; the next request gets a fresh model process"
                self._abandoned(task, message, started, "crash")
            except RequestStopped as stop:
                self._drop_process()
                self._abandoned(task, self.config.public(stop), started, stop.reason)
                cancelled = stop.reason == "cancelled"
            except Exception as error:  # the page shows it; the queue goes on
                self._unfinished(task, self.config.public(error_line(error)))
            self._finish(task, cancelled)
            self._current = None

    def _finish(self, task: Task, cancelled: bool = False) -> None:
        with self._lock:
            if cancelled:
                task.status = "cancelled"
            else:
                task.status = "done" if task.results else "failed"
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest finished requests beyond :data:`FINISHED_KEPT`."""
        with self._lock:
            finished = [i for i, t in self.tasks.items() if t.status not in ACTIVE]
            for task_id in finished[: max(0, len(finished) - FINISHED_KEPT)]:
                del self.tasks[task_id]

    def _drop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()

    def _run(self, task: Task) -> None:
        limit = self.config.timeout
        deadline = time.monotonic() + limit
        if self._process is not None and self._process.state() == "stopped":
            self._drop_process()  # it would answer nothing: no need to wait out the limit
        if self._process is None or not self._process.alive:
            self._process = ModelProcess(self.config)
        self._process.send(task.request)
        while True:
            message = self._process.receive(_WAIT)
            if self._closing:
                raise RequestStopped("the app shut down while it ran", "shutdown")
            if task.cancel_asked:
                raise RequestStopped("cancelled while it ran", "cancelled")
            if time.monotonic() > deadline:
                raise RequestStopped(
                    f"stopped after {duration(limit)}, the app's time limit for a request "
                    "(popcorn serve --timeout sets it); the next request gets a fresh model "
                    "process",
                    "timeout",
                )
            if message is None:
                continue
            kind, *rest = message
            if kind == "stage":
                task.stage(*rest[:3])
            elif kind == "result":
                task.results[rest[0]] = rest[1]
            elif kind == "error":
                task.fail(rest[0], self.config.public(rest[1]))
            elif kind == "end":
                return

    def _unfinished(self, task: Task, message: str) -> None:
        for mode in task.request.modes:
            if mode not in task.results and mode not in task.errors:
                task.fail(mode, message)

    def _abandoned(self, task: Task, message: str, started: str, reason: str) -> None:
        """The model process ended on ``task`` (it crashed, or was killed for running too long
        or being cancelled): fail what it had not finished, and the run folders it left
        running. Never raises: a store it cannot read costs only the clean-up."""
        self._unfinished(task, message)
        from popcorn.runs.store import Run

        runs, notes = scan_runs(self.config.out)
        for note in notes:
            _log.warning("%s", note)
        for run in runs:
            # Runs this request started or took over; earlier ones are not the crash's.
            if run.status != "running" or run.manifest.updated_at < started:
                continue
            try:
                # The dead process's lock went with it; a lock still held is another live
                # writer's (a CLI on the same store), whose run is not ours to end.
                with run.lock(wait=0):
                    current = Run.load(run.path)
                    if current.status == "running":
                        current.save(status="failed", error={"reason": reason, "message": message})
            except Exception as error:  # this folder only; the others are still ended
                _log.warning("could not mark %s failed: %s", run.path.name, error_line(error))
