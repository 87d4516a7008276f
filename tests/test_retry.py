"""The one retry policy: bounded, backing off, honouring Retry-After, never retrying the fatal."""

from __future__ import annotations

import email.utils
import time

import pytest

from popcorn.errors import ProviderError, TransientProviderError
from popcorn.llm.openai_compat import parse_retry_after
from popcorn.llm.retry import RetryPolicy, call_with_retries


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_after_is_honoured():
    waits: list[float] = []
    fn = Flaky(TransientProviderError("429", retry_after=2.5), TransientProviderError("503"))
    assert call_with_retries(fn, RetryPolicy(attempts=3), sleep=waits.append) == "ok"
    assert waits[0] == 2.5
    assert 1.0 <= waits[1] <= 2.0  # second attempt: 2 s backoff, jittered down to half
    assert fn.calls == 3


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(base_delay=1, max_delay=5)
    upper = [policy.delay(a, None) for a in range(1, 8) for _ in range(20)]
    assert max(upper) <= 5
    assert min(policy.delay(4, None) for _ in range(50)) >= 2.5  # 8 capped to 5, jitter >= half


def test_gives_up_after_the_last_attempt():
    fn = Flaky(*[TransientProviderError("server answered HTTP 502")] * 5)
    with pytest.raises(ProviderError, match="gave up after 3 attempts"):
        call_with_retries(fn, RetryPolicy(attempts=3), sleep=lambda s: None)
    assert fn.calls == 3


def test_fatal_errors_are_not_retried():
    fn = Flaky(ProviderError("HTTP 401"))
    with pytest.raises(ProviderError, match="401"):
        call_with_retries(fn, RetryPolicy(attempts=5), sleep=lambda s: None)
    assert fn.calls == 1


def test_a_very_long_retry_after_fails_at_once():
    waits: list[float] = []
    fn = Flaky(TransientProviderError("429", retry_after=3600))
    with pytest.raises(ProviderError, match="try again later"):
        call_with_retries(fn, RetryPolicy(max_retry_after=60), sleep=waits.append)
    assert waits == []


def test_retry_after_header_forms():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(future) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after(past) == 0
