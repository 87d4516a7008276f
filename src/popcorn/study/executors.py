"""Executors run one stage for a list of jobs and hand each outcome back to the driver, which
alone writes the ledger.

- ``LocalExecutor``: everything in this process, a stage's jobs grouped by model and each group
  handed to the pipeline as one batch (:func:`~popcorn.study.stages.run_batch`): scripts of
  API LLMs and of in-process models that batch (``hf:``, ``vllm:``) run up to the study's
  concurrency at once (a batching model generates them together), other local LLMs one at a
  time; every clip of a generator pair is one render batch, every score one score batch, so
  each model is loaded once per stage.
- ``RayExecutor``: scripts of API LLMs as Ray tasks (at most ``concurrency`` in flight); the
  rest in model actors, one per GPU of the cluster (or per ``gpus_per_actor``; one actor
  without a GPU on a cluster that has none), each keeping its models loaded across jobs. A
  stage's job groups are sharded by model (:func:`shard`), so with enough GPUs each actor
  loads one model; each actor gets its share of a group as one batch. Same stage functions,
  same ledger, same run store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol

from popcorn.errors import error_line
from popcorn.registry import Registry
from popcorn.study.stages import (
    Context,
    JobOutcome,
    failure_reason,
    group_key,
    run_batch,
    run_stage,
)

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


__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "failure_reason"]


def _report(outcomes: list[JobOutcome], done: OnDone, fail: OnFail) -> None:
    for outcome in outcomes:
        if outcome.fields is None:
            fail(outcome.key, outcome.error, outcome.reason)
        else:
            done(outcome.key, outcome.fields, outcome.seconds)


def _groups(stage: str, jobs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``jobs`` by the model they share (:func:`~popcorn.study.stages.group_key`), in the
    order each group first appears."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(group_key(stage, job), []).append(job)
    return list(groups.values())


class LocalExecutor:
    """Everything in this process, one batch per group of jobs that share a model."""

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
        self.ctx, self.concurrency = _with_concurrency(ctx, concurrency), concurrency

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        for group in _groups(stage, jobs):
            if stage == "script" and _api(self.ctx, group[0]["llm"]):
                self._apart(stage, group, done, fail)
            else:
                _report(run_batch(self.ctx, stage, group), done, fail)

    def _apart(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        """Scripts of an API backend: no model is loaded here, so nothing is gained by
        batching them; every job is its own call, ``concurrency`` in flight across all seeds,
        modes and N of the group (a batch per seed would run one seed at a time)."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            for outcomes in pool.map(lambda job: run_batch(self.ctx, stage, [job]), jobs):
                _report(outcomes, done, fail)

    def close(self) -> None:
        pass


def _api(ctx: Context, spec: str) -> bool:
    """Whether ``spec`` takes parallel calls without batching them (an API backend)."""
    return concurrent(ctx, spec) and not batched(ctx, spec)


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
        # Threaded actors: a script batch of a batching model runs its calls side by side in
        # one, where they meet in the model's batcher; each actor is sent one batch at a time.
        worker = ray.remote(num_cpus=1, num_gpus=gpus, max_concurrency=concurrency)(_StageWorker)
        self.workers = [worker.remote(_with_concurrency(ctx, concurrency)) for _ in range(count)]

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        if stage == "script" and all(
            concurrent(self.ctx, j["llm"]) and not batched(self.ctx, j["llm"]) for j in jobs
        ):
            self._tasks(stage, jobs, done, fail)
            return
        groups = _groups(stage, jobs)
        plan = shard([len(g) for g in groups], len(self.workers))
        batches: list[deque[list[dict[str, Any]]]] = [deque() for _ in self.workers]
        for g, group in enumerate(groups):
            # The workers serving a group share its jobs out, each as one batch.
            serving = [w for w, mine in enumerate(plan) if g in mine]
            for i, w in enumerate(serving):
                share = group[i :: len(serving)]
                if share:
                    batches[w].append(share)
        self._batches(stage, batches, done, fail)

    def _tasks(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        """API calls fan out as one task per job, at most ``concurrency`` in flight."""
        ray = self.ray
        queue = deque(jobs)
        in_flight: dict[Any, str] = {}
        while queue or in_flight:
            while queue and len(in_flight) < self.concurrency:
                job = queue.popleft()
                in_flight[self.task.remote(self.ctx, stage, job)] = job["key"]
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                key = in_flight.pop(ref)
                try:
                    done(*ray.get(ref))
                except Exception as error:
                    cause = getattr(error, "cause", None) or error
                    fail(key, error_line(cause), failure_reason(cause))

    def _batches(
        self,
        stage: str,
        batches: list[deque[list[dict[str, Any]]]],
        done: OnDone,
        fail: OnFail,
    ) -> None:
        """Send each worker its next batch (``batches[worker]``) once the one before came
        back, until every batch has come back."""
        ray = self.ray
        in_flight: dict[Any, tuple[int, list[dict[str, Any]]]] = {}

        def send(w: int) -> None:
            if batches[w]:
                batch = batches[w].popleft()
                in_flight[self.workers[w].run_batch.remote(stage, batch)] = (w, batch)

        for w in range(len(batches)):
            send(w)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                w, batch = in_flight.pop(ref)
                try:
                    _report(ray.get(ref), done, fail)
                except Exception as error:  # the actor died: the batch's jobs failed
                    cause = getattr(error, "cause", None) or error
                    for job in batch:
                        fail(job["key"], error_line(cause), failure_reason(cause))
                send(w)

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

    def run_batch(self, stage: str, jobs: list[dict[str, Any]]) -> list[JobOutcome]:
        return run_batch(self.ctx, stage, jobs)


def _with_concurrency(ctx: Context, concurrency: int) -> Context:
    """``ctx`` whose script batches run up to ``concurrency`` calls at once."""
    if ctx.settings.run.concurrency == concurrency:
        return ctx
    run = ctx.settings.run.model_copy(update={"concurrency": concurrency})
    return replace(ctx, settings=ctx.settings.model_copy(update={"run": run}))


EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", RayExecutor)
