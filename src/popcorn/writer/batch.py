"""Many queries through one writer: duplicates and refused queries set aside, failures
recorded while the rest go on, and a backend failure that retries could not fix stopping all.

A failure the backend cannot recover from (bad key, unreachable server) stops the batch: the
remaining queries would fail the same way. Ctrl-C stops it too; finished runs are kept and the
next call resumes, since each query's run is keyed by its content.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from popcorn.errors import GenerationError, ProviderError, UsageError
from popcorn.runs.lock import LockedError
from popcorn.writer.queries import QueryItem, printable_query, validate_query
from popcorn.writer.result import GenerateResult


@dataclass
class BatchReport:
    results: list[GenerateResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(query, message) for each query that ended without a script."""
    duplicates: int = 0
    stopped: str | None = None
    """Why the batch stopped early, if it did."""

    @property
    def cached(self) -> int:
        return sum(r.cached for r in self.results)


BatchCallback = Callable[[QueryItem, "GenerateResult | Exception"], None]


class WriteOne(Protocol):
    """Writes one query's script (the writer's ``generate``)."""

    def __call__(
        self,
        query: str,
        *,
        force: bool = ...,
        tags: dict[str, str] | None = ...,
        stop: threading.Event | None = ...,
    ) -> GenerateResult: ...


def write_batch(
    write: WriteOne,
    items: Iterable[QueryItem],
    *,
    workers: int = 1,
    force: bool = False,
    on_result: BatchCallback | None = None,
) -> BatchReport:
    """Every query of ``items`` through ``write``, ``workers`` at a time; done ones are
    returned from their runs, failures recorded and the rest go on."""
    report = BatchReport()
    unique, refused = _unique(items, report)
    stop = threading.Event()

    def settle(item: QueryItem, outcome: GenerateResult | Exception) -> None:
        if isinstance(outcome, GenerateResult):
            report.results.append(outcome)
        else:
            report.failures.append((item.query, str(outcome)))
            if isinstance(outcome, ProviderError) and report.stopped is None:
                report.stopped = str(outcome)
                stop.set()
        if on_result is not None:
            on_result(item, outcome)

    def one(item: QueryItem) -> GenerateResult | Exception:
        try:
            return write(item.query, force=force, tags=item.tags, stop=stop)
        except (GenerationError, ProviderError, LockedError) as err:
            return err

    for item, error in refused:
        settle(QueryItem(printable_query(item.query), item.tags), error)
    if max(1, workers) == 1:
        for item in unique:
            if stop.is_set():
                break
            settle(item, one(item))
        return report
    _in_threads(unique, one, settle, workers, stop)
    return report


def _unique(
    items: Iterable[QueryItem], report: BatchReport
) -> tuple[list[QueryItem], list[tuple[QueryItem, UsageError]]]:
    """The valid queries, each once (duplicates counted into ``report``), and the refused."""
    unique: list[QueryItem] = []
    refused: list[tuple[QueryItem, UsageError]] = []
    seen: set[str] = set()
    for item in items:
        try:
            query = validate_query(item.query)
        except UsageError as err:
            refused.append((item, err))  # refused alone: the other queries still run
            continue
        if query in seen:
            report.duplicates += 1
            continue
        seen.add(query)
        unique.append(QueryItem(query, item.tags))
    return unique, refused


def _in_threads(
    items: list[QueryItem],
    one: Callable[[QueryItem], GenerateResult | Exception],
    settle: Callable[[QueryItem, GenerateResult | Exception], None],
    workers: int,
    stop: threading.Event,
) -> None:
    """``one`` over ``items`` on ``workers`` threads, each outcome settled on this thread as it
    comes; no new query starts once ``stop`` is set."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="popcorn")
    pending: dict[Future[GenerateResult | Exception], QueryItem] = {}
    queue = iter(items)
    try:
        for item in queue:
            pending[pool.submit(one, item)] = item
            if len(pending) >= workers:
                break
        while pending:
            # A short timeout keeps the main thread responsive to Ctrl-C.
            done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                settle(pending.pop(future), future.result())
                if not stop.is_set():
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(one, nxt)] = nxt
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
