"""Tags in Redis: one hash per resource (:func:`keys.pipeline_tags`, :func:`keys.webhook_tags`).

Adding checks the resource exists and the 50-tag limit against the merged set inside one
WATCH/MULTI, so two TagResource calls racing cannot leave a resource over the limit, and a
resource deleted meanwhile gets no orphan tags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from engine.errors import ConflictError, NotFoundError
from engine.store.connection import redis_errors
from engine.tags import check_count

MAX_CAS_RETRIES = 50

# Reads, on the watched connection, whether the resource exists.
Exists = Callable[[Any], bool]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class TagStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get(self, key: str) -> dict[str, str]:
        with redis_errors("reading tags"):
            raw = self.r.hgetall(key)
        return dict(sorted((_text(k), _text(v)) for k, v in raw.items()))

    def add(
        self,
        key: str,
        tags: Mapping[str, str],
        *,
        watch: Sequence[str],
        exists: Exists,
        missing: str,
    ) -> None:
        """Add or overwrite ``tags``; NotFoundError(``missing``) if the resource is gone."""
        self._cas(key, watch, exists, missing, lambda cur: {**cur, **tags}, tags, ())

    def remove(
        self,
        key: str,
        tag_keys: Sequence[str],
        *,
        watch: Sequence[str],
        exists: Exists,
        missing: str,
    ) -> None:
        def without(cur: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in cur.items() if k not in tag_keys}

        self._cas(key, watch, exists, missing, without, {}, tag_keys)

    def _cas(
        self,
        key: str,
        watch: Sequence[str],
        exists: Exists,
        missing: str,
        merge: Callable[[dict[str, str]], dict[str, str]],
        put: Mapping[str, str],
        drop: Sequence[str],
    ) -> None:
        with redis_errors("writing tags"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(key, *watch)  # type: ignore[no-untyped-call]
                    if not exists(p):
                        raise NotFoundError(missing)
                    current = {_text(k): _text(v) for k, v in p.hgetall(key).items()}
                    check_count(len(merge(current)))
                    p.multi()
                    if put:
                        p.hset(key, mapping={k: v for k, v in put.items()})
                    if drop:
                        p.hdel(key, *drop)
                    p.execute()
                    return
                except redis.WatchError:
                    continue
        raise ConflictError("the resource's tags are being changed concurrently; try again")
