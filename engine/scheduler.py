"""The transition function: ``decide(state, event) -> (new_state, effects)``.

Pure: no I/O, no clocks, no randomness (time and nonces arrive inside events), so the
property tests can replay shuffled and duplicated events against it. Every rule about how an
execution moves lives here; the store only makes each transition atomic.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.definition import ActionDeclaration, PipelineDeclaration
from engine.execution import (
    ActionResult,
    ActionState,
    ActionStatus,
    ExecutionState,
    ExecutionStatus,
    StageState,
    StageStatus,
)
from engine.keys import provider_queue
from providers.base import Category

DEFAULT_APPROVAL_TIMEOUT_MINUTES = 7 * 24 * 60
# An action whose worker vanished this many times fails instead of being tried again.
MAX_LEASE_LOSSES = 3
_ID_NS = uuid.UUID("6f1d2a8e-3c1b-4c5e-9a57-2f0b8d7e4c10")


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    now: float


class Started(_Event):
    kind: Literal["started"] = "started"


class ActionCompleted(_Event):
    kind: Literal["action_completed"] = "action_completed"
    stage: str
    action: str
    attempt: int
    result: ActionResult


class ApprovalAnswered(_Event):
    kind: Literal["approval_answered"] = "approval_answered"
    stage: str
    action: str
    token: str
    approved: bool
    summary: str = ""
    answered_by: str | None = None


class StopRequested(_Event):
    kind: Literal["stop_requested"] = "stop_requested"
    abandon: bool = False
    reason: str | None = None


class TimerFired(_Event):
    kind: Literal["timer_fired"] = "timer_fired"


class LeaseExpired(_Event):
    """The worker running an attempt stopped renewing its lease (it died)."""

    kind: Literal["lease_expired"] = "lease_expired"
    stage: str
    action: str
    attempt: int


Event = Annotated[
    Started | ActionCompleted | ApprovalAnswered | StopRequested | TimerFired | LeaseExpired,
    Field(discriminator="kind"),
]


class Dispatch(BaseModel):
    """Enqueue one attempt of one action on its provider's queue."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["dispatch"] = "dispatch"
    execution_id: str
    stage: str
    action: str
    attempt: int
    queue: str


class Emit(BaseModel):
    """A state change to publish as an EventBridge-shaped event."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["emit"] = "emit"
    level: Literal["pipeline", "stage", "action"]
    state: str  # CAPITALS, as CodePipeline's events say
    stage: str | None = None
    action: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


Effect = Annotated[Dispatch | Emit, Field(discriminator="kind")]


def action_execution_id(execution_id: str, stage: str, action: str) -> str:
    return str(uuid.uuid5(_ID_NS, f"{execution_id}/{stage}/{action}"))


def new_execution(
    *,
    execution_id: str,
    definition: PipelineDeclaration,
    version: int,
    artifact_bucket: str,
    now: float,
    variables: dict[str, str],
    trigger_type: str = "StartPipelineExecution",
    trigger_detail: str | None = None,
) -> ExecutionState:
    stages = [
        StageState(
            name=s.name,
            actions=[
                ActionState(
                    stage=s.name,
                    name=a.name,
                    action_execution_id=action_execution_id(execution_id, s.name, a.name),
                )
                for a in s.actions
            ],
        )
        for s in definition.stages
    ]
    resolved = {
        v.name: v.default_value for v in definition.variables if v.default_value is not None
    }
    resolved.update(variables)
    return ExecutionState(
        execution_id=execution_id,
        pipeline_name=definition.name,
        pipeline_version=version,
        definition=definition,
        artifact_bucket=artifact_bucket,
        start_time=now,
        last_update_time=now,
        trigger_type=trigger_type,
        trigger_detail=trigger_detail,
        variables=resolved,
        stages=stages,
    )


def decide(state: ExecutionState, event: Event) -> tuple[ExecutionState, list[Effect]]:
    """Apply one event. A duplicate or stale event returns the state unchanged, no effects."""
    s = state.model_copy(deep=True)
    fx: list[Effect] = []
    match event:
        case Started():
            if s.current_stage == -1 and s.status is ExecutionStatus.IN_PROGRESS:
                fx.append(Emit(level="pipeline", state="STARTED"))
                _enter_stage(s, 0, event.now, fx)
        case ActionCompleted():
            act = s.action(event.stage, event.action)
            if act and act.status is ActionStatus.IN_PROGRESS and act.attempt == event.attempt:
                _finish_action(s, act, event.result, event.now, fx)
        case ApprovalAnswered():
            act = s.action(event.stage, event.action)
            if act and act.status is ActionStatus.IN_PROGRESS and act.token == event.token:
                act.approval_summary = event.summary
                act.approved_by = event.answered_by
                result = ActionResult(
                    succeeded=event.approved,
                    summary=event.summary or ("Approved" if event.approved else "Rejected"),
                    error_code=None if event.approved else "Rejected",
                    error_message=None
                    if event.approved
                    else f"Rejected: {event.summary}".rstrip(": "),
                )
                _finish_action(s, act, result, event.now, fx)
        case StopRequested():
            _stop(s, event, fx)
        case TimerFired():
            for act in _running(s):
                if act.deadline is not None and act.deadline <= event.now:
                    what = "approval" if act.token else "action"
                    timed_out = ActionResult(
                        succeeded=False,
                        error_code="TimedOut",
                        error_message=f"The {what} timed out before it finished",
                    )
                    _finish_action(s, act, timed_out, event.now, fx)
        case LeaseExpired():
            act = s.action(event.stage, event.action)
            if act and act.status is ActionStatus.IN_PROGRESS and act.attempt == event.attempt:
                if act.attempt >= MAX_LEASE_LOSSES:
                    lost = ActionResult(
                        succeeded=False,
                        error_code="WorkerLost",
                        error_message=f"the worker running this action died {act.attempt} times",
                    )
                    _finish_action(s, act, lost, event.now, fx)
                else:
                    act.attempt += 1
                    act.last_update_time = event.now
                    fx.append(_dispatch(s, act))
    if s == state:
        return state, []
    s.last_update_time = max(s.last_update_time, event.now)
    return s, fx


# ---------------------------------------------------------------------------- helpers


def _decl(s: ExecutionState, act: ActionState) -> ActionDeclaration:
    stage = s.definition.stage(act.stage)
    assert stage is not None
    return next(a for a in stage.actions if a.name == act.name)


def _running(s: ExecutionState) -> list[ActionState]:
    return [a for st in s.stages for a in st.actions if a.status is ActionStatus.IN_PROGRESS]


def _dispatch(s: ExecutionState, act: ActionState) -> Dispatch:
    t = _decl(s, act).action_type_id
    return Dispatch(
        execution_id=s.execution_id,
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


def _enter_stage(s: ExecutionState, index: int, now: float, fx: list[Effect]) -> None:
    s.current_stage = index
    st = s.stages[index]
    st.status = StageStatus.IN_PROGRESS
    st.group = 0
    fx.append(Emit(level="stage", state="STARTED", stage=st.name))
    _start_group(s, st, now, fx)


def _start_group(s: ExecutionState, st: StageState, now: float, fx: list[Effect]) -> None:
    decl = s.definition.stage(st.name)
    assert decl is not None
    for i in decl.groups()[st.group]:
        act, ad = st.actions[i], decl.actions[i]
        act.status = ActionStatus.IN_PROGRESS
        act.attempt = 1
        act.start_time = act.last_update_time = now
        act.resolved_configuration = {k: resolve(v, s) for k, v in ad.configuration.items()}
        act.input_artifacts = [
            s.artifacts[a.name] for a in ad.input_artifacts if a.name in s.artifacts
        ]
        fx.append(Emit(level="action", state="STARTED", stage=st.name, action=act.name))
        if ad.action_type_id.category is Category.APPROVAL:
            # Approvals hold no worker: the execution rests here until an answer or the timer.
            minutes = ad.timeout_in_minutes or DEFAULT_APPROVAL_TIMEOUT_MINUTES
            act.deadline = now + minutes * 60
            act.token = str(uuid.uuid5(_ID_NS, f"{act.action_execution_id}/{now!r}/token"))
        else:
            if ad.timeout_in_minutes:
                act.deadline = now + ad.timeout_in_minutes * 60
            fx.append(_dispatch(s, act))


def _finish_action(
    s: ExecutionState, act: ActionState, result: ActionResult, now: float, fx: list[Effect]
) -> None:
    act.status = ActionStatus.SUCCEEDED if result.succeeded else ActionStatus.FAILED
    act.result = result
    act.last_update_time = now
    act.deadline = None
    fx.append(
        Emit(level="action", state=act.status.value.upper(), stage=act.stage, action=act.name)
    )
    if result.succeeded:
        for art in result.output_artifacts:
            s.artifacts[art.name] = art
        ns = _decl(s, act).namespace
        if ns:
            s.namespaces[ns] = dict(result.output_variables)
        if result.revision_id:
            s.source_revisions.append(
                {
                    "actionName": act.name,
                    "revisionId": result.revision_id,
                    "revisionSummary": result.revision_summary or "",
                }
            )
    _advance(s, act.stage, now, fx)


def _advance(s: ExecutionState, stage_name: str, now: float, fx: list[Effect]) -> None:
    """After an action settles: finish its group, then its stage, then the execution."""
    st = s.stage(stage_name)
    decl = s.definition.stage(stage_name)
    assert st is not None and decl is not None
    group = [st.actions[i] for i in decl.groups()[st.group]]
    if any(a.status is ActionStatus.IN_PROGRESS for a in group):
        return  # a failed action fails its stage only once the rest of its group is done
    failed = [a for a in group if a.status in (ActionStatus.FAILED, ActionStatus.ABANDONED)]
    if failed:
        st.status = StageStatus.FAILED
        fx.append(Emit(level="stage", state="FAILED", stage=st.name))
        first = failed[0]
        msg = (first.result.error_message if first.result else None) or "action failed"
        _finish_execution(s, ExecutionStatus.FAILED, f"{st.name}.{first.name}: {msg}", fx)
        return
    if s.stop_mode is not None:
        st.status = StageStatus.STOPPED
        fx.append(Emit(level="stage", state="STOPPED", stage=st.name))
        _finish_execution(s, ExecutionStatus.STOPPED, s.stop_reason, fx)
        return
    if st.group + 1 < len(decl.groups()):
        st.group += 1
        _start_group(s, st, now, fx)
        return
    st.status = StageStatus.SUCCEEDED
    fx.append(Emit(level="stage", state="SUCCEEDED", stage=st.name))
    if s.current_stage + 1 < len(s.stages):
        _enter_stage(s, s.current_stage + 1, now, fx)
    else:
        _finish_execution(s, ExecutionStatus.SUCCEEDED, None, fx)


def _finish_execution(
    s: ExecutionState, status: ExecutionStatus, summary: str | None, fx: list[Effect]
) -> None:
    s.status = status
    s.status_summary = summary
    fx.append(Emit(level="pipeline", state=status.value.upper()))


def _stop(s: ExecutionState, event: StopRequested, fx: list[Effect]) -> None:
    if (
        s.status.terminal
        or (s.stop_mode == "abandon")
        or (s.stop_mode == "wait" and not event.abandon)
    ):
        return
    s.stop_mode = "abandon" if event.abandon else "wait"
    s.stop_reason = event.reason or s.stop_reason
    if s.status is ExecutionStatus.IN_PROGRESS:
        s.status = ExecutionStatus.STOPPING
        fx.append(Emit(level="pipeline", state="STOPPING"))
    running = _running(s)
    for act in running:
        # Approvals never hold a worker, so stopping never waits on a person.
        if event.abandon or act.token is not None:
            act.status = ActionStatus.ABANDONED
            act.last_update_time = event.now
            act.deadline = None
            fx.append(Emit(level="action", state="ABANDONED", stage=act.stage, action=act.name))
    if s.current_stage >= 0 and not _running(s):
        st = s.stages[s.current_stage]
        st.status = StageStatus.STOPPED
        fx.append(Emit(level="stage", state="STOPPED", stage=st.name))
        _finish_execution(s, ExecutionStatus.STOPPED, s.stop_reason, fx)
