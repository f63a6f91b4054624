"""Job-worker action types in Redis: one hash, ``Owner/Category/Provider/Version`` -> record.

A deleted Custom type keeps its record (marked deleted), so that it can be restored only by
the same definition, as AWS documents, and so that actions already running of it finish.
Each write is a WATCH/MULTI on the hash: two creations racing cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from engine import keys
from engine.action_types import ActionTypeRecord, described
from engine.errors import ConflictError, ValidationError
from engine.store.connection import redis_errors

MAX_CAS_RETRIES = 50


class ActionTypeStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get(self, key: str) -> ActionTypeRecord | None:
        """The record under ``key``, deleted or not."""
        with redis_errors("reading an action type"):
            raw = self.r.hget(keys.ACTION_TYPES, key)
        return ActionTypeRecord.model_validate_json(raw) if raw else None

    def all(self) -> list[ActionTypeRecord]:
        """Every record, deleted ones included, ordered by key."""
        with redis_errors("reading action types"):
            raw = self.r.hgetall(keys.ACTION_TYPES)
        return [ActionTypeRecord.model_validate_json(raw[k]) for k in sorted(raw)]

    def live(self) -> list[ActionTypeRecord]:
        return [r for r in self.all() if not r.deleted]

    def create(self, record: ActionTypeRecord) -> ActionTypeRecord:
        """CreateCustomActionType: new, the same again (idempotent), or a deleted one
        restored by its exact definition. ValidationError for another definition under a
        version already used."""

        def change(current: ActionTypeRecord | None) -> ActionTypeRecord:
            if current is None:
                return record
            if current.same_definition(record):
                return record  # created again, or restored
            what = described(record.owner, record.category.value, record.provider, record.version)
            state = "was deleted" if current.deleted else "already exists"
            raise ValidationError(
                f"{what} {state} with a different definition: a custom action type is "
                "created again only with exactly its definition; give the new definition a "
                "version that was never used"
            )

        return self._cas(record.key, change)

    def put(self, record: ActionTypeRecord) -> ActionTypeRecord:
        """UpdateActionType: register or replace a declaration."""
        return self._cas(record.key, lambda _: record)

    def delete(self, key: str, missing: str) -> None:
        def change(current: ActionTypeRecord | None) -> ActionTypeRecord:
            if current is None or current.deleted:
                raise ValidationError(missing)
            return current.model_copy(update={"deleted": True})

        self._cas(key, change)

    def _cas(
        self, key: str, change: Callable[[ActionTypeRecord | None], ActionTypeRecord]
    ) -> ActionTypeRecord:
        with redis_errors("writing an action type"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(keys.ACTION_TYPES)  # type: ignore[no-untyped-call]
                    raw = p.hget(keys.ACTION_TYPES, key)
                    current = ActionTypeRecord.model_validate_json(raw) if raw else None
                    new = change(current)
                    p.multi()
                    p.hset(keys.ACTION_TYPES, key, new.model_dump_json())
                    p.execute()
                    return new
                except redis.WatchError:
                    continue
        raise ConflictError("action types are being changed concurrently; try again")
