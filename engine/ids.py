"""Deterministic ids, derived from what they identify (uuid5 in one private namespace).

Deriving instead of drawing ids keeps the transition function pure and makes repeats
recognisable: the same attempt always has the same Celery task id, so it can be revoked;
the same automatic rollback always has the same execution id, so it is never started twice.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1d2a8e-3c1b-4c5e-9a57-2f0b8d7e4c10")


def _derive(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def task_id(execution_id: str, stage: str, name: str, attempt: int) -> str:
    """The Celery task id of one attempt of an action (or of a worker-run rule)."""
    return _derive("task", execution_id, stage, name, attempt)


def action_execution_id(execution_id: str, stage: str, action: str, run: int) -> str:
    """One run of an action: a stage retry runs it again under a new id, as on AWS."""
    return _derive(execution_id, stage, action, run)


def rollback_execution_id(failed_execution_id: str, stage: str, failures: int) -> str:
    """The ROLLBACK execution an automatic rollback of a failed stage creates: one per
    failure of that stage in that execution, whatever the clock says."""
    return _derive("rollback", failed_execution_id, stage, failures)


def approval_token(action_execution_id: str, attempt: int, now: float) -> str:
    """An approval's token: new for every attempt, so a stale answer never matches."""
    return _derive(action_execution_id, attempt, repr(now))


def rule_execution_id(
    execution_id: str, stage: str, kind: str, condition: int, rule: str, round_: int, now: float
) -> str:
    """One evaluation of one rule; ``round_`` and ``now`` tell re-evaluations apart."""
    return _derive(execution_id, stage, kind, condition, rule, round_, repr(now))


def trigger_token(pipeline_created: float, source: str, revision: str) -> str:
    """The clientRequestToken of the execution a source trigger starts for one revision, so
    a second poller (or a retry after a crash) starting it again gets the same execution."""
    return "trigger-" + _derive("trigger", repr(pipeline_created), source, revision)
