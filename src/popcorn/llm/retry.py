"""The single retry policy for LLM calls: bounded attempts, exponential backoff, Retry-After."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from popcorn.errors import ProviderError, TransientProviderError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``attempts`` calls; waits grow from ``base_delay`` to at most ``max_delay``.

    A server's Retry-After is honoured up to ``max_retry_after`` seconds; a longer one fails at
    once, since sleeping for minutes in a batch helps nobody.
    """

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # jitter spreads out concurrent clients


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, raises a fatal error, or the attempts run out."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except TransientProviderError as err:
            if attempt == policy.attempts:
                raise ProviderError(f"{err} (gave up after {attempt} attempts)") from err
            if err.retry_after is not None and err.retry_after > policy.max_retry_after:
                raise ProviderError(
                    f"{err}; the server asks to wait {err.retry_after:.0f} s, longer than "
                    f"{policy.max_retry_after:.0f} s: try again later"
                ) from err
            wait = policy.delay(attempt, err.retry_after)
            log.warning(
                "%s; retrying in %.1f s (attempt %d of %d)", err, wait, attempt + 1, policy.attempts
            )
            if stop is not None:
                if stop.wait(wait):
                    raise ProviderError("stopped while waiting to retry") from err
            else:
                sleep(wait)
    raise AssertionError("unreachable")
