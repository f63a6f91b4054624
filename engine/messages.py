"""What flows into the transition function (events) and out of it (effects).

Events carry no clock of their own choosing: the store stamps ``now`` with Redis's clock
inside the compare-and-set, so every host agrees on time. An event names the executions it
is about (:meth:`_Event.execution_ids`) so the store loads exactly those (plus the ones
waiting at stage transitions, which any transition may admit or supersede).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from engine.approvals import ApprovalPolicy
from engine.auth.principals import Principal
from engine.execution import ActionResult, ExecutionState, RetryMode, TriggerType
from engine.ids import task_id
from engine.records import Record


class WorkKind(StrEnum):
    """What a worker task runs: an action, or a stage-condition rule (Commands)."""

    ACTION = "action"
    RULE = "rule"


# ---------------------------------------------------------------------------- events


class _Event(Record):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # Stamped by the store (Redis TIME) inside the compare-and-set; callers leave it 0.
    now: float = 0.0
    # Whether the transition needs every active execution of the pipeline loaded.
    loads_active: ClassVar[bool] = False

    def execution_ids(self) -> tuple[str, ...]:
        """Existing executions this event is about: the store loads them for ``decide``."""
        return ()


class Started(_Event):
    """StartPipelineExecution (or a trigger): ``execution`` is new, definition attached."""

    kind: Literal["started"] = "started"
    execution: ExecutionState

    def execution_ids(self) -> tuple[str, ...]:
        # A start applied twice (its first EXEC's reply lost to a dropped connection) must
        # find the execution it already started.
        return (self.execution.execution_id,)


class ActionCompleted(_Event):
    kind: Literal["action_completed"] = "action_completed"
    execution_id: str
    stage: str
    action: str
    attempt: int
    result: ActionResult

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class ApprovalAnswered(_Event):
    """PutApprovalResult. ``execution_id`` is the execution the token was issued in, found
    by the token index, or None when no execution ever issued it."""

    kind: Literal["approval_answered"] = "approval_answered"
    execution_id: str | None
    stage: str
    action: str
    token: str
    approved: bool
    summary: str = ""
    answered_by: str | None = None  # the ARN recorded as lastUpdatedBy / updatedBy
    # Who answers and under which rules (engine.approvals); None: not checked (Conveyor's
    # own answers, and tests of the scheduler alone).
    principal: Principal | None = None
    policy: ApprovalPolicy = Field(default_factory=ApprovalPolicy)

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,) if self.execution_id else ()


class StopRequested(_Event):
    kind: Literal["stop_requested"] = "stop_requested"
    execution_id: str
    abandon: bool = False
    reason: str | None = None

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class TimerFired(_Event):
    """A deadline of this execution (action, approval or rule timeout) may have passed."""

    kind: Literal["timer_fired"] = "timer_fired"
    execution_id: str

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class LeaseExpired(_Event):
    """The worker running an attempt stopped renewing its lease (it died)."""

    kind: Literal["lease_expired"] = "lease_expired"
    execution_id: str
    stage: str
    name: str  # the action, or the rule execution id
    attempt: int
    work: WorkKind = WorkKind.ACTION

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class RetryRequested(_Event):
    """RetryStageExecution."""

    kind: Literal["retry_requested"] = "retry_requested"
    execution_id: str
    stage: str
    mode: RetryMode

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class TransitionChanged(_Event):
    """Enable/DisableStageTransition; an Outbound transition is the next stage's Inbound."""

    kind: Literal["transition_changed"] = "transition_changed"
    stage: str
    transition_type: Literal["Inbound", "Outbound"] = "Inbound"
    enabled: bool
    reason: str | None = None
    changed_by: str | None = None


class RollbackRequested(_Event):
    """RollbackStage: redeploy the target execution's artifacts and variables for ``stage``."""

    kind: Literal["rollback_requested"] = "rollback_requested"
    target_execution_id: str
    stage: str
    rollback_id: str  # chosen by the caller, so a repeated request is recognised
    trigger_type: TriggerType = TriggerType.MANUAL_ROLLBACK
    trigger_detail: str | None = None
    started_by: str | None = None  # the signed caller's ARN (separation of duties)

    def execution_ids(self) -> tuple[str, ...]:
        return (self.target_execution_id, self.rollback_id)


class RuleCompleted(_Event):
    """A rule that runs on a worker (Commands) finished."""

    kind: Literal["rule_completed"] = "rule_completed"
    execution_id: str
    stage: str
    rule_execution_id: str
    attempt: int
    succeeded: bool
    summary: str = ""

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class ConditionOverridden(_Event):
    """OverrideStageCondition; ``condition_type`` as the API names it (BEFORE_ENTRY...)."""

    kind: Literal["condition_overridden"] = "condition_overridden"
    execution_id: str
    stage: str
    condition_type: str

    def execution_ids(self) -> tuple[str, ...]:
        return (self.execution_id,)


class PipelineDeleted(_Event):
    """DeletePipeline: every active execution is abandoned before its records go."""

    kind: Literal["pipeline_deleted"] = "pipeline_deleted"
    loads_active: ClassVar[bool] = True


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
    | ConditionOverridden
    | PipelineDeleted,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------- effects


class EventState(StrEnum):
    """``detail.state`` of the EventBridge events CodePipeline emits."""

    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    RESUMED = "RESUMED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SUPERSEDED = "SUPERSEDED"
    ABANDONED = "ABANDONED"
    SKIPPED = "SKIPPED"


EventLevel = Literal["pipeline", "stage", "action"]


class _Effect(Record):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Dispatch(_Effect):
    """Enqueue one attempt of one action (or of a worker-run rule) on its queue."""

    kind: Literal["dispatch"] = "dispatch"
    execution_id: str
    stage: str
    action: str  # for a rule: the rule execution id
    attempt: int
    queue: str
    work: WorkKind = WorkKind.ACTION

    def item(self, pipeline: str) -> WorkItem:
        return WorkItem(
            pipeline, self.execution_id, self.stage, self.action, self.attempt, self.work
        )


class Emit(_Effect):
    """A state change to publish as an EventBridge-shaped event."""

    kind: Literal["emit"] = "emit"
    execution_id: str
    level: EventLevel
    state: EventState
    stage: str | None = None
    action: str | None = None


class Revoke(_Effect):
    """Revoke an abandoned attempt's Celery task; its worker stops what it runs."""

    kind: Literal["revoke"] = "revoke"
    execution_id: str
    stage: str
    action: str
    attempt: int
    work: WorkKind = WorkKind.ACTION

    def item(self, pipeline: str) -> WorkItem:
        return WorkItem(
            pipeline, self.execution_id, self.stage, self.action, self.attempt, self.work
        )


Effect = Annotated[Dispatch | Emit | Revoke, Field(discriminator="kind")]


# ---------------------------------------------------------------------------- work items


@dataclass(frozen=True)
class WorkItem:
    """One attempt a worker runs: the unit that leases, results and tasks are keyed by."""

    pipeline: str
    execution_id: str
    stage: str
    name: str  # the action, or the rule execution id
    attempt: int
    kind: WorkKind = WorkKind.ACTION

    def member(self) -> str:
        """Its name in the lease, claim and result indexes."""
        return json.dumps(
            [self.pipeline, self.execution_id, self.stage, self.name, self.attempt, self.kind]
        )

    @classmethod
    def from_member(cls, member: str) -> WorkItem:
        pipeline, execution_id, stage, name, attempt, kind = json.loads(member)
        return cls(
            str(pipeline), str(execution_id), str(stage), str(name), int(attempt), WorkKind(kind)
        )

    @property
    def task_id(self) -> str:
        return task_id(self.execution_id, self.stage, self.name, self.attempt)

    def __str__(self) -> str:
        """How logs name it: ``action p/e-1/Build.Compile attempt 2``."""
        return (
            f"{self.kind} {self.pipeline}/{self.execution_id}/{self.stage}.{self.name} "
            f"attempt {self.attempt}"
        )

    def task_args(self) -> list[str | int]:
        """The Celery task's arguments, in the order the task functions take them."""
        return [self.execution_id, self.stage, self.name, self.attempt]


def completion(item: WorkItem, result: ActionResult) -> ActionCompleted | RuleCompleted:
    """The event that applies a worker's recorded result of one attempt."""
    if item.kind is WorkKind.RULE:
        return RuleCompleted(
            execution_id=item.execution_id,
            stage=item.stage,
            rule_execution_id=item.name,
            attempt=item.attempt,
            succeeded=result.succeeded,
            summary=result.summary or result.error_message or "",
        )
    return ActionCompleted(
        execution_id=item.execution_id,
        stage=item.stage,
        action=item.name,
        attempt=item.attempt,
        result=result,
    )
