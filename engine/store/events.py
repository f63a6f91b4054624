"""The event stream: EventBridge-shaped state changes, appended by transitions (in their
own MULTI, so an event exists exactly when the change it describes does)."""

from __future__ import annotations

import json
from typing import Any

import redis

from engine import keys
from engine.store.connection import redis_errors


class EventLog:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def read(self, after: str = "0", count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Events after stream id ``after`` (``"0"``: from the start), oldest first."""
        with redis_errors("reading events"):
            rows: Any = self.r.xrange(
                keys.EVENTS, min=f"({after}" if after != "0" else "-", count=count
            )
        return [(str(rid), json.loads(fields["event"])) for rid, fields in rows or []]
