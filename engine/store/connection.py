"""The Redis client, and Redis errors translated to Conveyor's error tree in one place.

Every store module talks to Redis inside :func:`redis_errors`, so callers (the service, the
API, workers) see :class:`ServiceUnavailableError` for an unreachable Redis and never a
redis-py exception. The client retries a dropped connection a few times with backoff by
itself; compare-and-set loops ride out longer outages (a restart) on top of that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from engine.errors import ServiceUnavailableError, StoreError

# Errors that mean "Redis is not there right now" (restarting, failing over, unreachable).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def connect(url: str) -> redis.Redis:
    """A client for the state store: decoded strings, bounded timeouts, retries with backoff
    on a dropped connection (so a Redis restart costs a pause, not an error)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=30,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 6),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
    )


@contextmanager
def redis_errors(doing: str) -> Iterator[None]:
    """Translate redis-py's errors raised while ``doing`` something into the error tree."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise ServiceUnavailableError(f"Redis is unreachable ({doing}): {exc}") from exc
    except redis.WatchError:
        raise  # compare-and-set loops handle these themselves
    except redis.RedisError as exc:
        raise StoreError(f"Redis refused {doing}: {exc}") from exc
