"""The app's work: one request runs Basic and PE side by side (script, media, score each).

Requests wait in a queue and run one at a time, so several users are queued rather than
fighting over one GPU; the page polls a request's state while it runs. The queue and every
request's state live here, in the app's process; the model work itself runs in a child process
(:mod:`popcorn.app.process`), so a crash of a native library fails the request it was working
on, the child is replaced, and the queue goes on.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from popcorn.app.guard import public_text
from popcorn.app.process import MODES, ModelProcess, ModelProcessDied
from popcorn.config import PESettingsModel, Settings, int_limits
from popcorn.errors import PopcornError, RunStoreError, UsageError
from popcorn.generation import validate_query

MAX_QUEUE = 20
# PE's ranges are the settings' own (the same as the CLI and study files); best-of-N in the app
# is kept small, since one request holds the queue.
_NUMBERS = {
    "refs": int_limits(PESettingsModel, "refs"),
    "categories": int_limits(PESettingsModel, "categories"),
    "candidates": (1, 8),
}


class _Body(BaseModel):
    """The JSON the page sends; strict, so ``{"query": {...}}`` or ``"refs": true`` is refused
    instead of being turned into text or a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = ""
    llm: str | None = None
    refs: int = 10
    categories: int = 1
    video: str | None = None
    cover: str | None = None
    candidates: int = 1


def _body_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "request"
    if first["type"] == "extra_forbidden":
        return f"unknown field {name!r}: a request takes {', '.join(_Body.model_fields)}"
    if name in _NUMBERS:
        low, high = _NUMBERS[name]
        return f"{name} must be a whole number from {low} to {high}"
    return f"{name} must be a string"


@dataclass(frozen=True)
class Request:
    query: str
    llm: str = "embedded"
    refs: int = 10
    categories: int = 1
    video: str = "preview"
    cover: str = "preview"
    candidates: int = 1

    @classmethod
    def from_json(cls, data: Any, llms: list[str], videos: list[str], covers: list[str]) -> Request:
        """Validate what the page sent; every problem is a ``UsageError`` the page shows."""
        if not isinstance(data, dict):
            raise UsageError("the request must be a JSON object")
        try:
            body = _Body.model_validate(data)
        except ValidationError as error:
            raise UsageError(_body_error(error)) from None
        query = validate_query(body.query)

        def choice(name: str, value: str | None, allowed: list[str], default: str) -> str:
            value = value or default
            if value not in allowed:
                raise UsageError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
            return value

        for name, (low, high) in _NUMBERS.items():
            if not low <= getattr(body, name) <= high:
                raise UsageError(f"{name} must be a whole number from {low} to {high}")
        return cls(
            query=query,
            llm=choice("llm", body.llm, llms, llms[0]),
            refs=body.refs,
            categories=body.categories,
            video=choice("video", body.video, videos, "preview"),
            cover=choice("cover", body.cover, covers, "preview"),
            candidates=body.candidates,
        )


@dataclass
class Task:
    id: str
    request: Request
    status: str = "queued"  # queued, running, done, failed
    stages: list[dict[str, str]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def stage(self, name: str, state: str) -> None:
        for item in self.stages:
            if item["name"] == name:
                item["state"] = state
                return
        self.stages.append({"name": name, "state": state})

    def fail(self, mode: str, message: str) -> None:
        """Record ``mode``'s error: its running stage failed, the ones after it never ran."""
        self.errors[mode] = message
        for item in self.stages:
            if item["name"].startswith(mode) and item["state"] != "done":
                item["state"] = "failed" if item["state"] == "running" else "skipped"


@dataclass(frozen=True)
class AppConfig:
    out: Path
    corpus: Path
    predictor: Path
    llms: list[str]
    host: str = "127.0.0.1"
    """The address the app listens on; it answers only Host names that match it."""
    settings: Settings = field(default_factory=Settings)
    """Everything else (LLM options, decoding, PE embedder, media), as the CLI reads them."""

    def pipeline_settings(self) -> Settings:
        """``settings`` with the app's run store, corpus and predictor folders."""
        s = self.settings
        return s.model_copy(
            update={
                "run": s.run.model_copy(update={"out": self.out}),
                "pe": s.pe.model_copy(update={"corpus": self.corpus}),
                "predictor": s.predictor.model_copy(update={"path": self.predictor}),
            }
        )

    def public(self, text: object) -> str:
        """Error text fit for the page: no credentials, no server folders."""
        return public_text(text, (self.out, self.corpus, self.predictor))


class Worker:
    """Owns the queue, the thread that hands requests to the model process, and that process."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self.queue: queue.Queue[Task | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._process: ModelProcess | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="popcorn-app-worker", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> Task:
        with self._lock:
            waiting = sum(t.status in ("queued", "running") for t in self.tasks.values())
            if waiting >= MAX_QUEUE:
                raise UsageError(f"{waiting} requests are waiting already: try again in a minute")
            task = Task(f"t{next(self._ids)}", request)
            for mode in MODES:
                for step in ("script", "media", "score"):
                    task.stage(f"{mode}: {step}", "waiting")
            self.tasks[task.id] = task
        self.queue.put(task)
        return task

    def ahead_of(self, task: Task) -> int:
        """Requests that will run before ``task`` (0 once it runs)."""
        if task.status != "queued":
            return 0
        with self._lock:
            return sum(
                t.status in ("queued", "running") and int(t.id[1:]) < int(task.id[1:])
                for t in self.tasks.values()
            )

    @property
    def model_pid(self) -> int | None:
        """The model process's pid while one runs."""
        process = self._process
        return process.pid if process is not None and process.alive else None

    def close(self) -> None:
        """Stop taking requests and end the model process (the app is shutting down)."""
        self._closing = True
        self.queue.put(None)
        process = self._process
        if process is not None:
            process.close()
        self._thread.join(10)

    def _loop(self) -> None:
        from popcorn.runs.store import now

        while True:
            task = self.queue.get()
            if task is None or self._closing:
                return
            task.status = "running"
            started = now()
            try:
                self._run(task)
            except ModelProcessDied as death:
                self._process = None
                self._crashed(task, str(death), started)
            except Exception as error:  # the page shows it; the queue goes on
                from popcorn.errors import error_line

                self._unfinished(task, self.config.public(error_line(error)))
            task.status = "done" if task.results else "failed"

    def _run(self, task: Task) -> None:
        if self._process is None or not self._process.alive:
            self._process = ModelProcess(self.config)
        self._process.send(task.request)
        while True:
            kind, *rest = self._process.receive()
            if kind == "stage":
                task.stage(rest[0], rest[1])
            elif kind == "result":
                task.results[rest[0]] = rest[1]
            elif kind == "error":
                task.fail(rest[0], self.config.public(rest[1]))
            elif kind == "end":
                return

    def _unfinished(self, task: Task, message: str) -> None:
        for mode in MODES:
            if mode not in task.results and mode not in task.errors:
                task.fail(mode, message)

    def _crashed(self, task: Task, reason: str, started: str) -> None:
        """The model process died on ``task``: fail what it had not finished, and the run
        folders it left running (the next process starts fresh)."""
        self._unfinished(task, f"{reason}; the next request gets a fresh model process")
        from popcorn.runs.store import Run, RunStore

        for run in RunStore(self.config.out):
            # Runs this request started or took over; earlier ones are not the crash's.
            if run.status != "running" or run.manifest.updated_at < started:
                continue
            try:
                # The dead process's lock went with it; a lock still held is another live
                # writer's (a CLI on the same store), whose run is not ours to end.
                with run.lock(wait=0):
                    current = Run.load(run.path)
                    if current.status == "running":
                        current.save(status="failed", error={"reason": "crash", "message": reason})
            except (OSError, PopcornError):
                continue


def describe_run(run_dir: Path) -> dict[str, Any]:
    """What the page shows of a run, from its folder (also used for re-opened history).

    A damaged run (an unreadable script or references file) is a ``RunStoreError`` naming the
    run and the file, never a path of the server.
    """
    from popcorn.runs.store import Run

    run = Run.load(run_dir)
    files = run.manifest.files
    reading = files.get("script", "script.json")
    try:
        script = run.script()
        reasoning = ""
        if files.get("script"):
            reasoning = str(run.read_json(files["script"]).get("reasoning") or "")
        refs: list[dict[str, Any]] = []
        if files.get("references"):
            reading = files["references"]
            refs = [
                {k: item.get(k) for k in ("title", "category", "comment_count", "popular")}
                for item in run.read_json(reading).get("references", [])
            ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunStoreError(
            f"run {run_dir.name} is damaged: its {reading} cannot be read "
            f"({type(error).__name__}); run its query again with popcorn generate --force"
        ) from None
    if script is None:
        raise RunStoreError(f"run {run_dir.name} has no script")
    video = run.manifest.stages.get("media", {}).get("video")
    return {
        "run": run_dir.name,
        "query": run.manifest.query,
        "mode": run.manifest.mode,
        "title": script.title,
        "cover_prompt": script.cover_prompt,
        "video_prompt": script.video_prompt,
        "references": refs,
        "reasoning": reasoning,
        "cover": files.get("cover"),
        "clip": files.get("clip"),
        "preview": isinstance(video, dict) and bool(video.get("preview", False)),
        "score": _shown_score(run.manifest.stages.get("score")),
        "created_at": run.manifest.created_at,
    }


def _shown_score(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The score record with the predictor's folder cut to its name (the page needs no server
    paths)."""
    if record is None or not isinstance(record.get("predictor"), dict):
        return record
    folder = Path(str(record["predictor"].get("folder", ""))).name
    return {**record, "predictor": {**record["predictor"], "folder": folder}}
