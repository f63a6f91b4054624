"""The identity a request is being served for, readable anywhere below the API layer.

The API sets it (in the worker thread that runs the operation) before calling the
operation's handler; the service and the audit log read it. Outside a request (workers,
beat, tests calling the service directly) it is :data:`SYSTEM`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from engine.auth.principals import Principal, Role


@dataclass(frozen=True)
class RequestContext:
    principal: Principal
    request_id: str = ""
    access_key: str | None = None
    source_ip: str | None = None


# Conveyor's own moves (the scheduler, triggers, beat): not a person.
SYSTEM = RequestContext(Principal("conveyor", frozenset({Role.ADMIN})))

_CURRENT: ContextVar[RequestContext] = ContextVar("conveyor_request", default=SYSTEM)


def current() -> RequestContext:
    return _CURRENT.get()


@contextmanager
def acting_as(ctx: RequestContext) -> Iterator[RequestContext]:
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
