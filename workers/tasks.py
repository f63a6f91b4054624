"""Celery tasks: one per provider (named after its queue, so Flower shows each provider's
counts and runtimes), the worker-run rules, and the engine's completion callback.

A worker applies an attempt's result itself (:func:`workers.attempts.report`); the engine
callback is the fallback when it could not, and the sweep the fallback after that.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from engine import keys
from engine.messages import WorkItem, WorkKind
from engine.settings import Settings
from workers.app import provider_queues
from workers.rule_runner import run_rule
from workers.runner import run_action
from workers.runtime import Runtime

_runtime: Runtime | None = None


def runtime(settings: Settings | None = None) -> Runtime:
    """The process's Runtime, made again after a fork so no socket crosses processes."""
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        inherited = _runtime.settings if _runtime is not None else None
        _runtime = Runtime(settings or inherited or Settings())
    return _runtime


def advance(
    execution_id: str, stage: str, name: str, attempt: int, kind: str = WorkKind.ACTION
) -> str:
    """Completion callback: apply the recorded result of one attempt to its execution."""
    rt = runtime()
    state = rt.store.runs.load(execution_id)
    if state is None:
        return "unknown"
    item = WorkItem(state.pipeline_name, execution_id, stage, name, attempt, WorkKind(kind))
    result = rt.store.leases.get_result(item)
    if result is None:
        return "no-result"
    rt.store.complete(item, result)
    return "applied"


def run_provider_action(execution_id: str, stage: str, action: str, attempt: int) -> str:
    return run_action(runtime(), execution_id, stage, action, attempt)


def run_rule_task(execution_id: str, stage: str, rule_execution_id: str, attempt: int) -> str:
    return run_rule(runtime(), execution_id, stage, rule_execution_id, attempt)


def register_tasks(app: Celery, rt: Runtime) -> None:
    """Explicit registration: the engine callback plus one task per worker-run provider."""
    global _runtime
    _runtime = rt
    opts: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}
    app.task(name=keys.ENGINE_TASK, **opts)(advance)
    for queue in provider_queues(rt.registry):
        app.task(name=queue, **opts)(run_provider_action)
    # Actions of Custom and ThirdParty job-worker types: one task for them all, whose body
    # hands the work to the type's job workers and waits (providers.job_worker).
    app.task(name=keys.JOB_WORKER_QUEUE, **opts)(run_provider_action)
    # One body for all: the rule runner runs whichever kind of rule the attempt is.
    for queue in (keys.COMMANDS_RULE_QUEUE, keys.CODEBUILD_RULE_QUEUE, keys.LAMBDA_RULE_QUEUE):
        app.task(name=queue, **opts)(run_rule_task)
