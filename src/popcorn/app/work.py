"""The app's work: one request runs Basic and PE side by side (script, media, score each),
in a single worker thread that takes requests in order, so several users are queued rather
than fighting over one GPU, and the page polls a request's state while it runs."""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popcorn.errors import PopcornError, UsageError
from popcorn.generation import validate_query

MAX_QUEUE = 20
MODES = ("basic", "pe")


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
        query = validate_query(str(data.get("query", "")))

        def choice(name: str, allowed: list[str], default: str) -> str:
            value = str(data.get(name) or default)
            if value not in allowed:
                raise UsageError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
            return value

        def number(name: str, low: int, high: int, default: int) -> int:
            value = data.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise UsageError(f"{name} must be a whole number from {low} to {high}")
            return value

        return cls(
            query=query,
            llm=choice("llm", llms, llms[0]),
            refs=number("refs", 0, 150, 10),
            categories=number("categories", 1, 4, 1),
            video=choice("video", videos, "preview"),
            cover=choice("cover", covers, "preview"),
            candidates=number("candidates", 1, 8, 1),
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


@dataclass(frozen=True)
class AppConfig:
    out: Path
    corpus: Path
    predictor: Path
    llms: list[str]


class Worker:
    """Owns the queue and the one thread that runs requests."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self.queue: queue.Queue[Task] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._predictor: Any = None
        self._generators: dict[tuple[str, str, int, int], Any] = {}
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

    def predictor(self) -> Any:
        """The trained predictor in the configured folder, loaded once; None when there is none."""
        if self._predictor is None and (self.config.predictor / "predictor.json").is_file():
            from popcorn.predictor.score import Predictor

            self._predictor = Predictor.load(self.config.predictor)
        return self._predictor

    def _loop(self) -> None:
        while True:
            task = self.queue.get()
            task.status = "running"
            for mode in MODES:
                try:
                    task.results[mode] = self._run_mode(task, mode)
                except Exception as error:  # shown in the page; the app keeps serving
                    from popcorn.study.executors import describe

                    task.errors[mode] = describe(error)
                    for item in task.stages:
                        if item["name"].startswith(mode) and item["state"] != "done":
                            item["state"] = "failed" if item["state"] == "running" else "skipped"
            task.status = "done" if task.results else "failed"

    def _run_mode(self, task: Task, mode: str) -> dict[str, Any]:
        from popcorn.generation import Generator
        from popcorn.media.render import MediaOptions, render
        from popcorn.retrieval.enhance import PESettings

        r = task.request
        pe = (
            PESettings(refs=r.refs, categories=r.categories, corpus=self.config.corpus)
            if mode == "pe"
            else None
        )
        task.stage(f"{mode}: script", "running")
        key = (r.llm, mode, r.refs, r.categories)
        if key not in self._generators:  # the LLM and the PE index load once per setting
            self._generators[key] = Generator(r.llm, out=self.config.out, pe=pe)
        generator = self._generators[key]
        media = MediaOptions(
            video=None if r.video == "none" else r.video,
            cover=None if r.cover == "none" else r.cover,
        )
        predictor = self.predictor()
        if r.candidates > 1 and predictor is not None:
            from popcorn.bestof import best_of

            outcome = best_of(
                generator, r.query, r.candidates, min(2, r.candidates), predictor, media
            )
            for step in ("script", "media", "score"):
                task.stage(f"{mode}: {step}", "done")
            result = describe_run(outcome.winner.result.run_dir)
            result["candidates"] = [c.to_dict() for c in outcome.candidates]
            return result
        run_dir = generator.generate(r.query).run_dir
        task.stage(f"{mode}: script", "done")
        task.stage(f"{mode}: media", "running")
        render(run_dir, media)
        task.stage(f"{mode}: media", "done")
        if predictor is not None and r.video != "none":
            from popcorn.predictor.score import score_run

            task.stage(f"{mode}: score", "running")
            score_run(run_dir, predictor)
            task.stage(f"{mode}: score", "done")
        else:
            task.stage(f"{mode}: score", "skipped")
        return describe_run(run_dir)


def describe_run(run_dir: Path) -> dict[str, Any]:
    """What the page shows of a run, from its folder (also used for re-opened history)."""
    from popcorn.runs.store import Run

    run = Run.load(run_dir)
    script = run.script()
    if script is None:
        raise PopcornError(f"run {run_dir.name} has no script")
    files = run.manifest.files
    refs: list[dict[str, Any]] = []
    if files.get("references"):
        data = run.read_json(files["references"])
        refs = [
            {k: item.get(k) for k in ("title", "category", "comment_count", "popular")}
            for item in data.get("references", [])
        ]
    media = run.manifest.stages.get("media", {})
    return {
        "run": run_dir.name,
        "query": run.manifest.query,
        "mode": run.manifest.mode,
        "title": script.title,
        "cover_prompt": script.cover_prompt,
        "video_prompt": script.video_prompt,
        "references": refs,
        "cover": files.get("cover"),
        "clip": files.get("clip"),
        "preview": bool(media.get("video", {}).get("preview", False)),
        "score": run.manifest.stages.get("score"),
        "created_at": run.manifest.created_at,
    }
