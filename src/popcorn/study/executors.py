"""Executors run one stage for a list of jobs and hand each outcome back to the driver, which
alone writes the ledger.

- ``LocalExecutor``: scripts from API LLMs run concurrently in threads (up to the study's
  concurrency), and so do those of in-process models that batch (``hf:``, ``vllm:``): their
  calls meet in the model's :class:`~popcorn.llm.batching.Batcher`, which generates them
  together. Other local LLMs, rendering and scoring run one job at a time in this process,
  which keeps every model loaded between jobs, with jobs grouped by model.
- ``RayExecutor``: scripts of API LLMs as Ray tasks (at most ``concurrency`` in flight); the
  rest in model actors, one per GPU of the cluster (or per ``gpus_per_actor``; one actor
  without a GPU on a cluster that has none), each keeping its models loaded across jobs. A
  stage's jobs are sharded by model (:func:`shard`), so with enough GPUs each actor loads one
  model; an actor takes ``concurrency`` script jobs of a batching model at once and everything
  else one at a time. Same stage functions, same ledger, same run store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from popcorn.errors import error_line
from popcorn.registry import Registry
from popcorn.study.stages import Context, run_stage

EXECUTORS = Registry("study executor", "popcorn.executors")
"""Executors by ``--executor`` name; a factory takes ``(ctx, concurrency, address=...)`` (and
``gpus_per_actor=...`` when the study sets it) and returns an object with
``run(stage, jobs, done, fail)`` and ``close()``."""

Outcome = tuple[str, dict[str, Any], float]
OnDone = Callable[[str, dict[str, Any], float], None]


class OnFail(Protocol):
    """``fail(key, error, reason="")``: ``error`` one line (:func:`error_line`), ``reason`` a
    short tag the report counts failures by (:func:`failure_reason`); executors written
    before reasons existed call it with two arguments."""

    def __call__(self, key: str, error: str, reason: str = "") -> None: ...


def failure_reason(error: BaseException) -> str:
    """Why a job failed, as a tag: a parse failure's own reason (``no_json``, ``truncated``,
    ``copied_reference``, ...), else the error's type (``ProviderError``)."""
    return str(getattr(error, "reason", "") or type(error).__name__)


def _group_key(stage: str, job: dict[str, Any]) -> tuple[str, ...]:
    """Jobs that share models run together: by LLM and mode for scripts, generators for media."""
    if stage == "script":
        return (job["llm"], job["mode"])
    if stage == "media":
        return (job["video"], job["cover"])
    return ()


class LocalExecutor:
    """Everything in this process; scripts of concurrent backends in a thread pool."""

    name = "local"

    def __init__(
        self,
        ctx: Context,
        concurrency: int,
        address: str | None = None,
        gpus_per_actor: float = 1.0,
    ) -> None:
        # gpus_per_actor is the Ray executor's: a study file that sets it still runs here.
        if address is not None:
            from popcorn.errors import UsageError

            raise UsageError("--address is for --executor ray")
        self.ctx, self.concurrency = ctx, concurrency

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        jobs = sorted(jobs, key=lambda j: _group_key(stage, j))
        if stage == "script":
            parallel = [j for j in jobs if concurrent(self.ctx, j["llm"])]
            serial = [j for j in jobs if not concurrent(self.ctx, j["llm"])]
            self._threads(stage, parallel, done, fail)
        else:
            serial = jobs
        for job in serial:
            try:
                done(*run_stage(self.ctx, stage, job))
            except Exception as error:  # a job's failure is recorded, the study goes on
                fail(job["key"], error_line(error), failure_reason(error))

    def _threads(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        if not jobs:
            return
        with ThreadPoolExecutor(self.concurrency) as pool:
            pending: dict[Future[Outcome], str] = {
                pool.submit(run_stage, self.ctx, stage, job): job["key"] for job in jobs
            }
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        done(*future.result())
                    else:
                        fail(key, error_line(error), failure_reason(error))

    def close(self) -> None:
        pass


def concurrent(ctx: Context, spec: str) -> bool:
    """Whether the LLM ``spec`` may take several calls at once, as its backend says (API
    backends, batching in-process models and plugins that declare ``concurrent = True``);
    other in-process models run one call at a time."""
    return _style(ctx, spec)[0]


def batched(ctx: Context, spec: str) -> bool:
    """Whether ``spec`` is an in-process model whose concurrent calls are batched."""
    return _style(ctx, spec)[1]


def _style(ctx: Context, spec: str) -> tuple[bool, bool]:
    key = (spec, ctx.settings.llm.model_dump_json())
    if key not in _styles:
        from popcorn.llm.registry import call_style

        _styles[key] = call_style(spec, ctx.settings.llm.options())
    return _styles[key]


_styles: dict[tuple[str, str], tuple[bool, bool]] = {}


class RayExecutor:
    """Scripts of API backends as Ray tasks; model work in one actor per GPU."""

    name = "ray"

    def __init__(
        self,
        ctx: Context,
        concurrency: int,
        address: str | None = None,
        gpus_per_actor: float = 1.0,
    ) -> None:
        try:
            import ray as _ray
        except ImportError:
            from popcorn.errors import MissingDependencyError

            raise MissingDependencyError("ray", "ray", "The Ray executor") from None
        ray: Any = _ray
        self.ray = ray
        self.ctx, self.concurrency = ctx, concurrency
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        count, gpus = actor_plan(ray.cluster_resources().get("GPU", 0), gpus_per_actor)
        self.task = ray.remote(num_cpus=1)(run_stage)
        # Threaded actors: script jobs of a batching model run side by side in one and meet
        # in the model's batcher; everything else is sent one job at a time.
        worker = ray.remote(num_cpus=1, num_gpus=gpus, max_concurrency=concurrency)(_StageWorker)
        self.workers = [worker.remote(ctx) for _ in range(count)]

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        jobs = sorted(jobs, key=lambda j: _group_key(stage, j))
        script = stage == "script"
        if script and all(
            concurrent(self.ctx, j["llm"]) and not batched(self.ctx, j["llm"]) for j in jobs
        ):
            # API calls fan out as tasks, at most ``concurrency`` in flight.
            self._drain(stage, [deque(jobs)], [[0]], self.concurrency, done, fail, tasks=True)
            return
        in_actor = script and all(batched(self.ctx, j["llm"]) for j in jobs)
        groups: dict[tuple[str, ...], deque[dict[str, Any]]] = {}
        for job in jobs:
            groups.setdefault(_group_key(stage, job), deque()).append(job)
        queues = list(groups.values())
        plan = shard([len(q) for q in queues], len(self.workers))
        self._drain(stage, queues, plan, self.concurrency if in_actor else 1, done, fail)

    def _drain(
        self,
        stage: str,
        queues: list[deque[dict[str, Any]]],
        plan: list[list[int]],
        limit: int,
        done: OnDone,
        fail: OnFail,
        tasks: bool = False,
    ) -> None:
        """Send each worker (or the task pool, ``tasks``) the next job of the first of its
        queues (``plan[worker]``) that has one, ``limit`` in flight per worker, until every
        queue is empty and every job has come back."""
        ray = self.ray
        busy = [0] * len(plan)
        in_flight: dict[Any, tuple[int, str]] = {}
        while True:
            for w, mine in enumerate(plan):
                while busy[w] < limit:
                    queue = next((queues[q] for q in mine if queues[q]), None)
                    if queue is None:
                        break
                    job = queue.popleft()
                    if tasks:
                        ref = self.task.remote(self.ctx, stage, job)
                    else:
                        ref = self.workers[w].run.remote(stage, job)
                    in_flight[ref] = (w, job["key"])
                    busy[w] += 1
            if not in_flight:
                return
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                w, key = in_flight.pop(ref)
                busy[w] -= 1
                try:
                    done(*ray.get(ref))
                except Exception as error:
                    cause = getattr(error, "cause", None) or error
                    fail(key, error_line(cause), failure_reason(cause))

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)


def actor_plan(cluster_gpus: float, gpus_per_actor: float = 1.0) -> tuple[int, float]:
    """(model actors, GPUs each): one per ``gpus_per_actor`` of the cluster's GPUs (0.5: two
    per GPU, 2: one per pair), or one actor without a GPU on a cluster that has none."""
    if gpus_per_actor <= 0:
        raise ValueError("gpus_per_actor must be above 0")
    count = int(cluster_gpus / gpus_per_actor + 1e-9)
    return (count, gpus_per_actor) if count >= 1 else (1, 0.0)


def shard(sizes: list[int], workers: int) -> list[list[int]]:
    """Which job groups (one per model: LLM and mode, or clip and cover generator) each worker
    takes, as indexes into ``sizes`` (the groups' job counts), first the one it starts with.

    With at least as many workers as groups every worker serves one group, so it loads one
    model: each group gets a worker, and the spare workers go, one at a time, to the group
    with the most jobs per worker; workers of one group take its jobs as they come free.
    With fewer workers, whole groups go to the least-loaded worker, largest first, and a
    worker loads its groups' models in turn."""
    if workers >= len(sizes):
        counts = [1] * len(sizes)
        for _ in range(workers - len(sizes)):
            best = max(range(len(sizes)), key=lambda g: sizes[g] / counts[g], default=None)
            if best is None:
                break
            counts[best] += 1
        plan = [[g] for g, n in enumerate(counts) for _ in range(n)]
        return plan + [[] for _ in range(workers - len(plan))]
    plan = [[] for _ in range(workers)]
    load = [0] * workers
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):
        w = min(range(workers), key=lambda w: load[w])
        plan[w].append(g)
        load[w] += sizes[g]
    return plan


class _StageWorker:
    """A Ray actor: one process that keeps LLMs, renderers and the predictor loaded."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, stage: str, job: dict[str, Any]) -> Outcome:
        return run_stage(self.ctx, stage, job)


EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", RayExecutor)
