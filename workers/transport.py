"""kombu's Redis transport, minus a per-message cost.

kombu's Redis channel builds a new ``redis.Redis`` client object for every message it
publishes (``Channel.conn_or_acquire``): a task sent, and every task event a worker emits
for Flower. Building one copies redis-py's table of ~170 response callbacks, about 0.4 ms of
CPU, which is more than the publish itself. The client object holds no connection (its pool
does, and is shared), and redis-py clients are thread-safe, so this channel builds it once
and reuses it. Everything else is kombu's own; the broker URL stays ``redis://``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client if client else self._publisher

    @cached_property
    def _publisher(self) -> Any:
        return self._create_client()  # type: ignore[no-untyped-call]

    def _disconnect_pools(self) -> None:
        # The client holds the pool being dropped (on close, after a fork): drop it too,
        # so the next publish builds one on the channel's new pool.
        self.__dict__.pop("_publisher", None)
        super()._disconnect_pools()  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> type[Transport] | None:
    """The ``broker_transport`` setting for a broker URL: this transport for Redis URLs,
    kombu's choice (from the URL) for anything else."""
    scheme = broker_url.split("://", 1)[0].lower()
    return Transport if scheme in ("redis", "rediss") else None
