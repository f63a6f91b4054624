"""One handler per event type: the guards that must hold, then the change.

A handler that finds its event stale or duplicated (an old attempt's report, a second
answer) returns without touching anything; one whose request breaks a rule raises
:class:`Rejected` through a guard. Every rule is judged here, inside the store's
compare-and-set, so none of them is check-then-act.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from engine.approvals import approval_refusal, starter
from engine.execution import (
    ActionResult,
    ExecutionState,
    ExecutionStatus,
    ExecutionType,
    RuleRun,
    RuleStatus,
    StageState,
    StageStatus,
    StopMode,
)
from engine.messages import (
    ActionCompleted,
    ApprovalAnswered,
    ConditionOverridden,
    EventState,
    LeaseExpired,
    PipelineDeleted,
    RetryRequested,
    RollbackRequested,
    RuleCompleted,
    Started,
    StopRequested,
    TimerFired,
    TransitionChanged,
    WorkKind,
    _Event,
)
from engine.rules import ConditionKind
from engine.run import TransitionState
from engine.scheduler import conditions, flow, guards
from engine.scheduler.context import Ctx, Rejected, RejectionCode, clone
from providers.base import Category

# An action (or rule) whose worker vanished this many times fails instead of being retried.
MAX_LEASE_LOSSES = 3

E = TypeVar("E", bound=_Event)
Handler = Callable[[Ctx, Any], None]
HANDLERS: dict[type[_Event], Handler] = {}


def handles(event_type: type[E]) -> Callable[[Callable[[Ctx, E], None]], Callable[[Ctx, E], None]]:
    def register(fn: Callable[[Ctx, E], None]) -> Callable[[Ctx, E], None]:
        HANDLERS[event_type] = fn
        return fn

    return register


# ---------------------------------------------------------------------------- starts


@handles(Started)
def started(c: Ctx, e: Started) -> None:
    current = guards.pipeline(c)
    if c.view.token_owner is not None:
        c.subject = c.view.token_owner  # an idempotent repeat of a start that happened
        return
    if c.find(e.execution.execution_id) is not None:
        c.subject = e.execution.execution_id  # the same start, applied again
        return
    if e.execution.pipeline_version != current.version:
        raise Rejected(
            RejectionCode.STALE_VERSION,
            f"pipeline {c.run.name} is at version {current.version} now, not "
            f"{e.execution.pipeline_version}",
        )
    ex = clone(e.execution)
    _check_variables(ex)
    c.run.mode = ex.execution_mode
    guards.below_limit(c)
    ex.start_time = ex.last_update_time = c.now
    c.add(ex)
    c.run.active.append(ex.execution_id)
    c.subject = ex.execution_id
    c.emit(ex, "pipeline", EventState.STARTED)
    first = 0 if ex.only_stage is None else flow.index_of(ex, ex.only_stage)
    flow.request_stage(c, ex, first)


def _check_variables(ex: ExecutionState) -> None:
    declared = {v.name for v in ex.decl.variables}
    unknown = sorted(set(ex.variables) - declared)
    if unknown:
        raise Rejected(
            RejectionCode.INVALID,
            f"variables: {', '.join(unknown)} not declared by pipeline {ex.pipeline_name}",
        )
    missing = [v.name for v in ex.decl.variables if v.name not in ex.variables]
    if missing:
        raise Rejected(
            RejectionCode.INVALID, f"variables: {', '.join(missing)} have no default and no value"
        )


# ---------------------------------------------------------------------------- results


@handles(ActionCompleted)
def action_completed(c: Ctx, e: ActionCompleted) -> None:
    if not guards.current_action(
        c.view.executions.get(e.execution_id), e.stage, e.action, e.attempt
    ):
        return  # a stale or repeated report
    ex = c.ex(e.execution_id)
    flow.finish_action(c, ex, guards.running_action(ex, e.stage, e.action), e.result)


def _same_token(issued: str | None, given: str) -> bool:
    """In constant time, so how long a refusal takes says nothing about the token."""
    return issued is not None and hmac.compare_digest(issued.encode(), given.encode())


@handles(ApprovalAnswered)
def approval_answered(c: Ctx, e: ApprovalAnswered) -> None:
    decl = guards.pipeline(c).declaration
    action = next((a for a in guards.stage_of(decl, e.stage).actions if a.name == e.action), None)
    if action is None:
        raise Rejected(
            RejectionCode.ACTION_NOT_FOUND, f"action {e.action} not found in stage {e.stage}"
        )
    if action.action_type_id.category is not Category.APPROVAL:
        raise Rejected(RejectionCode.INVALID, f"action {e.stage}.{e.action} is not an approval")
    ex = c.find(e.execution_id)
    act = ex.action(e.stage, e.action) if ex is not None else None
    if ex is None or act is None or not _same_token(act.approval_token, e.token):
        raise Rejected(
            RejectionCode.INVALID_APPROVAL_TOKEN,
            f"the token is not valid for {e.stage}.{e.action}",
        )
    if e.principal is not None:
        refusal = approval_refusal(e.principal, e.policy, e.stage, starter(ex))
        if refusal is not None:
            raise Rejected(RejectionCode.ACCESS_DENIED, refusal)
    if not act.in_progress or ex.status.terminal:
        raise Rejected(
            RejectionCode.APPROVAL_ALREADY_COMPLETED,
            f"the approval for {e.stage}.{e.action} has already been answered or expired",
        )
    act.approval_summary = e.summary
    act.approved_by = e.answered_by
    if e.approved:
        result = ActionResult(succeeded=True, summary=e.summary or "Approved")
    else:
        result = ActionResult(
            succeeded=False,
            summary=e.summary or "Rejected",
            error_code="Rejected",
            error_message=f"Rejected: {e.summary}" if e.summary else "Rejected",
        )
    flow.finish_action(c, ex, act, result)


@handles(RuleCompleted)
def rule_completed(c: Ctx, e: RuleCompleted) -> None:
    found = _running_rule(c, e.execution_id, e.stage, e.rule_execution_id, e.attempt)
    if found is None:
        return  # a stale or repeated report
    ex, st, rr = found
    status = RuleStatus.SUCCEEDED if e.succeeded else RuleStatus.FAILED
    conditions.finish_rule(c, rr, status, e.summary)
    flow.conditions_progress(c, ex, st)


def _running_rule(
    c: Ctx, execution_id: str, stage: str, rule_execution_id: str, attempt: int
) -> tuple[ExecutionState, StageState, RuleRun] | None:
    """The transition's copies of a rule run's execution, stage and run, if ``attempt`` is
    the one still running (else the report about it is stale)."""
    original = c.view.executions.get(execution_id)
    if guards.current_rule(original, stage, rule_execution_id, attempt) is None:
        return None
    ex = c.ex(execution_id)
    st = ex.stage(stage)
    rr = st.rule_run(rule_execution_id) if st is not None else None
    assert st is not None and rr is not None
    return ex, st, rr


# ---------------------------------------------------------------------------- clocks


@handles(TimerFired)
def timer_fired(c: Ctx, e: TimerFired) -> None:
    original = c.view.executions.get(e.execution_id)
    if original is None or original.status.terminal:
        return
    due = original.next_deadline()
    if due is None or due > c.now:
        return
    ex = c.ex(e.execution_id)
    for act in ex.running():
        if act.deadline is not None and act.deadline <= c.now and act.in_progress:
            what = "approval" if act.approval_token else "action"
            timed_out = ActionResult(
                succeeded=False,
                error_code="TimedOut",
                error_message=f"The {what} timed out before it finished",
            )
            flow.finish_action(c, ex, act, timed_out)
    if ex.status.terminal or ex.current_stage < 0:
        return
    current = ex.stages[ex.current_stage]
    if conditions.recheck_due(c, ex, current):
        flow.conditions_progress(c, ex, current)


@handles(LeaseExpired)
def lease_expired(c: Ctx, e: LeaseExpired) -> None:
    if e.work is WorkKind.RULE:
        _rule_lease_expired(c, e)
        return
    if not guards.current_action(c.view.executions.get(e.execution_id), e.stage, e.name, e.attempt):
        return
    ex = c.ex(e.execution_id)
    act = guards.running_action(ex, e.stage, e.name)
    act.lease_losses += 1
    act.last_update_time = c.now
    if act.lease_losses >= MAX_LEASE_LOSSES:
        lost = ActionResult(
            succeeded=False,
            error_code="WorkerLost",
            error_message=f"the worker running this action died {MAX_LEASE_LOSSES} times",
        )
        flow.finish_action(c, ex, act, lost)
    else:
        act.attempt += 1
        c.dispatch(flow.action_dispatch(ex, act))


def _rule_lease_expired(c: Ctx, e: LeaseExpired) -> None:
    found = _running_rule(c, e.execution_id, e.stage, e.name, e.attempt)
    if found is None:
        return
    ex, st, rr = found
    rr.lease_losses += 1
    rr.last_update_time = c.now
    if rr.lease_losses >= MAX_LEASE_LOSSES:
        conditions.finish_rule(
            c, rr, RuleStatus.FAILED, f"the worker running this rule died {MAX_LEASE_LOSSES} times"
        )
        flow.conditions_progress(c, ex, st)
    else:
        rr.attempt += 1
        c.dispatch(conditions.rule_dispatch(ex, rr))


# ---------------------------------------------------------------------------- requests


@handles(StopRequested)
def stop_requested(c: Ctx, e: StopRequested) -> None:
    ex = guards.execution(c, e.execution_id)
    if ex.status.terminal:
        raise Rejected(
            RejectionCode.NOT_STOPPABLE,
            f"execution {e.execution_id} is {ex.status.value} and cannot be stopped",
        )
    # Stop-and-abandon finishes the execution at once, so only a stop-and-wait can be
    # under way here.
    if ex.stop_mode is StopMode.WAIT and not e.abandon:
        raise Rejected(
            RejectionCode.DUPLICATE_STOP, f"execution {e.execution_id} is already stopping"
        )
    ex.stop_mode = StopMode.ABANDON if e.abandon else StopMode.WAIT
    ex.stop_reason = e.reason or ex.stop_reason
    if ex.status is ExecutionStatus.IN_PROGRESS:
        ex.status = ExecutionStatus.STOPPING
        c.emit(ex, "pipeline", EventState.STOPPING)
    c.subject = ex.execution_id
    flow.stop_running(c, ex, abandon=e.abandon)


@handles(RetryRequested)
def retry_requested(c: Ctx, e: RetryRequested) -> None:
    ex = guards.execution(c, e.execution_id)
    guards.stage_of(ex.decl, e.stage)
    guards.latest_in_stage(c, ex, e.stage)
    st = ex.stage(e.stage)
    assert st is not None
    if ex.status is not ExecutionStatus.FAILED or st.status is not StageStatus.FAILED:
        raise Rejected(
            RejectionCode.STAGE_NOT_RETRYABLE,
            f"stage {e.stage} of execution {e.execution_id} has not failed; nothing to retry",
        )
    current = guards.pipeline(c)
    if ex.pipeline_version != current.version:
        raise Rejected(
            RejectionCode.STAGE_NOT_RETRYABLE,
            f"pipeline {c.run.name} changed since execution {e.execution_id} (version "
            f"{ex.pipeline_version} -> {current.version}); start a new execution",
        )
    guards.below_limit(c)
    ex.status = ExecutionStatus.IN_PROGRESS
    ex.status_summary = None
    ex.stop_mode = ex.stop_reason = None
    st.retries += 1
    flow.reset_stage(st, e.mode)
    st.auto_retried = False
    c.run.active.append(ex.execution_id)
    c.subject = ex.execution_id
    c.emit(ex, "pipeline", EventState.RESUMED)
    c.emit(ex, "stage", EventState.RESUMED, stage=st.name)
    flow.request_stage(c, ex, flow.index_of(ex, e.stage))


@handles(TransitionChanged)
def transition_changed(c: Ctx, e: TransitionChanged) -> None:
    decl = guards.pipeline(c).declaration
    guards.stage_of(decl, e.stage)
    names = [s.name for s in decl.stages]
    target = e.stage
    if e.transition_type == "Outbound":
        i = names.index(e.stage)
        if i + 1 >= len(names):
            raise Rejected(
                RejectionCode.INVALID,
                f"stage {e.stage} is the last stage: it has no outbound transition",
            )
        target = names[i + 1]
    if not e.enabled and not e.reason:
        raise Rejected(RejectionCode.INVALID, "reason is required to disable a transition")
    c.run.transitions[target] = TransitionState(
        enabled=e.enabled,
        reason=None if e.enabled else e.reason,
        changed_by=e.changed_by,
        changed_at=c.now,
    )
    if e.enabled:
        flow.admit(c, target)


@handles(RollbackRequested)
def rollback_requested(c: Ctx, e: RollbackRequested) -> None:
    current = guards.pipeline(c)
    guards.stage_of(current.declaration, e.stage)
    if current.declaration.stages[0].name == e.stage:
        raise Rejected(RejectionCode.UNABLE_TO_ROLLBACK, "the source stage cannot be rolled back")
    if current.declaration.execution_mode == "PARALLEL":
        raise Rejected(
            RejectionCode.UNABLE_TO_ROLLBACK,
            f"pipeline {c.run.name} runs in PARALLEL mode, where stage rollback is not available",
        )
    target = guards.execution(c, e.target_execution_id)
    if c.find(e.rollback_id) is not None:
        c.subject = e.rollback_id  # a repeated request: that rollback already exists
        return
    tid = e.target_execution_id
    if target.execution_type is not ExecutionType.STANDARD:
        raise Rejected(
            RejectionCode.UNABLE_TO_ROLLBACK,
            f"execution {tid} is a rollback; roll back to a standard one",
        )
    if target.pipeline_version != current.version:
        raise Rejected(
            RejectionCode.UNABLE_TO_ROLLBACK,
            f"execution {tid} ran pipeline version {target.pipeline_version}, "
            f"not the current {current.version}",
        )
    st = target.stage(e.stage)
    if st is None or st.status is not StageStatus.SUCCEEDED:
        raise Rejected(
            RejectionCode.UNABLE_TO_ROLLBACK, f"stage {e.stage} did not succeed in execution {tid}"
        )
    if not c.run.lane(e.stage).idle:
        raise Rejected(
            RejectionCode.UNABLE_TO_ROLLBACK,
            f"stage {e.stage} is running or has executions waiting; roll back once it is idle",
        )
    snap = flow.snapshot(target, c.now)
    flow.start_rollback(
        c,
        e.rollback_id,
        snap,
        e.stage,
        e.trigger_type,
        e.trigger_detail or tid,
        target,
        started_by=e.started_by,
    )


@handles(ConditionOverridden)
def condition_overridden(c: Ctx, e: ConditionOverridden) -> None:
    ex = guards.execution(c, e.execution_id)
    guards.stage_of(ex.decl, e.stage)
    st = ex.stage(e.stage)
    assert st is not None
    kind = ConditionKind.from_api(e.condition_type)
    if kind not in (ConditionKind.BEFORE_ENTRY, ConditionKind.ON_SUCCESS) or st.evaluating != kind:
        raise Rejected(
            RejectionCode.CONDITION_NOT_OVERRIDABLE,
            f"no {e.condition_type} condition of stage {e.stage} is being evaluated",
        )
    guards.latest_in_stage(c, ex, e.stage)
    st.overridden.append(kind)
    # Only the kind being evaluated has rules running; their workers are told to stop.
    conditions.abandon_rules(c, ex, st, summary="overridden")
    flow.conditions_progress(c, ex, st)


@handles(PipelineDeleted)
def pipeline_deleted(c: Ctx, e: PipelineDeleted) -> None:
    for eid in list(c.run.active):
        ex = c.find(eid)
        if ex is None:
            c.run.active.remove(eid)
            continue
        ex.stop_mode = StopMode.ABANDON
        ex.stop_reason = "the pipeline was deleted"
        for act in ex.running():
            flow.abandon_action(c, ex, act)
        for st in ex.stages:
            conditions.abandon_rules(c, ex, st)
        flow.finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)
    c.run.lanes = {}
