"""Retrying one step of an attempt through a transient failure, inside the action's deadline.

The SDKs already retry each request a few times within a second or two (urllib3 under
minio, botocore under boto3). That does not outlast an S3 endpoint that restarts or
refuses connections for ten seconds, and failing the action then throws away work that
already finished (a build, the inputs downloaded). So the worker retries each step on its
own (one download, the provider's run, one upload) when its error says it is retryable:
the steps that finished stay finished.

Waits grow exponentially with *full jitter* (the n-th wait is uniform in
``[0, min(max_delay, base_delay * 2**(n-1))]``, as in the AWS Architecture Blog's
"Exponential Backoff And Jitter"), so workers that lost the same endpoint do not come back
in lockstep. Celery's ``get_exponential_backoff_interval`` rounds to whole seconds and
botocore's ``ExponentialBackoff`` needs its own retry context, hence the one line here.

Pure: the clock, the wait and the randomness are parameters, so tests need no services
and no real time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

__all__ = ["RetriesExhausted", "Retry", "RetryPolicy", "error_message", "is_transient", "retrying"]


@dataclass(frozen=True)
class RetryPolicy:
    """How long one step keeps trying: whichever of the two limits comes first.

    ``max_attempts`` counts tries, the first one included (1: never retry);
    ``budget_seconds`` bounds the time from the first try to the start of the last one.
    """

    max_attempts: int = 10
    budget_seconds: float = 60.0
    base_delay: float = 1.0
    max_delay: float = 15.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.budget_seconds < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry budget and delays must not be negative")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after the ``failures``-th failure in a row (1-based), full jitter."""
        return rand() * min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))


@dataclass(frozen=True)
class Retry:
    """A failed try that will be tried again: what ``on_retry`` hears about."""

    attempt: int  # the try that failed, 1-based
    max_attempts: int
    error: BaseException
    delay: float  # seconds until the next try
    elapsed: float  # seconds since the first try started

    def describe(self) -> str:
        return (
            f"transient failure (attempt {self.attempt} of {self.max_attempts}): "
            f"{error_message(self.error)}; retrying in {self.delay:.1f} s"
        )


class RetriesExhausted(Exception):
    """A step kept failing transiently until its attempts, its budget or the deadline ran out.

    ``error`` is the last failure; ``message`` says how long it was tried and why it failed.
    """

    def __init__(self, error: BaseException, attempts: int, elapsed: float, limit: str) -> None:
        self.error = error
        self.attempts = attempts
        self.elapsed = elapsed
        tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        self.message = f"gave up after {tries} over {elapsed:.0f} s{limit}: {error_message(error)}"
        super().__init__(self.message)


def error_message(error: BaseException) -> str:
    """Conveyor's errors and ``ActionFailed`` carry a ``message`` meant for people."""
    message = getattr(error, "message", None)
    return message if isinstance(message, str) and message else str(error) or repr(error)


def is_transient(error: BaseException) -> bool:
    """Whether the error says retrying may help (``ProviderError`` and ``ActionFailed`` do,
    through ``retryable``); anything that does not say so is final."""
    return getattr(error, "retryable", False) is True


_never_set = threading.Event()


def retrying(
    op: Callable[[], T],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
    wait: Callable[[float], bool] = _never_set.wait,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call ``op`` until it returns, retrying the failures ``transient`` accepts.

    ``deadline`` is epoch seconds by ``clock`` (an action's deadline): no try starts after
    it. ``wait(seconds)`` sleeps and returns True when the step should stop instead
    (``threading.Event.wait`` of the attempt's cancellation), which re-raises the last
    failure. A final failure (not transient) is raised as it is; so is a transient one
    when the policy allows a single try. Otherwise running out raises RetriesExhausted.
    """
    start = clock()
    stop_at = start + policy.budget_seconds
    timeout_binds = False
    if deadline is not None and deadline < stop_at:
        stop_at, timeout_binds = deadline, True
    attempt = 0
    while True:
        attempt += 1
        try:
            return op()
        except Exception as exc:
            if not transient(exc) or policy.max_attempts == 1:
                raise
            now = clock()
            remaining = stop_at - now
            if attempt >= policy.max_attempts or remaining <= 0:
                limit = ""
                if attempt < policy.max_attempts and timeout_binds:
                    limit = " (the action's timeout is near)"
                raise RetriesExhausted(exc, attempt, now - start, limit) from exc
            # Never sleep past the budget: the last try starts when it runs out.
            delay = min(policy.delay(attempt, rand), remaining)
            if on_retry is not None:
                on_retry(Retry(attempt, policy.max_attempts, exc, delay, now - start))
            if wait(delay):
                raise
