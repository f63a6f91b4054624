"""Per-process wiring of settings, store, registry, artifact store, service and Celery."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from celery import Celery
from kombu.exceptions import ChannelError

from engine import keys
from engine.messages import Dispatch, Revoke, WorkItem
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from providers import default_registry
from providers.base import ActionFailed
from providers.container import reap_orphaned_containers
from providers.registry import Registry
from providers.sandbox import (
    SandboxPolicy,
    create_build_cgroup,
    reap_orphaned_cgroups,
    resolve_build_user,
)
from workers.app import make_app
from workers.artifacts import ArtifactStore
from workers.scratch import ScratchSpace

log = logging.getLogger("conveyor.runtime")


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
        store = Store.from_url(
            self.settings.redis_url,
            dispatcher=self.dispatch,
            claim_seconds=self.settings.lease_seconds,
            account=self.settings.account,
            max_pipeline_versions=self.settings.max_pipeline_versions,
        )
        store.jobs.ack_timeout_seconds = self.settings.job_ack_timeout_seconds
        return store

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.settings)

    @cached_property
    def scratch(self) -> ScratchSpace:
        return ScratchSpace(self.settings.workdir)

    @cached_property
    def sandbox(self) -> SandboxPolicy:
        """How this process runs build commands (the build user is created if missing)."""
        return SandboxPolicy(
            user=resolve_build_user(self.settings.build_user),
            log_max_bytes=self.settings.build_log_max_bytes,
            boundary=self.scratch.root,
        )

    def prepare_worker(self) -> None:
        """At worker start, before any task: the build user exists, and what dead workers
        left behind (scratch directories, build cgroups with their processes) is gone."""
        policy = self.sandbox
        self.scratch.sweep()  # logs what it removes
        reaped = reap_orphaned_cgroups()
        if reaped:
            log.info("killed the builds of %d worker processes that are gone", reaped)
        containers = 0
        try:
            containers = reap_orphaned_containers()
        except (ActionFailed, OSError, subprocess.SubprocessError) as exc:
            log.warning("could not look for build containers left by dead workers: %s", exc)
        if containers:
            log.info("removed %d build containers of workers that are gone", containers)
        root = Path(self.scratch.root).resolve()
        closed = [d for d in (root, *root.parents) if not d.stat().st_mode & 0o001]
        if policy.user is not None and closed:
            log.warning(
                "%s is not searchable by others: builds running as %s cannot reach their "
                "directories under the scratch root %s (chmod o+x it)",
                closed[0],
                policy.user.name,
                root,
            )
        # A trial cgroup, so that a host without usable cgroups is said once, here, and not
        # by every pool process at its first build (they inherit what was warned).
        probe = create_build_cgroup() if policy.cgroups else None
        if probe is not None:
            probe.remove()
        log.info(
            "builds run as %s, %s",
            policy.user.name if policy.user else "this worker's user",
            f"each in a cgroup under {probe.path.parent}" if probe else "killed by process group",
        )

    @cached_property
    def service(self) -> Service:
        return Service(
            self.store,
            self.registry,
            default_bucket=self.settings.default_artifact_bucket,
            ensure_bucket=self.artifacts.ensure_bucket,
            minute_seconds=self.settings.minute_seconds,
            start_on_create=self.settings.start_on_create,
        )

    def dispatch(self, d: Dispatch | Revoke) -> None:
        """Carry out an effect that leaves Redis: enqueue a task, or revoke one."""
        tid = WorkItem("", d.execution_id, d.stage, d.action, d.attempt, d.work).task_id
        if isinstance(d, Revoke):
            # No terminate: the worker's heartbeat sees the attempt abandoned and stops the
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

    def send_callback(self, item: WorkItem) -> None:
        """Ask the engine pool to apply an attempt's recorded result."""
        self.celery.send_task(
            keys.ENGINE_TASK,
            args=[*item.task_args(), item.kind.value],
            queue=keys.ENGINE_QUEUE,
            routing_key=keys.ENGINE_QUEUE,
        )

    def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in a queue (Redis: every priority list; RabbitMQ: the queue's
        count), or None when the broker cannot tell right now."""
        try:
            with self.celery.connection_for_read() as conn:
                ok = conn.default_channel.queue_declare(queue=queue, passive=True)
                return int(ok.message_count)
        except ChannelError:
            return 0  # no such queue (kombu's Redis transport drops an empty one): empty
        except Exception:
            log.debug("cannot read the depth of %s", queue, exc_info=True)
            return None
