"""Per-process wiring of settings, store, registry, artifact store, service and Celery."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

from celery import Celery

from engine import keys
from engine.artifacts import ArtifactStore
from engine.messages import Dispatch, Revoke, task_id
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from providers import default_registry
from providers.registry import Registry
from workers.app import make_app


@dataclass
class Runtime:
    settings: Settings
    registry: Registry = field(default_factory=default_registry)
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def celery(self) -> Celery:
        return make_app(self.settings, self.registry)

    @cached_property
    def store(self) -> Store:
        return Store.from_url(self.settings.redis_url, dispatcher=self.dispatch)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings)

    @cached_property
    def service(self) -> Service:
        return Service(
            self.store,
            self.registry,
            default_bucket=self.settings.default_artifact_bucket,
            ensure_bucket=self.artifacts.ensure_bucket,
        )

    def dispatch(self, d: Dispatch | Revoke) -> None:
        """Carry out an effect that leaves Redis: enqueue a task, or revoke one."""
        tid = task_id(d.execution_id, d.stage, d.action, d.attempt)
        if isinstance(d, Revoke):
            # No terminate: the worker's heartbeat sees the action abandoned and stops the
            # provider's whole process group itself (a killed pool child could not).
            self.celery.control.revoke(tid)
            return
        self.celery.send_task(
            d.queue,
            args=[d.execution_id, d.stage, d.action, d.attempt],
            queue=d.queue,
            routing_key=d.queue,
            task_id=tid,
        )

    def send_callback(self, execution_id: str, stage: str, action: str, attempt: int) -> None:
        self.celery.send_task(
            keys.ENGINE_TASK,
            args=[execution_id, stage, action, attempt],
            queue=keys.ENGINE_QUEUE,
            routing_key=keys.ENGINE_QUEUE,
        )
