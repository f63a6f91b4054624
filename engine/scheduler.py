"""The transition function: ``decide(run, event) -> (new_run, effects)``.

Pure: no I/O, no clocks, no randomness (time arrives inside events, ids are derived from
what the events carry), so the property tests can replay shuffled and duplicated events
against it. Every rule about how executions move lives here — stage order, action groups,
execution modes and stage locks, transitions, stops, retries, rollbacks, stage conditions —
and the store only makes each transition atomic.

The state is a :class:`engine.run.PipelineRun`; events and effects are in
:mod:`engine.messages`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel

from engine import rules as rule_engine
from engine.definition import ActionDeclaration, StageDeclaration
from engine.execution import (
    ActionResult,
    ActionState,
    ActionStatus,
    ExecutionState,
    ExecutionStatus,
    RuleRun,
    StageState,
    StageStatus,
)
from engine.keys import COMMANDS_RULE_QUEUE, provider_queue
from engine.messages import (
    ActionCompleted,
    ApprovalAnswered,
    ConditionOverridden,
    Dispatch,
    Effect,
    Emit,
    Event,
    LeaseExpired,
    RetryRequested,
    Revoke,
    RollbackRequested,
    RuleCompleted,
    Started,
    StopRequested,
    TimerFired,
    TransitionChanged,
    approval_token,
    new_execution,
    rollback_execution_id,
    rule_execution_id,
)
from engine.run import PipelineRun, StageSnapshot, TransitionState
from providers.base import Category

DEFAULT_APPROVAL_TIMEOUT_MINUTES = 7 * 24 * 60
# A Commands rule's default timeout, as for CodeBuild-run rules on AWS.
DEFAULT_RULE_TIMEOUT_MINUTES = 20
# An action whose worker vanished this many times fails instead of being tried again.
MAX_LEASE_LOSSES = 3
# QUEUED and PARALLEL pipelines hold at most this many active executions (as on AWS).
MAX_ACTIVE_EXECUTIONS = 50
# AWS's quota on an action's configuration after #{...} variables are resolved (100 KB).
MAX_RESOLVED_CONFIGURATION_BYTES = 100 * 1024
# clientRequestTokens remembered per pipeline for idempotent starts.
MAX_REMEMBERED_TOKENS = 1000


# ---------------------------------------------------------------------------- decide


class _Ctx:
    """One transition in progress: the run being changed, the effects, the clock."""

    def __init__(self, run: PipelineRun, now: float) -> None:
        self.run = run
        self.now = now
        self.fx: list[Effect] = []

    def emit(
        self,
        ex: ExecutionState,
        level: Literal["pipeline", "stage", "action"],
        state: str,
        stage: str | None = None,
        action: str | None = None,
    ) -> None:
        self.fx.append(
            Emit(execution_id=ex.execution_id, level=level, state=state, stage=stage, action=action)
        )


def decide(run: PipelineRun, event: Event) -> tuple[PipelineRun, list[Effect]]:
    """Apply one event. A duplicate or stale event returns the run unchanged, no effects."""
    if event.now < run.clock:
        event = event.model_copy(update={"now": run.clock})
    r = _clone(run)
    r.finished = {}
    c = _Ctx(r, event.now)
    match event:
        case Started():
            _start(c, _clone(event.execution))
        case ActionCompleted():
            ex, act = _find(r, event.execution_id, event.stage, event.action)
            if (
                ex
                and act
                and act.status is ActionStatus.IN_PROGRESS
                and act.attempt == event.attempt
            ):
                _finish_action(c, ex, act, event.result)
        case ApprovalAnswered():
            ex, act = _find(r, event.execution_id, event.stage, event.action)
            if ex and act and act.status is ActionStatus.IN_PROGRESS and act.token == event.token:
                act.approval_summary = event.summary
                act.approved_by = event.answered_by
                verdict = "Approved" if event.approved else "Rejected"
                result = ActionResult(
                    succeeded=event.approved,
                    summary=event.summary or verdict,
                    error_code=None if event.approved else "Rejected",
                    error_message=None
                    if event.approved
                    else (f"Rejected: {event.summary}" if event.summary else "Rejected"),
                )
                _finish_action(c, ex, act, result)
        case StopRequested():
            ex = r.executions.get(event.execution_id)
            if ex is not None:
                _stop(c, ex, event)
        case TimerFired():
            for ex in list(r.executions.values()):
                for act in _running(ex):
                    if act.deadline is not None and act.deadline <= event.now:
                        what = "approval" if act.token else "action"
                        timed_out = ActionResult(
                            succeeded=False,
                            error_code="TimedOut",
                            error_message=f"The {what} timed out before it finished",
                        )
                        if not ex.status.terminal and act.status is ActionStatus.IN_PROGRESS:
                            _finish_action(c, ex, act, timed_out)
                if ex.status.terminal or ex.current_stage < 0:
                    continue
                current = ex.stages[ex.current_stage]
                expired = [
                    rule_run
                    for rule_run in current.rules
                    if rule_run.status == "InProgress"
                    and rule_run.deadline is not None
                    and rule_run.deadline <= event.now
                ]
                for late in expired:
                    # A worker-run rule whose result never came (its worker died, or the
                    # report was lost) fails instead of holding the stage forever.
                    late.status = "Failed"
                    late.summary = "the rule timed out before it reported a result"
                    late.last_update_time = event.now
                if expired:
                    _conditions_progress(c, ex, current)
        case LeaseExpired():
            ex, act = _find(r, event.execution_id, event.stage, event.action)
            if (
                ex
                and act
                and act.status is ActionStatus.IN_PROGRESS
                and act.attempt == event.attempt
            ):
                act.lease_losses += 1
                if act.lease_losses >= MAX_LEASE_LOSSES:
                    lost = ActionResult(
                        succeeded=False,
                        error_code="WorkerLost",
                        error_message=(
                            f"the worker running this action died {MAX_LEASE_LOSSES} times"
                        ),
                    )
                    _finish_action(c, ex, act, lost)
                else:
                    act.attempt += 1
                    act.last_update_time = event.now
                    c.fx.append(_dispatch(ex, act))
        case RetryRequested():
            _retry(c, event)
        case TransitionChanged():
            r.transitions[event.stage] = TransitionState(
                enabled=event.enabled,
                reason=None if event.enabled else event.reason,
                changed_by=event.changed_by,
                changed_at=event.now,
            )
            if event.enabled:
                _admit(c, event.stage)
        case RollbackRequested():
            snap = _snapshot_of(event.target, event.stage, event.now)
            if snap is not None:
                _start_rollback(
                    c,
                    event.rollback_id,
                    snap,
                    event.stage,
                    event.trigger_type,
                    event.trigger_detail or event.target.execution_id,
                    event.target,
                )
        case RuleCompleted():
            ex = r.executions.get(event.execution_id)
            st = ex.stage(event.stage) if ex else None
            rr = (
                next((x for x in st.rules if x.rule_execution_id == event.rule_execution_id), None)
                if st
                else None
            )
            if ex and st and rr and rr.status == "InProgress":
                rr.status = "Succeeded" if event.succeeded else "Failed"
                rr.summary = event.summary
                rr.last_update_time = event.now
                _conditions_progress(c, ex, st)
        case ConditionOverridden():
            ex = r.executions.get(event.execution_id)
            st = ex.stage(event.stage) if ex else None
            kind = {"BEFORE_ENTRY": "beforeEntry", "ON_SUCCESS": "onSuccess"}.get(
                event.condition_type
            )
            if ex and st and kind and st.evaluating == kind:
                st.overridden.append(kind)
                for rr in st.rules:
                    if rr.kind == kind and rr.status == "InProgress":
                        rr.status = "Abandoned"
                        rr.summary = "overridden"
                        rr.last_update_time = event.now
                _conditions_progress(c, ex, st)
    for eid in list(r.executions):
        if r.executions[eid].status.terminal:
            r.finished[eid] = r.executions.pop(eid)
    if r == run and not c.fx:
        return run, []
    r.clock = max(run.clock, event.now)
    for ex in [*r.executions.values(), *r.finished.values()]:
        old = run.executions.get(ex.execution_id)
        if old is None or old != ex:
            ex.last_update_time = max(ex.last_update_time, event.now)
    return r, c.fx


# ---------------------------------------------------------------------------- starting


def _start(c: _Ctx, ex: ExecutionState) -> None:
    r = c.run
    if ex.execution_id in r.executions or ex.current_stage != -1:
        return
    token = ex.client_request_token
    if token and token in r.tokens:
        return  # an idempotent repeat of a start that already happened
    r.mode = ex.execution_mode
    if r.mode in ("QUEUED", "PARALLEL") and len(r.executions) >= MAX_ACTIVE_EXECUTIONS:
        return  # the service reports ConcurrentPipelineExecutionsLimitExceededException
    if token:
        r.tokens[token] = ex.execution_id
        while len(r.tokens) > MAX_REMEMBERED_TOKENS:
            r.tokens.pop(next(iter(r.tokens)))
    r.executions[ex.execution_id] = ex
    c.emit(ex, "pipeline", "STARTED")
    first = 0 if ex.only_stage is None else _index(ex, ex.only_stage)
    _request_stage(c, ex, first)


def _start_rollback(
    c: _Ctx,
    rid: str,
    snap: StageSnapshot,
    stage: str,
    trigger_type: str,
    trigger_detail: str,
    like: ExecutionState,
) -> None:
    """A ROLLBACK execution: the target's artifacts and variables, that stage alone.

    ``like`` supplies the definition, version and bucket (same version as the target)."""
    if rid in c.run.executions or rid in c.run.finished:
        return  # a repeated request: that rollback already exists
    ex = new_execution(
        execution_id=rid,
        definition=like.definition,
        version=like.pipeline_version,
        artifact_bucket=like.artifact_bucket,
        now=c.now,
        variables={},
        trigger_type=trigger_type,
        trigger_detail=trigger_detail,
    )
    ex.execution_type = "ROLLBACK"
    ex.rollback_target = snap.execution_id
    ex.only_stage = stage
    ex.variables = dict(snap.variables)
    ex.namespaces = {k: dict(v) for k, v in snap.namespaces.items()}
    ex.artifacts = dict(snap.artifacts)
    ex.execution_mode = c.run.mode
    c.run.executions[rid] = ex
    c.emit(ex, "pipeline", "STARTED")
    _request_stage(c, ex, _index(ex, stage))


def _snapshot_of(target: ExecutionState, stage: str, now: float) -> StageSnapshot | None:
    st = target.stage(stage)
    if st is None or st.status is not StageStatus.SUCCEEDED:
        return None
    return StageSnapshot(
        execution_id=target.execution_id,
        pipeline_version=target.pipeline_version,
        artifacts=dict(target.artifacts),
        variables=dict(target.variables),
        namespaces={k: dict(v) for k, v in target.namespaces.items()},
        at=now,
    )


# ---------------------------------------------------------------------------- lanes


def _index(ex: ExecutionState, stage: str) -> int:
    return next(i for i, s in enumerate(ex.stages) if s.name == stage)


def _newer(a: ExecutionState, b: ExecutionState) -> bool:
    return (a.start_time, a.execution_id) > (b.start_time, b.execution_id)


def _request_stage(c: _Ctx, ex: ExecutionState, index: int) -> None:
    """Enter the stage at ``index`` if its lock and inbound transition allow, else wait."""
    r = c.run
    name = ex.stages[index].name
    lane = r.lane(name)
    locked = r.mode != "PARALLEL" and lane.occupant not in (None, ex.execution_id)
    if r.transition(name).enabled and not locked and not lane.waiting:
        _enter(c, ex, index)
        return
    ex.waiting_for = name
    ex.current_stage = index
    if r.mode == "SUPERSEDED":
        for other_id in list(lane.waiting):
            other = r.executions[other_id]
            loser, winner = (other, ex) if _newer(ex, other) else (ex, other)
            if loser is ex:
                _supersede(c, ex, winner)
                return
            lane.waiting.remove(other_id)
            _supersede(c, other, ex)
    lane.waiting.append(ex.execution_id)
    if r.transition(name).enabled and not locked:
        _admit(c, name)


def _supersede(c: _Ctx, ex: ExecutionState, by: ExecutionState) -> None:
    lane = c.run.lane(ex.waiting_for or "")
    if ex.execution_id in lane.waiting:
        lane.waiting.remove(ex.execution_id)
    ex.waiting_for = None
    _finish_execution(
        c, ex, ExecutionStatus.SUPERSEDED, f"Superseded by execution {by.execution_id}"
    )


def _admit(c: _Ctx, stage: str) -> None:
    """Let waiting executions into ``stage`` as far as its lock and transition allow."""
    r = c.run
    lane = r.lane(stage)
    while (
        lane.waiting
        and r.transition(stage).enabled
        and (r.mode == "PARALLEL" or lane.occupant is None)
    ):
        ex = r.executions[lane.waiting.pop(0)]
        ex.waiting_for = None
        _enter(c, ex, _index(ex, stage))


def _leave(c: _Ctx, ex: ExecutionState, stage: str) -> None:
    lane = c.run.lane(stage)
    if ex.execution_id in lane.waiting:
        lane.waiting.remove(ex.execution_id)
    if lane.occupant == ex.execution_id:
        lane.occupant = None
        _admit(c, stage)


# ---------------------------------------------------------------------------- stages


def _decl_stage(ex: ExecutionState, name: str) -> StageDeclaration:
    decl = ex.definition.stage(name)
    assert decl is not None
    return decl


def _enter(c: _Ctx, ex: ExecutionState, index: int) -> None:
    r = c.run
    st = ex.stages[index]
    ex.current_stage = index
    ex.waiting_for = None
    if r.mode != "PARALLEL":
        r.lane(st.name).occupant = ex.execution_id
    r.latest[st.name] = ex.execution_id
    st.status = StageStatus.IN_PROGRESS
    st.group = 0
    c.emit(ex, "stage", "STARTED", stage=st.name)
    decl = _decl_stage(ex, st.name)
    if decl.before_entry and decl.before_entry.conditions:
        _evaluate(c, ex, st, "beforeEntry")
    else:
        _start_group(c, ex, st)


def _start_group(c: _Ctx, ex: ExecutionState, st: StageState) -> None:
    """Start the running group's actions that still need to run; skip finished groups."""
    decl = _decl_stage(ex, st.name)
    groups = decl.groups()
    while st.group < len(groups):
        todo = [i for i in groups[st.group] if st.actions[i].status is not ActionStatus.SUCCEEDED]
        if todo:
            break
        st.group += 1
    else:
        _stage_succeeded(c, ex, st)
        return
    too_big: list[tuple[ActionState, int]] = []
    for i in todo:
        act, ad = st.actions[i], decl.actions[i]
        act.status = ActionStatus.IN_PROGRESS
        act.attempt += 1
        act.lease_losses = 0
        act.result = None
        act.token = None
        act.deadline = None
        act.start_time = act.last_update_time = c.now
        act.resolved_configuration = {k: resolve(v, ex) for k, v in ad.configuration.items()}
        size = sum(len(k.encode()) + len(v.encode()) for k, v in act.resolved_configuration.items())
        if size > MAX_RESOLVED_CONFIGURATION_BYTES:
            too_big.append((act, size))
        act.input_artifacts = [
            ex.artifacts[a.name] for a in ad.input_artifacts if a.name in ex.artifacts
        ]
        c.emit(ex, "action", "STARTED", stage=st.name, action=act.name)
        if too_big and too_big[-1][0] is act:
            continue  # failed below, never dispatched
        if ad.action_type_id.category is Category.APPROVAL:
            # Approvals hold no worker: the execution rests here until an answer or the timer.
            minutes = ad.timeout_in_minutes or DEFAULT_APPROVAL_TIMEOUT_MINUTES
            act.deadline = c.now + minutes * 60
            act.token = approval_token(act.action_execution_id, act.attempt, c.now)
        else:
            if ad.timeout_in_minutes:
                act.deadline = c.now + ad.timeout_in_minutes * 60
            c.fx.append(_dispatch(ex, act))
    for act, size in too_big:
        if act.status is ActionStatus.IN_PROGRESS and not ex.status.terminal:
            _finish_action(
                c,
                ex,
                act,
                ActionResult(
                    succeeded=False,
                    error_code="ResolvedConfigurationSizeExceeded",
                    error_message=(
                        f"the resolved configuration is {size} bytes; the limit is "
                        f"{MAX_RESOLVED_CONFIGURATION_BYTES}"
                    ),
                ),
            )


def _finish_action(c: _Ctx, ex: ExecutionState, act: ActionState, result: ActionResult) -> None:
    act.status = ActionStatus.SUCCEEDED if result.succeeded else ActionStatus.FAILED
    act.result = result
    act.last_update_time = c.now
    act.deadline = None
    c.emit(ex, "action", act.status.value.upper(), stage=act.stage, action=act.name)
    if result.succeeded:
        for art in result.output_artifacts:
            ex.artifacts[art.name] = art
        ns = _decl(ex, act).namespace
        if ns:
            ex.namespaces[ns] = dict(result.output_variables)
        if result.revision_id:
            ex.source_revisions = [
                r for r in ex.source_revisions if r.get("actionName") != act.name
            ] + [
                {
                    "actionName": act.name,
                    "revisionId": result.revision_id,
                    "revisionSummary": result.revision_summary or "",
                }
            ]
    _group_settled(c, ex, act.stage)


def _group_settled(c: _Ctx, ex: ExecutionState, stage_name: str) -> None:
    """After an action settles: finish its group, then its stage."""
    st = ex.stage(stage_name)
    assert st is not None
    decl = _decl_stage(ex, stage_name)
    group = [st.actions[i] for i in decl.groups()[st.group]]
    if any(a.status is ActionStatus.IN_PROGRESS for a in group):
        return  # a failed action fails its stage only once the rest of its group is done
    failed = [a for a in group if a.status in (ActionStatus.FAILED, ActionStatus.ABANDONED)]
    if ex.stop_mode is not None:
        _stopped(c, ex, st)
        return
    if failed:
        first = failed[0]
        msg = (first.result.error_message if first.result else None) or "action failed"
        _stage_failed(c, ex, st, f"{st.name}.{first.name}: {msg}")
        return
    st.group += 1
    _start_group(c, ex, st)


def _stage_succeeded(c: _Ctx, ex: ExecutionState, st: StageState) -> None:
    decl = _decl_stage(ex, st.name)
    if (
        decl.on_success
        and decl.on_success.conditions
        and st.evaluating != "onSuccess"
        and "onSuccess" not in st.overridden
        and not _evaluated(st, "onSuccess")
    ):
        _evaluate(c, ex, st, "onSuccess")
        return
    st.status = StageStatus.SUCCEEDED
    st.evaluating = None
    c.emit(ex, "stage", "SUCCEEDED", stage=st.name)
    if ex.execution_type == "STANDARD":
        c.run.snapshots[st.name] = StageSnapshot(
            execution_id=ex.execution_id,
            pipeline_version=ex.pipeline_version,
            artifacts=dict(ex.artifacts),
            variables=dict(ex.variables),
            namespaces={k: dict(v) for k, v in ex.namespaces.items()},
            at=c.now,
        )
    _leave(c, ex, st.name)
    _next_stage(c, ex, st)


def _next_stage(c: _Ctx, ex: ExecutionState, st: StageState) -> None:
    index = _index(ex, st.name)
    if ex.only_stage is not None or index + 1 >= len(ex.stages):
        _finish_execution(c, ex, ExecutionStatus.SUCCEEDED, None)
    elif ex.stop_mode is not None:
        _finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)
    else:
        _request_stage(c, ex, index + 1)


def _stage_failed(c: _Ctx, ex: ExecutionState, st: StageState, message: str) -> None:
    decl = _decl_stage(ex, st.name)
    on_failure = decl.on_failure
    if on_failure is not None and on_failure.conditions and not _evaluated(st, "onFailure"):
        st.status = StageStatus.IN_PROGRESS
        ex.status_summary = message
        _evaluate(c, ex, st, "onFailure")
        return
    result = None
    if on_failure is not None:
        # A condition's own result wins over the block's (as the definition check allows).
        cond = on_failure.conditions[0] if on_failure.conditions else None
        result = (cond.result if cond else None) or on_failure.result
    if on_failure is not None and on_failure.conditions and not _conditions_met(st, "onFailure"):
        result = None  # onFailure conditions gate their result: it engages only when met
    if result == "RETRY" and not st.auto_retried:
        st.auto_retried = True
        mode = (
            on_failure.retry_configuration.retry_mode
            if on_failure and on_failure.retry_configuration
            else "FAILED_ACTIONS"
        )
        _reset_stage(st, mode)
        st.evaluating = None
        c.emit(ex, "stage", "RESUMED", stage=st.name)
        st.status = StageStatus.IN_PROGRESS
        st.group = 0
        if (
            decl.before_entry
            and decl.before_entry.conditions
            and "beforeEntry" not in st.overridden
        ):
            st.retries += 1  # fresh rule-execution ids; the entry gate is checked again
            _evaluate(c, ex, st, "beforeEntry")
        else:
            _start_group(c, ex, st)
        return
    st.status = StageStatus.FAILED
    st.evaluating = None
    c.emit(ex, "stage", "FAILED", stage=st.name)
    _leave(c, ex, st.name)
    _finish_execution(c, ex, ExecutionStatus.FAILED, message)
    if result == "ROLLBACK":
        _auto_rollback(c, ex, st.name)


def _auto_rollback(c: _Ctx, ex: ExecutionState, stage: str) -> None:
    """onFailure ROLLBACK: redeploy what the stage last ran successfully, if allowed."""
    snap = c.run.snapshots.get(stage)
    if ex.execution_type != "STANDARD" or _index(ex, stage) == 0 or snap is None:
        return
    if snap.pipeline_version != ex.pipeline_version:
        return  # AWS never rolls back to an older pipeline version
    st = ex.stage(stage)
    rid = rollback_execution_id(ex.execution_id, stage, st.retries if st else 0)
    _start_rollback(c, rid, snap, stage, "AutomatedRollback", ex.execution_id, ex)


def _reset_stage(st: StageState, mode: str) -> None:
    for act in st.actions:
        if mode == "ALL_ACTIONS" or act.status is not ActionStatus.SUCCEEDED:
            act.status = None
            act.result = None
            act.token = None
            act.deadline = None
    st.rules = [rr for rr in st.rules if rr.kind == "beforeEntry"]
    st.overridden = [k for k in st.overridden if k == "beforeEntry"]


# ---------------------------------------------------------------------------- conditions


def _evaluated(st: StageState, kind: str) -> bool:
    runs = [rr for rr in st.rules if rr.kind == kind]
    return bool(runs) and all(rr.status != "InProgress" for rr in runs)


def _conditions_met(st: StageState, kind: str) -> bool:
    if kind in st.overridden:
        return True
    return all(rr.status in ("Succeeded", "Abandoned") for rr in st.rules if rr.kind == kind)


def _evaluate(c: _Ctx, ex: ExecutionState, st: StageState, kind: str) -> None:
    """Run every rule of the stage's conditions of ``kind``; worker rules are dispatched."""
    decl = _decl_stage(ex, st.name)
    source = {
        "beforeEntry": decl.before_entry,
        "onSuccess": decl.on_success,
        "onFailure": decl.on_failure,
    }[kind]
    assert source is not None
    st.evaluating = kind
    st.rules = [rr for rr in st.rules if rr.kind != kind]
    lookup = _lookup(ex)
    for ci, cond in enumerate(source.conditions):
        for rule in cond.rules:
            rid = rule_execution_id(
                ex.execution_id, st.name, kind, ci, rule.name, st.retries, c.now
            )
            rr = RuleRun(
                rule_execution_id=rid,
                stage=st.name,
                kind=kind,
                condition=ci,
                rule=rule.name,
                provider=rule.rule_type_id.provider,
                status="InProgress",
                start_time=c.now,
                last_update_time=c.now,
                resolved_configuration={k: resolve(v, ex) for k, v in rule.configuration.items()},
            )
            st.rules.append(rr)
            if rule_engine.needs_worker(rule):
                rr.deadline = c.now + 60 * (rule.timeout_in_minutes or DEFAULT_RULE_TIMEOUT_MINUTES)
                c.fx.append(
                    Dispatch(
                        execution_id=ex.execution_id,
                        stage=st.name,
                        action=rid,
                        attempt=1,
                        queue=COMMANDS_RULE_QUEUE,
                    )
                )
            else:
                outcome = rule_engine.evaluate(rule, now=c.now, variables=lookup)
                rr.status = outcome.status
                rr.summary = outcome.summary
    _conditions_progress(c, ex, st)


def _conditions_progress(c: _Ctx, ex: ExecutionState, st: StageState) -> None:
    kind = st.evaluating
    if kind is None or any(rr.status == "InProgress" for rr in st.rules if rr.kind == kind):
        return
    decl = _decl_stage(ex, st.name)
    met = _conditions_met(st, kind)
    failed_rules = [rr for rr in st.rules if rr.kind == kind and rr.status == "Failed"]
    why = "; ".join(f"rule {rr.rule}: {rr.summary}" for rr in failed_rules)
    if kind == "beforeEntry":
        st.evaluating = None
        if met:
            _start_group(c, ex, st)
            return
        conds = decl.before_entry.conditions if decl.before_entry else []
        results = {conds[rr.condition].result for rr in failed_rules}
        if results == {"SKIP"}:
            st.status = StageStatus.SKIPPED
            c.emit(ex, "stage", "SKIPPED", stage=st.name)
            _leave(c, ex, st.name)
            _next_stage(c, ex, st)
        else:
            _stage_failed(c, ex, st, f"{st.name}: entry condition not met: {why}")
    elif kind == "onSuccess":
        if met:
            _stage_succeeded(c, ex, st)
            return
        conds = decl.on_success.conditions if decl.on_success else []
        results = {conds[rr.condition].result for rr in failed_rules}
        st.evaluating = None
        st.status = StageStatus.FAILED
        c.emit(ex, "stage", "FAILED", stage=st.name)
        _leave(c, ex, st.name)
        _finish_execution(
            c, ex, ExecutionStatus.FAILED, f"{st.name}: success condition not met: {why}"
        )
        if "ROLLBACK" in results:
            _auto_rollback(c, ex, st.name)
    else:  # onFailure: the rules gate the declared result
        st.evaluating = None
        _stage_failed(c, ex, st, ex.status_summary or f"{st.name} failed")


def _lookup(ex: ExecutionState) -> Callable[[str], str | None]:
    def get(ref: str) -> str | None:
        value = resolve(ref, ex)
        return None if "#{" in value else value

    return get


# ---------------------------------------------------------------------------- stop, retry


def _stop(c: _Ctx, ex: ExecutionState, event: StopRequested) -> None:
    if ex.status.terminal or ex.stop_mode == "abandon":
        return
    if ex.stop_mode == "wait" and not event.abandon:
        return
    ex.stop_mode = "abandon" if event.abandon else "wait"
    ex.stop_reason = event.reason or ex.stop_reason
    if ex.status is ExecutionStatus.IN_PROGRESS:
        ex.status = ExecutionStatus.STOPPING
        c.emit(ex, "pipeline", "STOPPING")
    if ex.waiting_for is not None:
        _leave(c, ex, ex.waiting_for)
        ex.waiting_for = None
        _finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)
        return
    for act in _running(ex):
        # Approvals never hold a worker, so stopping never waits on a person.
        if event.abandon or act.token is not None:
            act.status = ActionStatus.ABANDONED
            act.last_update_time = c.now
            act.deadline = None
            c.emit(ex, "action", "ABANDONED", stage=act.stage, action=act.name)
            if act.token is None:
                c.fx.append(
                    Revoke(
                        execution_id=ex.execution_id,
                        stage=act.stage,
                        action=act.name,
                        attempt=act.attempt,
                    )
                )
    if ex.current_stage >= 0 and not _running(ex):
        st = ex.stages[ex.current_stage]
        for rr in st.rules:
            if rr.status == "InProgress":
                rr.status = "Abandoned"
                rr.last_update_time = c.now
        _stopped(c, ex, st)


def _stopped(c: _Ctx, ex: ExecutionState, st: StageState) -> None:
    st.status = StageStatus.STOPPED
    st.evaluating = None
    c.emit(ex, "stage", "STOPPED", stage=st.name)
    _leave(c, ex, st.name)
    _finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)


def _retry(c: _Ctx, event: RetryRequested) -> None:
    r = c.run
    ex = _clone(event.execution)
    st = ex.stage(event.stage)
    if r.mode in ("QUEUED", "PARALLEL") and len(r.executions) >= MAX_ACTIVE_EXECUTIONS:
        return
    if (
        ex.execution_id in r.executions
        or st is None
        or st.status is not StageStatus.FAILED
        or r.latest.get(event.stage) != ex.execution_id
    ):
        return
    ex.status = ExecutionStatus.IN_PROGRESS
    ex.status_summary = None
    ex.stop_mode = ex.stop_reason = None
    st.retries += 1
    _reset_stage(st, event.mode)
    st.auto_retried = False
    r.executions[ex.execution_id] = ex
    c.emit(ex, "pipeline", "RESUMED")
    c.emit(ex, "stage", "RESUMED", stage=st.name)
    _request_stage(c, ex, _index(ex, event.stage))


def _finish_execution(
    c: _Ctx, ex: ExecutionState, status: ExecutionStatus, summary: str | None
) -> None:
    if ex.status.terminal:
        return
    ex.status = status
    ex.status_summary = summary
    c.emit(ex, "pipeline", status.value.upper())


# ---------------------------------------------------------------------------- helpers

_M = TypeVar("_M", bound=BaseModel)


def _clone(model: _M) -> _M:
    """A deep copy; pydantic-core's dump/validate is several times faster than deepcopy."""
    return type(model).model_validate(model.model_dump())


def _find(
    r: PipelineRun, execution_id: str, stage: str, action: str
) -> tuple[ExecutionState | None, ActionState | None]:
    ex = r.executions.get(execution_id)
    return ex, (ex.action(stage, action) if ex else None)


def _decl(ex: ExecutionState, act: ActionState) -> ActionDeclaration:
    return next(a for a in _decl_stage(ex, act.stage).actions if a.name == act.name)


def _running(ex: ExecutionState) -> list[ActionState]:
    return [a for st in ex.stages for a in st.actions if a.status is ActionStatus.IN_PROGRESS]


def _dispatch(ex: ExecutionState, act: ActionState) -> Dispatch:
    t = _decl(ex, act).action_type_id
    return Dispatch(
        execution_id=ex.execution_id,
        stage=act.stage,
        action=act.name,
        attempt=act.attempt,
        queue=provider_queue(t.category.value, t.provider),
    )


_VAR = re.compile(r"#\{([A-Za-z0-9@\-_]+)\.([A-Za-z0-9@\-_.]+)\}")


def resolve(value: str, s: ExecutionState) -> str:
    """Replace ``#{namespace.Variable}``; an unresolvable reference is left as written."""

    def sub(m: re.Match[str]) -> str:
        ns, var = m.group(1), m.group(2)
        if ns == "codepipeline":
            known = {"PipelineExecutionId": s.execution_id, "PipelineName": s.pipeline_name}
            return known.get(var, m.group(0))
        if ns == "variables":
            return s.variables.get(var, m.group(0))
        return s.namespaces.get(ns, {}).get(var, m.group(0))

    return _VAR.sub(sub, value)
