"""Calls from many threads, answered in batches.

In-process models (``hf:``, ``vllm:``) answer a list of conversations faster than the same
conversations one by one, but popcorn's stages ask for one script at a time: a batch of
queries, a study and the web app each run their jobs in threads. A :class:`Batcher` sits
between the two. Each thread's :meth:`Batcher.submit` queues its request and waits; one of the
waiting threads (the first to find the model idle) takes everything queued, up to
``max_batch``, hands it to the backend's ``complete_batch`` and wakes the others with their
answers. While a batch runs, the next one fills up, so with N threads the model sees batches
of up to N.

The threads that ask at about the same time share a batch: the one that starts a batch waits
``linger`` seconds (50 ms) for the others unless ``max_batch`` requests are already queued.
Which requests share a batch depends on timing, so backends must answer a request the same way
in any batch (``hf:`` draws each row with its own seeded sampler).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")
A = TypeVar("A")


class _Ticket(Generic[R, A]):
    __slots__ = ("answer", "done", "error", "request")

    def __init__(self, request: R) -> None:
        self.request = request
        self.answer: A | None = None
        self.error: BaseException | None = None
        self.done = False


class Batcher(Generic[R, A]):
    """Gathers :meth:`submit` calls from many threads into calls of ``answer_batch``, one at a
    time; ``answer_batch`` returns one answer per request, in order."""

    def __init__(
        self,
        answer_batch: Callable[[Sequence[R]], Sequence[A]],
        *,
        max_batch: int = 64,
        linger: float = 0.05,
    ) -> None:
        self._answer_batch = answer_batch
        self.max_batch = max(1, max_batch)
        self.linger = linger
        self._cond = threading.Condition()
        self._queue: list[_Ticket[R, A]] = []
        self._busy = False
        self.sizes: list[int] = []
        """The size of every batch sent, in order (for tests and benchmarks)."""

    def submit(self, request: R) -> A:
        """Answer ``request``, in a batch with whatever other threads asked meanwhile."""
        ticket: _Ticket[R, A] = _Ticket(request)
        with self._cond:
            self._queue.append(ticket)
            self._cond.notify_all()
            while not ticket.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                try:
                    batch = self._gather()
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                finally:
                    self._busy = False
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.answer  # type: ignore[return-value]

    def _gather(self) -> list[_Ticket[R, A]]:
        """Wait (holding the turn) up to ``linger`` for a full batch; take what is queued."""
        deadline = time.monotonic() + self.linger
        while len(self._queue) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        return batch

    def _run(self, batch: list[_Ticket[R, A]]) -> None:
        self.sizes.append(len(batch))
        try:
            answers = list(self._answer_batch([t.request for t in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(answers)} answers")
        except BaseException as error:  # every request of the batch fails with it
            for ticket in batch:
                ticket.error, ticket.done = error, True
            return
        for ticket, answer in zip(batch, answers, strict=True):
            ticket.answer, ticket.done = answer, True
