"""Celery tasks: one per provider (named after its queue, so Flower shows each provider's
counts and runtimes) and the engine's completion callback."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Celery

from engine import keys
from engine.errors import ExecutionNotFoundError
from engine.messages import ActionCompleted
from engine.settings import Settings
from workers.app import provider_queues
from workers.rule_runner import run_rule
from workers.runner import run_attempt
from workers.runtime import Runtime

log = logging.getLogger("conveyor.tasks")

_runtime: Runtime | None = None


def runtime(settings: Settings | None = None) -> Runtime:
    """The process's Runtime, made again after a fork so no socket crosses processes."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        inherited = _runtime.settings if _runtime is not None else None
        _runtime = Runtime(settings or inherited or Settings())
    return _runtime


def advance(execution_id: str, stage: str, action: str, attempt: int) -> str:
    """Completion callback: apply the recorded result of one attempt to its execution."""
    rt = runtime()
    state = rt.store.try_load(execution_id)
    act = state.action(stage, action) if state else None
    if state is None or act is None:
        return "unknown"
    result = rt.store.get_result(execution_id, act.action_execution_id, attempt)
    if result is None:
        return "no-result"
    try:
        rt.store.apply(
            state.pipeline_name,
            ActionCompleted(
                now=time.time(),
                execution_id=execution_id,
                stage=stage,
                action=action,
                attempt=attempt,
                result=result,
            ),
        )
    except ExecutionNotFoundError:
        return "unknown"
    rt.store.release_lease(
        rt.store.lease_member(execution_id, stage, action, act.action_execution_id, attempt)
    )
    return "applied"


def run_provider_action(execution_id: str, stage: str, action: str, attempt: int) -> str:
    return run_attempt(runtime(), execution_id, stage, action, attempt)


def run_commands_rule_task(
    execution_id: str, stage: str, rule_execution_id: str, attempt: int
) -> str:
    return run_rule(runtime(), execution_id, stage, rule_execution_id)


def register_tasks(app: Celery, rt: Runtime) -> None:
    """Explicit registration: the engine callback plus one task per worker-run provider."""
    global _runtime
    _runtime = rt
    opts: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}
    app.task(name=keys.ENGINE_TASK, **opts)(advance)
    for queue in provider_queues(rt.registry):
        app.task(name=queue, **opts)(run_provider_action)
    app.task(name=keys.COMMANDS_RULE_QUEUE, **opts)(run_commands_rule_task)
