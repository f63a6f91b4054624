"""How an execution moves: stage locks ("lanes"), stages, action groups, finishing.

These functions change the transition's own copies (``Ctx.ex``) and record effects; the
handlers in :mod:`engine.scheduler.handlers` decide *whether* something happens, these
decide *what* happens next. No I/O, no clock but ``Ctx.now``.
"""

from __future__ import annotations

from engine.execution import (
    ActionResult,
    ActionState,
    ActionStatus,
    ExecutionState,
    ExecutionStatus,
    ExecutionType,
    RetryMode,
    StageState,
    StageStatus,
    TriggerType,
)
from engine.ids import action_execution_id, approval_token, rollback_execution_id
from engine.keys import provider_queue
from engine.messages import Dispatch, EventState, Revoke
from engine.rules import ConditionKind
from engine.run import StageSnapshot
from engine.scheduler import conditions
from engine.scheduler.context import Ctx
from providers.base import Category

# AWS's quota on an action's configuration after #{...} variables are resolved (100 KB).
MAX_RESOLVED_CONFIGURATION_BYTES = 100 * 1024

# The event state an execution's final status is announced with.
_FINAL_EVENT = {
    ExecutionStatus.SUCCEEDED: EventState.SUCCEEDED,
    ExecutionStatus.FAILED: EventState.FAILED,
    ExecutionStatus.STOPPED: EventState.STOPPED,
    ExecutionStatus.SUPERSEDED: EventState.SUPERSEDED,
    ExecutionStatus.CANCELLED: EventState.CANCELED,
}


# ---------------------------------------------------------------------------- lanes


def index_of(ex: ExecutionState, stage: str) -> int:
    return next(i for i, s in enumerate(ex.stages) if s.name == stage)


def _newer(a: ExecutionState, b: ExecutionState) -> bool:
    return (a.start_time, a.execution_id) > (b.start_time, b.execution_id)


def _locked(c: Ctx, stage: str, execution_id: str) -> bool:
    """Outside PARALLEL mode, a stage another execution occupies is locked."""
    occupants = c.run.lane(stage).occupants
    return c.mode != "PARALLEL" and any(o != execution_id for o in occupants)


def request_stage(c: Ctx, ex: ExecutionState, index: int) -> None:
    """Enter the stage at ``index`` if its lock and inbound transition allow, else wait."""
    name = ex.stages[index].name
    lane = c.run.lane(name)
    open_ = c.run.transition(name).enabled and not _locked(c, name, ex.execution_id)
    if open_ and not lane.waiting:
        enter(c, ex, index)
        return
    ex.waiting_for = name
    ex.current_stage = index
    if c.mode == "SUPERSEDED":
        for other_id in list(lane.waiting):
            other = c.ex(other_id)
            loser, winner = (other, ex) if _newer(ex, other) else (ex, other)
            if loser is ex:
                supersede(c, ex, winner)
                return
            lane.waiting.remove(other_id)
            supersede(c, other, ex)
    lane.waiting.append(ex.execution_id)
    if open_:
        admit(c, name)


def supersede(c: Ctx, ex: ExecutionState, by: ExecutionState) -> None:
    """``ex`` (not in the lane: its caller took it out, or never put it in) gives way."""
    ex.waiting_for = None
    finish_execution(
        c, ex, ExecutionStatus.SUPERSEDED, f"Superseded by execution {by.execution_id}"
    )


def admit(c: Ctx, stage: str) -> None:
    """Let waiting executions into ``stage`` as far as its lock and transition allow."""
    lane = c.run.lane(stage)
    while (
        lane.waiting
        and c.run.transition(stage).enabled
        and (c.mode == "PARALLEL" or not lane.occupants)
    ):
        ex = c.ex(lane.waiting.pop(0))
        ex.waiting_for = None
        enter(c, ex, index_of(ex, stage))


def leave(c: Ctx, ex: ExecutionState, stage: str) -> None:
    lane = c.run.lane(stage)
    if ex.execution_id in lane.waiting:
        lane.waiting.remove(ex.execution_id)
    if ex.execution_id in lane.occupants:
        lane.occupants.remove(ex.execution_id)
        admit(c, stage)


# ---------------------------------------------------------------------------- stages


def enter(c: Ctx, ex: ExecutionState, index: int) -> None:
    st = ex.stages[index]
    ex.current_stage = index
    ex.waiting_for = None
    c.run.lane(st.name).occupants.append(ex.execution_id)
    c.run.latest[st.name] = ex.execution_id
    st.status = StageStatus.IN_PROGRESS
    st.group = 0
    c.emit(ex, "stage", EventState.STARTED, stage=st.name)
    if conditions.declared(ex, st.name, ConditionKind.BEFORE_ENTRY):
        evaluate(c, ex, st, ConditionKind.BEFORE_ENTRY)
    else:
        start_group(c, ex, st)


def start_group(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    """Start the running group's actions that still need to run; skip finished groups."""
    decl = ex.stage_decl(st.name)
    groups = decl.groups()
    while st.group < len(groups):
        todo = [i for i in groups[st.group] if st.actions[i].status is not ActionStatus.SUCCEEDED]
        if todo:
            break
        st.group += 1
    else:
        stage_succeeded(c, ex, st)
        return
    too_big: list[tuple[ActionState, int]] = []
    for i in todo:
        act, ad = st.actions[i], decl.actions[i]
        _new_run(ex, act)
        act.status = ActionStatus.IN_PROGRESS
        act.attempt += 1
        act.start_time = act.last_update_time = c.now
        act.deadline = c.now + act.timeout_minutes * ex.minute_seconds
        act.resolved_configuration = {k: ex.resolve(v) for k, v in ad.configuration.items()}
        act.input_artifacts = [
            ex.artifacts[a.name] for a in ad.input_artifacts if a.name in ex.artifacts
        ]
        c.emit(ex, "action", EventState.STARTED, stage=st.name, action=act.name)
        size = sum(len(k.encode()) + len(v.encode()) for k, v in act.resolved_configuration.items())
        if size > MAX_RESOLVED_CONFIGURATION_BYTES:
            too_big.append((act, size))  # failed below, never dispatched
        elif ad.action_type_id.category is Category.APPROVAL:
            # Approvals hold no worker: the execution rests here until an answer or the timer.
            act.approval_token = approval_token(act.action_execution_id or "", act.attempt, c.now)
        else:
            c.dispatch(action_dispatch(ex, act))
    for act, size in too_big:
        finish_action(
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


def _new_run(ex: ExecutionState, act: ActionState) -> None:
    """A new run of the action, under a new action execution id (``reset_stage`` kept the
    last one in ``previous``)."""
    act.run += 1
    act.action_execution_id = action_execution_id(ex.execution_id, act.stage, act.name, act.run)
    act.lease_losses = 0
    act.result = None
    act.approval_token = None
    act.approval_summary = act.approved_by = None


def action_dispatch(ex: ExecutionState, act: ActionState) -> Dispatch:
    t = ex.action_decl(act.stage, act.name).action_type_id
    return Dispatch(
        execution_id=ex.execution_id,
        stage=act.stage,
        action=act.name,
        attempt=act.attempt,
        queue=act.queue or provider_queue(t.category.value, t.provider),
    )


def action_revoke(ex: ExecutionState, act: ActionState) -> Revoke:
    return Revoke(
        execution_id=ex.execution_id, stage=act.stage, action=act.name, attempt=act.attempt
    )


def finish_action(c: Ctx, ex: ExecutionState, act: ActionState, result: ActionResult) -> None:
    act.status = ActionStatus.SUCCEEDED if result.succeeded else ActionStatus.FAILED
    act.result = result
    act.last_update_time = c.now
    act.deadline = None
    state = EventState.SUCCEEDED if result.succeeded else EventState.FAILED
    c.emit(ex, "action", state, stage=act.stage, action=act.name)
    if result.succeeded:
        for art in result.output_artifacts:
            ex.artifacts[art.name] = art
        ns = ex.action_decl(act.stage, act.name).namespace
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
    group_settled(c, ex, act.stage)


def abandon_action(c: Ctx, ex: ExecutionState, act: ActionState) -> None:
    """Stop-and-abandon (or a deleted pipeline): the action ends Abandoned; a worker running
    it is told to stop (approvals hold no worker)."""
    act.status = ActionStatus.ABANDONED
    act.last_update_time = c.now
    act.deadline = None
    c.emit(ex, "action", EventState.ABANDONED, stage=act.stage, action=act.name)
    if act.approval_token is None:
        c.revoke(action_revoke(ex, act))


def group_settled(c: Ctx, ex: ExecutionState, stage_name: str) -> None:
    """After an action settles: finish its group, then its stage."""
    st = ex.stage(stage_name)
    assert st is not None
    decl = ex.stage_decl(stage_name)
    group = [st.actions[i] for i in decl.groups()[st.group]]
    if any(a.in_progress for a in group):
        return  # a failed action fails its stage only once the rest of its group is done
    failed = [a for a in group if a.status in (ActionStatus.FAILED, ActionStatus.ABANDONED)]
    if ex.stop_mode is not None:
        stopped(c, ex, st)
        return
    if failed:
        first = failed[0]
        msg = (first.result.error_message if first.result else None) or "action failed"
        stage_failed(c, ex, st, f"{st.name}.{first.name}: {msg}")
        return
    st.group += 1
    start_group(c, ex, st)


def stage_succeeded(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    if conditions.pending(ex, st, ConditionKind.ON_SUCCESS):
        evaluate(c, ex, st, ConditionKind.ON_SUCCESS)
        return
    st.status = StageStatus.SUCCEEDED
    st.evaluating = None
    c.emit(ex, "stage", EventState.SUCCEEDED, stage=st.name)
    if ex.execution_type is ExecutionType.STANDARD:
        c.run.snapshots[st.name] = snapshot(ex, c.now)
    move_on(c, ex, st)


def move_on(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    """Past a stage (succeeded or skipped): ask for the next stage *before* leaving this one,
    so an execution this one lets in cannot run through (skip) the stage and take the next
    one first: order in QUEUED, and no older revision deployed after a newer one."""
    next_stage(c, ex, st)
    leave(c, ex, st.name)


def snapshot(ex: ExecutionState, now: float) -> StageSnapshot:
    return StageSnapshot(
        execution_id=ex.execution_id,
        pipeline_version=ex.pipeline_version,
        artifacts=dict(ex.artifacts),
        variables=dict(ex.variables),
        namespaces={k: dict(v) for k, v in ex.namespaces.items()},
        at=now,
    )


def next_stage(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    index = index_of(ex, st.name)
    # A stop never gets here: it finishes the execution in its stage (flow.stopped).
    if ex.only_stage is not None or index + 1 >= len(ex.stages):
        finish_execution(c, ex, ExecutionStatus.SUCCEEDED, None)
    else:
        request_stage(c, ex, index + 1)


def stage_failed(c: Ctx, ex: ExecutionState, st: StageState, message: str) -> None:
    on_failure = ex.stage_decl(st.name).on_failure
    if conditions.pending(ex, st, ConditionKind.ON_FAILURE):
        st.status = StageStatus.IN_PROGRESS
        ex.status_summary = message
        evaluate(c, ex, st, ConditionKind.ON_FAILURE)
        return
    result = conditions.failure_result(ex, st)
    if result == "RETRY" and not st.auto_retried:
        st.auto_retried = True
        mode = (
            on_failure.retry_configuration.retry_mode
            if on_failure and on_failure.retry_configuration
            else RetryMode.FAILED_ACTIONS
        )
        reset_stage(st, RetryMode(mode))
        c.emit(ex, "stage", EventState.RESUMED, stage=st.name)
        st.status = StageStatus.IN_PROGRESS
        st.group = 0
        if conditions.declared(ex, st.name, ConditionKind.BEFORE_ENTRY) and (
            ConditionKind.BEFORE_ENTRY not in st.overridden
        ):
            st.retries += 1  # fresh rule-execution ids; the entry gate is checked again
            evaluate(c, ex, st, ConditionKind.BEFORE_ENTRY)
        else:
            start_group(c, ex, st)
        return
    end_stage_failed(c, ex, st, message, rollback=result == "ROLLBACK")


def end_stage_failed(
    c: Ctx, ex: ExecutionState, st: StageState, message: str, *, rollback: bool
) -> None:
    st.status = StageStatus.FAILED
    st.evaluating = None
    c.emit(ex, "stage", EventState.FAILED, stage=st.name)
    leave(c, ex, st.name)
    finish_execution(c, ex, ExecutionStatus.FAILED, message)
    if rollback:
        auto_rollback(c, ex, st.name)


def auto_rollback(c: Ctx, ex: ExecutionState, stage: str) -> None:
    """onFailure ROLLBACK: redeploy what the stage last ran successfully, if allowed."""
    snap = c.run.snapshots.get(stage)
    if ex.execution_type is not ExecutionType.STANDARD or index_of(ex, stage) == 0:
        return
    if snap is None or snap.pipeline_version != ex.pipeline_version:
        return  # nothing to go back to; AWS never rolls back to an older pipeline version
    st = ex.stage(stage)
    # One id per failure of the stage (its retry count): never a rollback started twice.
    rid = rollback_execution_id(ex.execution_id, stage, st.retries if st else 0)
    start_rollback(c, rid, snap, stage, TriggerType.AUTOMATED_ROLLBACK, ex.execution_id, ex)


def start_rollback(
    c: Ctx,
    rid: str,
    snap: StageSnapshot,
    stage: str,
    trigger_type: TriggerType,
    trigger_detail: str,
    like: ExecutionState,
    started_by: str | None = None,
) -> ExecutionState:
    """A ROLLBACK execution: the snapshot's artifacts and variables, that stage alone.

    ``like`` supplies the definition, version and bucket (the snapshot's version)."""
    st = like.stage(stage)
    assert st is not None
    ex = ExecutionState(
        execution_id=rid,
        pipeline_name=like.pipeline_name,
        pipeline_version=like.pipeline_version,
        definition_digest=like.definition_digest,
        definition=like.definition,
        artifact_bucket=like.artifact_bucket,
        start_time=c.now,
        last_update_time=c.now,
        trigger_type=trigger_type,
        trigger_detail=trigger_detail,
        started_by=started_by,
        variables=dict(snap.variables),
        namespaces={k: dict(v) for k, v in snap.namespaces.items()},
        artifacts=dict(snap.artifacts),
        stages=[
            StageState(
                name=s.name,
                actions=[
                    ActionState(
                        stage=s.name,
                        name=a.name,
                        timeout_minutes=a.timeout_minutes,
                        queue=a.queue,
                    )
                    for a in s.actions
                ],
            )
            for s in like.stages
        ],
        execution_type=ExecutionType.ROLLBACK,
        rollback_target=snap.execution_id,
        only_stage=stage,
        execution_mode=c.mode,
        minute_seconds=like.minute_seconds,
    )
    c.add(ex)
    c.run.active.append(rid)
    c.subject = c.subject or rid
    c.emit(ex, "pipeline", EventState.STARTED)
    request_stage(c, ex, index_of(ex, stage))
    return ex


def reset_stage(st: StageState, mode: RetryMode) -> None:
    """Before a retry: the actions that will run again start over (each gets a new run)."""
    for act in st.actions:
        if mode is RetryMode.ALL_ACTIONS or act.status is not ActionStatus.SUCCEEDED:
            if act.status is not None and act.action_execution_id is not None:
                act.previous.append(act.runs()[-1])
                act.action_execution_id = None
            act.status = None
            act.result = None
            act.approval_token = None
            act.deadline = None
    st.rules = [rr for rr in st.rules if rr.kind is ConditionKind.BEFORE_ENTRY]
    st.overridden = [k for k in st.overridden if k is ConditionKind.BEFORE_ENTRY]
    st.evaluating = None


# ---------------------------------------------------------------------------- conditions


def evaluate(c: Ctx, ex: ExecutionState, st: StageState, kind: ConditionKind) -> None:
    """Evaluate the stage's conditions of ``kind``; act on the verdict once it is in."""
    conditions.start_rules(c, ex, st, kind)
    conditions_progress(c, ex, st)


def conditions_progress(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    """Once every rule of the kind being evaluated has a result: act on the verdict."""
    kind = st.evaluating
    if kind is None or not conditions.settled(st):
        return
    met = conditions.met(st, kind)
    if kind is ConditionKind.BEFORE_ENTRY:
        st.evaluating = None
        if met:
            start_group(c, ex, st)
        elif conditions.failed_results(ex, st, kind) == {"SKIP"}:
            st.status = StageStatus.SKIPPED
            c.emit(ex, "stage", EventState.SKIPPED, stage=st.name)
            move_on(c, ex, st)
        else:
            why = conditions.why(st, kind)
            stage_failed(c, ex, st, f"{st.name}: entry condition not met: {why}")
    elif kind is ConditionKind.ON_SUCCESS:
        if met:
            stage_succeeded(c, ex, st)
        else:
            rollback = "ROLLBACK" in conditions.failed_results(ex, st, kind)
            why = conditions.why(st, kind)
            end_stage_failed(
                c, ex, st, f"{st.name}: success condition not met: {why}", rollback=rollback
            )
    else:  # onFailure: the rules gate the declared result
        st.evaluating = None
        stage_failed(c, ex, st, ex.status_summary or f"{st.name} failed")


# ---------------------------------------------------------------------------- stopping


def stop_running(c: Ctx, ex: ExecutionState, *, abandon: bool) -> None:
    """After a stop request: abandon what must be, and finish once nothing runs."""
    if ex.waiting_for is not None:
        leave(c, ex, ex.waiting_for)
        ex.waiting_for = None
        finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)
        return
    for act in ex.running():
        # Approvals never hold a worker, so stopping never waits on a person.
        if abandon or act.approval_token is not None:
            abandon_action(c, ex, act)
    if ex.current_stage >= 0 and not ex.running():
        st = ex.stages[ex.current_stage]
        conditions.abandon_rules(c, ex, st)
        stopped(c, ex, st)


def stopped(c: Ctx, ex: ExecutionState, st: StageState) -> None:
    st.status = StageStatus.STOPPED
    st.evaluating = None
    c.emit(ex, "stage", EventState.STOPPED, stage=st.name)
    leave(c, ex, st.name)
    finish_execution(c, ex, ExecutionStatus.STOPPED, ex.stop_reason)


def finish_execution(
    c: Ctx, ex: ExecutionState, status: ExecutionStatus, summary: str | None
) -> None:
    ex.status = status
    ex.status_summary = summary
    c.run.active.remove(ex.execution_id)
    c.emit(ex, "pipeline", _FINAL_EVENT[status])
