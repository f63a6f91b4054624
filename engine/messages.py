"""What flows into the transition function (events) and out of it (effects), and the
deterministic ids both sides derive from them."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.definition import PipelineDeclaration
from engine.execution import ActionResult, ActionState, ExecutionState, StageState

_ID_NS = uuid.UUID("6f1d2a8e-3c1b-4c5e-9a57-2f0b8d7e4c10")


# ---------------------------------------------------------------------------- events


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    now: float


class Started(_Event):
    kind: Literal["started"] = "started"
    execution: ExecutionState


class ActionCompleted(_Event):
    kind: Literal["action_completed"] = "action_completed"
    execution_id: str
    stage: str
    action: str
    attempt: int
    result: ActionResult


class ApprovalAnswered(_Event):
    kind: Literal["approval_answered"] = "approval_answered"
    execution_id: str
    stage: str
    action: str
    token: str
    approved: bool
    summary: str = ""
    answered_by: str | None = None


class StopRequested(_Event):
    kind: Literal["stop_requested"] = "stop_requested"
    execution_id: str
    abandon: bool = False
    reason: str | None = None


class TimerFired(_Event):
    kind: Literal["timer_fired"] = "timer_fired"


class LeaseExpired(_Event):
    """The worker running an attempt stopped renewing its lease (it died)."""

    kind: Literal["lease_expired"] = "lease_expired"
    execution_id: str
    stage: str
    action: str
    attempt: int


class RetryRequested(_Event):
    """RetryStageExecution: ``execution`` is the failed execution as last persisted."""

    kind: Literal["retry_requested"] = "retry_requested"
    execution: ExecutionState
    stage: str
    mode: Literal["FAILED_ACTIONS", "ALL_ACTIONS"]


class TransitionChanged(_Event):
    kind: Literal["transition_changed"] = "transition_changed"
    stage: str
    enabled: bool
    reason: str | None = None
    changed_by: str | None = None


class RollbackRequested(_Event):
    """RollbackStage: redeploy ``target``'s artifacts and variables for ``stage``."""

    kind: Literal["rollback_requested"] = "rollback_requested"
    target: ExecutionState
    stage: str
    rollback_id: str  # chosen by the caller, so a repeated request is recognised
    trigger_type: str = "ManualRollback"
    trigger_detail: str | None = None


class RuleCompleted(_Event):
    """A rule that runs on a worker (Commands) finished."""

    kind: Literal["rule_completed"] = "rule_completed"
    execution_id: str
    stage: str
    rule_execution_id: str
    succeeded: bool
    summary: str = ""


class ConditionOverridden(_Event):
    kind: Literal["condition_overridden"] = "condition_overridden"
    execution_id: str
    stage: str
    condition_type: str  # BEFORE_ENTRY | ON_SUCCESS


Event = Annotated[
    Started
    | ActionCompleted
    | ApprovalAnswered
    | StopRequested
    | TimerFired
    | LeaseExpired
    | RetryRequested
    | TransitionChanged
    | RollbackRequested
    | RuleCompleted
    | ConditionOverridden,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------- effects


class Dispatch(BaseModel):
    """Enqueue one attempt of one action (or one rule run) on its queue."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["dispatch"] = "dispatch"
    execution_id: str
    stage: str
    action: str  # for a rule: the rule execution id
    attempt: int
    queue: str


class Emit(BaseModel):
    """A state change to publish as an EventBridge-shaped event."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["emit"] = "emit"
    execution_id: str
    level: Literal["pipeline", "stage", "action"]
    state: str  # CAPITALS, as CodePipeline's events say
    stage: str | None = None
    action: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


class Revoke(BaseModel):
    """Revoke an abandoned attempt's Celery task and terminate what it runs."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["revoke"] = "revoke"
    execution_id: str
    stage: str
    action: str
    attempt: int


Effect = Annotated[Dispatch | Emit | Revoke, Field(discriminator="kind")]


def task_id(execution_id: str, stage: str, action: str, attempt: int) -> str:
    """The Celery task id of one attempt: deterministic, so it can be revoked."""
    return str(uuid.uuid5(_ID_NS, f"task/{execution_id}/{stage}/{action}/{attempt}"))


def rollback_execution_id(failed_execution_id: str, stage: str, retries: int) -> str:
    """The id of the ROLLBACK execution an automatic rollback of a failed stage creates:
    one per failure of that stage in that execution, whatever the clock says."""
    return str(uuid.uuid5(_ID_NS, f"rollback/{failed_execution_id}/{stage}/{retries}"))


def approval_token(action_execution_id: str, attempt: int, now: float) -> str:
    """An approval's token: new for every attempt, so a stale answer never matches."""
    return str(uuid.uuid5(_ID_NS, f"{action_execution_id}/{attempt}/{now!r}"))


def rule_execution_id(
    execution_id: str, stage: str, kind: str, condition: int, rule: str, retries: int, now: float
) -> str:
    return str(
        uuid.uuid5(_ID_NS, f"{execution_id}/{stage}/{kind}/{condition}/{rule}/{retries}/{now!r}")
    )


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
    source_revisions: list[dict[str, str]] | None = None,
    client_request_token: str | None = None,
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
        source_revisions=list(source_revisions or []),
        client_request_token=client_request_token,
        execution_mode=definition.execution_mode,
    )
