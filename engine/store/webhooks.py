"""PutWebhook's webhooks in Redis: one hash of records by name (:data:`keys.WEBHOOKS`) and one
of url ids to names (:data:`keys.WEBHOOK_URLS`), changed together in one MULTI.

The SecretToken is kept as given: GitHub's HMAC needs the secret itself to verify a
delivery, so it cannot be hashed. It never leaves the store except to verify (the API
redacts it, logs never see it); protect Redis as you protect the secrets it holds.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from engine import keys
from engine.errors import ConflictError
from engine.store.connection import redis_errors

MAX_CAS_RETRIES = 50


@dataclass(frozen=True)
class WebhookRecord:
    definition: dict[str, Any]  # WebhookDefinition as PutWebhook gave it (secret included)
    url_id: str  # the last part of its url, unguessable: /webhooks/v1/<url_id>
    created: float
    last_triggered: float | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def load(cls, raw: Any) -> WebhookRecord:
        return cls(**json.loads(raw))


class WebhookStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def put(self, definition: dict[str, Any]) -> WebhookRecord:
        """Create, or replace the definition of, the webhook named in ``definition``; an
        update keeps its url (what the repository was told) and its tags."""
        name = str(definition["name"])
        with redis_errors(f"storing webhook {name}"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(keys.WEBHOOKS)  # type: ignore[no-untyped-call]
                    old = p.hget(keys.WEBHOOKS, name)
                    if old is None:
                        rec = WebhookRecord(definition, secrets.token_urlsafe(24), time.time())
                    else:
                        prev = WebhookRecord.load(old)
                        rec = WebhookRecord(definition, prev.url_id, prev.created)
                    p.multi()
                    p.hset(keys.WEBHOOKS, name, rec.dump())
                    p.hset(keys.WEBHOOK_URLS, rec.url_id, name)
                    p.execute()
                    return rec
                except redis.WatchError:
                    continue
        raise ConflictError(f"webhook {name} is being changed concurrently; try again")

    def get(self, name: str) -> WebhookRecord | None:
        with redis_errors(f"reading webhook {name}"):
            raw = self.r.hget(keys.WEBHOOKS, name)
        return None if raw is None else WebhookRecord.load(raw)

    def by_url(self, url_id: str) -> WebhookRecord | None:
        with redis_errors("reading a webhook"):
            name = self.r.hget(keys.WEBHOOK_URLS, url_id)
            if name is None:
                return None
            raw = self.r.hget(keys.WEBHOOKS, name)
        rec = None if raw is None else WebhookRecord.load(raw)
        return rec if rec is not None and rec.url_id == url_id else None

    def all(self) -> list[WebhookRecord]:
        with redis_errors("listing webhooks"):
            raw = self.r.hgetall(keys.WEBHOOKS)
        return sorted((WebhookRecord.load(v) for v in raw.values()), key=lambda w: w.name)

    def delete(self, name: str) -> bool:
        """Remove the webhook, its url and its tags; False if there was none."""
        with redis_errors(f"deleting webhook {name}"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(keys.WEBHOOKS)  # type: ignore[no-untyped-call]
                    old = p.hget(keys.WEBHOOKS, name)
                    if old is None:
                        return False
                    p.multi()
                    p.hdel(keys.WEBHOOKS, name)
                    p.hdel(keys.WEBHOOK_URLS, WebhookRecord.load(old).url_id)
                    p.delete(keys.webhook_tags(name))
                    p.execute()
                    return True
                except redis.WatchError:
                    continue
        raise ConflictError(f"webhook {name} is being changed concurrently; try again")

    def record_outcome(
        self, url_id: str, *, triggered: float | None, error: tuple[str, str] | None
    ) -> None:
        """Note the last trigger and the last error (None clears it) on the webhook, unless
        it was replaced or deleted meanwhile (then the note is simply dropped)."""
        with redis_errors("recording a webhook's outcome"), self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(keys.WEBHOOKS)  # type: ignore[no-untyped-call]
                    name = p.hget(keys.WEBHOOK_URLS, url_id)
                    old = None if name is None else p.hget(keys.WEBHOOKS, name)
                    if name is None or old is None:
                        return
                    rec = WebhookRecord.load(old)
                    new = WebhookRecord(
                        rec.definition,
                        rec.url_id,
                        rec.created,
                        triggered if triggered is not None else rec.last_triggered,
                        error[0] if error else None,
                        error[1] if error else None,
                    )
                    p.multi()
                    p.hset(keys.WEBHOOKS, name, new.dump())
                    p.execute()
                    return
                except redis.WatchError:
                    continue
