"""Executors run one stage for a list of jobs and hand each outcome back to the driver, which
alone writes the ledger.

- ``LocalExecutor``: scripts from API LLMs run concurrently in threads (up to the study's
  concurrency); local LLMs, rendering and scoring run one job at a time in this process, which
  keeps every model loaded between jobs, with jobs grouped by model.
- ``RayExecutor``: scripts as Ray tasks (at most ``concurrency`` in flight); rendering and
  scoring in one Ray actor that asks for a GPU when the cluster has one and keeps its models
  loaded across jobs. Same stage functions, same ledger, same run store.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from popcorn.study.stages import Context, run_stage

Outcome = tuple[str, dict[str, Any], float]
OnDone = Callable[[str, dict[str, Any], float], None]
OnFail = Callable[[str, str], None]


def describe(error: BaseException) -> str:
    """One line for the ledger: our errors speak for themselves, others get their type."""
    from popcorn.errors import PopcornError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, PopcornError) else f"{type(error).__name__}: {text}"


def _group_key(stage: str, job: dict[str, Any]) -> tuple[str, ...]:
    """Jobs that share models run together: by LLM and mode for scripts, generators for media."""
    if stage == "script":
        return (job["llm"], job["mode"])
    if stage == "media":
        return (job["video"], job["cover"])
    return ()


class LocalExecutor:
    name = "local"

    def __init__(self, ctx: Context, concurrency: int) -> None:
        self.ctx, self.concurrency = ctx, concurrency

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        jobs = sorted(jobs, key=lambda j: _group_key(stage, j))
        if stage == "script":
            parallel = [j for j in jobs if _api_llm(j["llm"])]
            serial = [j for j in jobs if not _api_llm(j["llm"])]
            self._threads(stage, parallel, done, fail)
        else:
            serial = jobs
        for job in serial:
            try:
                done(*run_stage(self.ctx, stage, job))
            except Exception as error:  # a job's failure is recorded, the study goes on
                fail(job["key"], describe(error))

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
                        fail(key, describe(error))

    def close(self) -> None:
        pass


def _api_llm(spec: str) -> bool:
    """API backends may overlap; local ones (embedded, gguf:, hf:) run one call at a time."""
    return spec.split(":", 1)[0] in ("openai", "deepseek", "ollama")


class RayExecutor:
    name = "ray"

    def __init__(self, ctx: Context, concurrency: int, address: str | None = None) -> None:
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
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.task = ray.remote(num_cpus=1)(run_stage)
        self.worker = ray.remote(num_cpus=1, num_gpus=gpus)(_StageWorker).remote(ctx)

    def run(self, stage: str, jobs: list[dict[str, Any]], done: OnDone, fail: OnFail) -> None:
        ray = self.ray
        jobs = sorted(jobs, key=lambda j: _group_key(stage, j))
        as_tasks = stage == "script" and all(_api_llm(j["llm"]) for j in jobs)
        # API calls fan out as tasks; anything with a model goes to the one worker, which keeps
        # it loaded and takes the jobs in order (one running, one queued behind it).
        limit = self.concurrency if as_tasks else 2

        def submit(job: dict[str, Any]) -> Any:
            if as_tasks:
                return self.task.remote(self.ctx, stage, job)
            return self.worker.run.remote(stage, job)

        queue = list(jobs)
        in_flight: dict[Any, str] = {}
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                job = queue.pop(0)
                in_flight[submit(job)] = job["key"]
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                key = in_flight.pop(ref)
                try:
                    done(*ray.get(ref))
                except Exception as error:
                    fail(key, describe(getattr(error, "cause", None) or error))

    def close(self) -> None:
        self.ray.kill(self.worker)


class _StageWorker:
    """A Ray actor: one process that keeps LLMs, renderers and the predictor loaded."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, stage: str, job: dict[str, Any]) -> Outcome:
        return run_stage(self.ctx, stage, job)
