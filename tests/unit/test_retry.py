"""The transient-failure retry policy (workers/retry.py), on a fake clock: no services, no
real sleeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import ArtifactError, ProviderError
from providers.base import ActionFailed
from workers.retry import RetriesExhausted, Retry, RetryPolicy, is_transient, retrying

ENDPOINT = "http://127.0.0.1:9"


class FakeTime:
    """A clock that only moves when someone waits (or an operation takes time)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def unreachable() -> ArtifactError:
    return ArtifactError(
        f"uploading s3://b/k: cannot reach S3 endpoint {ENDPOINT}: Connection refused",
        retryable=True,
    )


class Flaky:
    """An operation that fails ``times`` times, taking ``took`` seconds each, then works."""

    def __init__(
        self, times: int, error: Callable[[], Exception], t: FakeTime, took: float = 0.0
    ) -> None:
        self.times, self.error, self.t, self.took = times, error, t, took
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        self.t.now += self.took
        if self.calls <= self.times:
            raise self.error()
        return "done"


def run(op: Callable[[], str], policy: RetryPolicy, t: FakeTime, **kw: Any) -> str:
    """``retrying`` on the fake clock, with the jitter pinned to its ceiling."""
    return retrying(op, policy, wait=t.wait, clock=t.clock, rand=lambda: 1.0, **kw)


def test_the_delay_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(3, lambda: 0.25) == 1.0  # uniform in [0, ceiling]: full jitter
    assert policy.delay(3, lambda: 0.0) == 0.0


def test_transient_failures_are_retried_until_the_step_works() -> None:
    t = FakeTime()
    seen: list[Retry] = []
    op = Flaky(3, unreachable, t)
    assert run(op, RetryPolicy(max_attempts=5), t, on_retry=seen.append) == "done"
    assert op.calls == 4
    assert t.waits == [1.0, 2.0, 4.0]
    assert [(r.attempt, r.max_attempts, r.delay) for r in seen] == [
        (1, 5, 1.0),
        (2, 5, 2.0),
        (3, 5, 4.0),
    ]
    assert seen[1].describe() == (
        f"transient failure (attempt 2 of 5): uploading s3://b/k: cannot reach S3 endpoint "
        f"{ENDPOINT}: Connection refused; retrying in 2.0 s"
    )


@pytest.mark.parametrize(
    "error",
    [
        lambda: ArtifactError("refusing to extract: 5000 entries", retryable=False),
        lambda: ActionFailed("AccessDenied"),
        lambda: ValueError("a bug"),
    ],
)
def test_a_failure_that_is_not_transient_is_raised_at_once(error: Callable[[], Exception]) -> None:
    t = FakeTime()
    op = Flaky(1, error, t)
    with pytest.raises(type(error())):
        run(op, RetryPolicy(), t)
    assert op.calls == 1 and t.waits == []


def test_both_error_kinds_say_whether_they_are_transient() -> None:
    assert is_transient(ActionFailed("throttled", retryable=True))
    assert is_transient(ProviderError("503", retryable=True))
    assert not is_transient(ActionFailed("denied"))
    assert not is_transient(OSError("disk full"))


def test_giving_up_after_max_attempts_names_the_count_time_and_last_error() -> None:
    t = FakeTime()
    op = Flaky(100, unreachable, t, took=1.0)
    with pytest.raises(RetriesExhausted) as info:
        run(op, RetryPolicy(max_attempts=4, budget_seconds=1_000), t)
    assert op.calls == 4
    # tries of 1 s each, waits of 1, 2 and 4 s between them
    assert info.value.attempts == 4 and info.value.elapsed == 11.0
    assert info.value.message == (
        "gave up after 4 attempts over 11 s: uploading s3://b/k: cannot reach S3 endpoint "
        f"{ENDPOINT}: Connection refused"
    )
    assert isinstance(info.value.error, ArtifactError)


def test_the_time_budget_bounds_the_retries_and_the_last_wait_is_clipped_to_it() -> None:
    t = FakeTime()
    op = Flaky(100, unreachable, t)
    with pytest.raises(RetriesExhausted) as info:
        run(op, RetryPolicy(max_attempts=100, budget_seconds=10, max_delay=4), t)
    # waits 1, 2, 4, then 3 (clipped: the budget ends 10 s after the first try), then stop
    assert t.waits == [1.0, 2.0, 4.0, 3.0]
    assert info.value.attempts == 5
    assert info.value.message.startswith("gave up after 5 attempts over 10 s: ")


def test_an_outage_shorter_than_the_budget_is_survived() -> None:
    """The endpoint is down for 20 s; every try takes 1.2 s (the SDK's own retries)."""
    t = FakeTime()
    back_at = t.now + 20

    def op() -> str:
        t.now += 1.2
        if t.now < back_at:
            raise unreachable()
        return "done"

    assert run(op, RetryPolicy(max_attempts=10, budget_seconds=60, max_delay=15), t) == "done"


def test_no_try_starts_after_the_actions_deadline() -> None:
    t = FakeTime()
    op = Flaky(100, unreachable, t)
    with pytest.raises(RetriesExhausted) as info:
        run(op, RetryPolicy(max_attempts=100, budget_seconds=60), t, deadline=t.now + 5)
    assert sum(t.waits) == 5.0
    assert "(the action's timeout is near)" in info.value.message


def test_a_single_allowed_attempt_raises_the_error_itself() -> None:
    t = FakeTime()
    with pytest.raises(ArtifactError):
        run(Flaky(1, unreachable, t), RetryPolicy(max_attempts=1), t)


def test_a_cancelled_wait_stops_retrying_with_the_last_error() -> None:
    t = FakeTime()
    op = Flaky(100, unreachable, t)
    with pytest.raises(ArtifactError):
        retrying(op, RetryPolicy(), wait=lambda s: True, clock=t.clock)
    assert op.calls == 1


def test_the_jitter_is_random_by_default() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    delays = {policy.delay(5) for _ in range(50)}
    assert len(delays) > 1 and all(0 <= d <= 16 for d in delays)


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(budget_seconds=-1)
