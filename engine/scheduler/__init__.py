"""The transition function: ``decide(view, event) -> Decision``.

Pure: no I/O, no clocks, no randomness (time arrives inside events, stamped by the store;
ids are derived from what the events carry), so property tests replay shuffled and
duplicated events against it. It is the only judge of every rule about how executions move
— stage order, action groups, execution modes and stage locks, transitions, stops,
retries, rollbacks, stage conditions, approvals — and when it refuses a request it says why
(a :class:`Rejection`); the store only makes each transition atomic, and the service only
maps rejections onto CodePipeline's errors.

Layout: :mod:`.context` (the view, the decision, the transition in progress),
:mod:`.guards` (shared preconditions), :mod:`.handlers` (one per event type), :mod:`.flow`
(how executions move through lanes, stages and action groups), :mod:`.conditions` (stage
conditions).
"""

from __future__ import annotations

from engine.execution import ExecutionState
from engine.messages import Dispatch, Event, WorkItem, WorkKind
from engine.run import PipelineRun
from engine.scheduler import conditions, flow, guards
from engine.scheduler.conditions import DEFAULT_RULE_TIMEOUT_MINUTES
from engine.scheduler.context import (
    Ctx,
    Decision,
    PipelineInfo,
    Rejected,
    Rejection,
    RejectionCode,
    View,
)
from engine.scheduler.flow import MAX_RESOLVED_CONFIGURATION_BYTES
from engine.scheduler.guards import MAX_ACTIVE_EXECUTIONS
from engine.scheduler.handlers import HANDLERS, MAX_LEASE_LOSSES

__all__ = [
    "DEFAULT_RULE_TIMEOUT_MINUTES",
    "MAX_ACTIVE_EXECUTIONS",
    "MAX_LEASE_LOSSES",
    "MAX_RESOLVED_CONFIGURATION_BYTES",
    "Decision",
    "PipelineInfo",
    "Rejection",
    "RejectionCode",
    "View",
    "current_dispatch",
    "decide",
]


def decide(view: View, event: Event) -> Decision:
    """Apply one event. A stale or duplicate event changes nothing (``changed`` is False);
    a refused request changes nothing and carries its :class:`Rejection`."""
    now = max(event.now, view.run.clock)
    run = PipelineRun.model_validate(view.run.model_dump())  # its own copy, made fast
    c = Ctx(view=view, run=run, now=now)
    try:
        HANDLERS[type(event)](c, event)
    except Rejected as refused:
        return Decision(view.run, {}, [], rejection=refused.rejection)
    changed = {
        eid: ex
        for eid, ex in c.touched.items()
        if eid not in view.executions or ex != view.executions[eid]
    }
    if not c.fx and not changed and run == view.run:
        return Decision(view.run, {}, [], subject=c.subject)
    run.clock = now
    for ex in changed.values():
        ex.last_update_time = max(ex.last_update_time, now)
    return Decision(run, changed, c.fx, changed=True, subject=c.subject)


def current_dispatch(ex: ExecutionState | None, item: WorkItem) -> Dispatch | None:
    """The task of ``item`` if that attempt is still the one its execution waits for (so
    sending it again is right), else None."""
    if item.kind is WorkKind.RULE:
        rr = guards.current_rule(ex, item.stage, item.name, item.attempt)
        return conditions.rule_dispatch(ex, rr) if ex is not None and rr is not None else None
    if ex is None or not guards.current_action(ex, item.stage, item.name, item.attempt):
        return None
    act = ex.action(item.stage, item.name)
    return flow.action_dispatch(ex, act) if act is not None else None
