"""Execution records: what happened to one run of a pipeline, with CodePipeline's enums.

An execution record does not embed its pipeline definition: it names it by version and
digest, and the store attaches the (shared, immutable) declaration when it loads the record.
Executions therefore stay a few KB however large the pipeline is, so reading and writing one
per transition is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import Field

from engine.definition import ActionDeclaration, PipelineDeclaration, StageDeclaration
from engine.definition.model import ExecutionMode
from engine.records import Record
from engine.rules import ConditionKind
from engine.variables import CODEPIPELINE, PIPELINE_VARIABLES, substitute


class ExecutionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (ExecutionStatus.IN_PROGRESS, ExecutionStatus.STOPPING)


class StageStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SKIPPED = "Skipped"


class ActionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    ABANDONED = "Abandoned"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self is not ActionStatus.IN_PROGRESS


class RuleStatus(StrEnum):
    """CodePipeline's RuleExecutionStatus."""

    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABANDONED = "Abandoned"


class StopMode(StrEnum):
    """StopPipelineExecution without and with ``abandon``."""

    WAIT = "wait"
    ABANDON = "abandon"


class ExecutionType(StrEnum):
    STANDARD = "STANDARD"
    ROLLBACK = "ROLLBACK"


class TriggerType(StrEnum):
    """CodePipeline's ExecutionTrigger ``triggerType`` values."""

    CREATE_PIPELINE = "CreatePipeline"
    START_PIPELINE_EXECUTION = "StartPipelineExecution"
    POLL_FOR_SOURCE_CHANGES = "PollForSourceChanges"
    WEBHOOK = "Webhook"
    CLOUDWATCH_EVENT = "CloudWatchEvent"
    PUT_ACTION_REVISION = "PutActionRevision"
    WEBHOOK_V2 = "WebhookV2"
    MANUAL_ROLLBACK = "ManualRollback"
    AUTOMATED_ROLLBACK = "AutomatedRollback"


class RetryMode(StrEnum):
    """RetryStageExecution's ``retryMode``."""

    FAILED_ACTIONS = "FAILED_ACTIONS"
    ALL_ACTIONS = "ALL_ACTIONS"


class ArtifactLocation(Record):
    name: str
    bucket: str
    key: str
    version_id: str | None = None
    sha256: str | None = None
    size: int | None = None


class ActionResult(Record):
    """A worker's report of one attempt, recorded in Redis before it is applied."""

    succeeded: bool
    summary: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    external_execution_id: str | None = None
    external_execution_url: str | None = None
    output_artifacts: list[ArtifactLocation] = Field(default_factory=list)
    output_variables: dict[str, str] = Field(default_factory=dict)
    revision_id: str | None = None
    revision_summary: str | None = None
    log_location: ArtifactLocation | None = None


class ActionRun(Record):
    """One earlier run of an action (before a stage retry ran it again): ListActionExecutions
    lists each run under its own action execution id, as CodePipeline does."""

    action_execution_id: str
    status: ActionStatus
    start_time: float | None = None
    last_update_time: float | None = None
    resolved_configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactLocation] = Field(default_factory=list)
    result: ActionResult | None = None
    approval_summary: str | None = None
    approved_by: str | None = None


class ActionState(Record):
    stage: str
    name: str
    # How long the action may run (timeoutInMinutes, else its provider's AWS default).
    timeout_minutes: int
    # The Celery queue its attempts go to, when not its provider's own: the job-worker
    # queue, for actions of Custom and ThirdParty types job workers run.
    queue: str | None = None
    # The current run's id; a stage retry starts a new run with a new id.
    action_execution_id: str | None = None
    run: int = 0  # runs started so far (0: never started)
    status: ActionStatus | None = None  # None: not started
    # Delivery attempts across runs; it only grows, so a stale task never matches.
    attempt: int = 0
    lease_losses: int = 0  # times this run's worker died
    approval_token: str | None = None  # an approval's, while it waits for an answer
    start_time: float | None = None
    last_update_time: float | None = None
    deadline: float | None = None
    resolved_configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactLocation] = Field(default_factory=list)
    result: ActionResult | None = None
    approval_summary: str | None = None
    approved_by: str | None = None
    previous: list[ActionRun] = Field(default_factory=list)  # earlier runs, oldest first

    @property
    def in_progress(self) -> bool:
        return self.status is ActionStatus.IN_PROGRESS

    def runs(self) -> list[ActionRun]:
        """Every run that started, oldest first, the current one last."""
        current = []
        if self.status is not None and self.action_execution_id is not None:
            current = [
                ActionRun(
                    action_execution_id=self.action_execution_id,
                    status=self.status,
                    start_time=self.start_time,
                    last_update_time=self.last_update_time,
                    resolved_configuration=self.resolved_configuration,
                    input_artifacts=self.input_artifacts,
                    result=self.result,
                    approval_summary=self.approval_summary,
                    approved_by=self.approved_by,
                )
            ]
        return [*self.previous, *current]


class RuleRun(Record):
    """One evaluation of one rule of a stage condition (ListRuleExecutions)."""

    rule_execution_id: str
    stage: str
    kind: ConditionKind
    condition: int  # index of the condition within its kind
    rule: str
    provider: str
    status: RuleStatus
    summary: str | None = None
    start_time: float
    last_update_time: float
    attempt: int = 0  # delivery attempts, for rules that run on a worker
    lease_losses: int = 0
    deadline: float | None = None  # for rules run on a worker
    resolved_configuration: dict[str, str] = Field(default_factory=dict)

    @property
    def in_progress(self) -> bool:
        return self.status is RuleStatus.IN_PROGRESS


class StageState(Record):
    name: str
    status: StageStatus | None = None  # None: not entered
    group: int = 0  # index into StageDeclaration.groups() of the running group
    actions: list[ActionState]
    rules: list[RuleRun] = Field(default_factory=list)
    # Set while the stage's conditions of this kind are being evaluated.
    evaluating: ConditionKind | None = None
    overridden: list[ConditionKind] = Field(default_factory=list)
    auto_retried: bool = False
    retries: int = 0

    def action(self, name: str) -> ActionState | None:
        return next((a for a in self.actions if a.name == name), None)

    def rule_run(self, rule_execution_id: str) -> RuleRun | None:
        return next((r for r in self.rules if r.rule_execution_id == rule_execution_id), None)


class ExecutionState(Record):
    execution_id: str
    pipeline_name: str
    pipeline_version: int
    # SHA-256 of the stored definition this execution runs: the store attaches it by this.
    definition_digest: str
    # Attached by whoever loads the record (never stored with it); shared, never mutated.
    definition: PipelineDeclaration | None = Field(default=None, exclude=True)
    artifact_bucket: str
    status: ExecutionStatus = ExecutionStatus.IN_PROGRESS
    status_summary: str | None = None
    start_time: float
    last_update_time: float
    trigger_type: TriggerType = TriggerType.START_PIPELINE_EXECUTION
    trigger_detail: str | None = None
    # The signed principal (IAM-style ARN) whose request started it: StartPipelineExecution,
    # PutActionRevision, CreatePipeline, RollbackStage. None when Conveyor itself did
    # (webhooks, polling, automated rollback). Separation of duties reads it.
    started_by: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    stop_mode: StopMode | None = None
    stop_reason: str | None = None
    stages: list[StageState]
    current_stage: int = -1  # -1: not started
    # Artifacts produced so far, by name; inputs of later actions read from here.
    artifacts: dict[str, ArtifactLocation] = Field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = Field(default_factory=dict)
    source_revisions: list[dict[str, Any]] = Field(default_factory=list)
    execution_type: ExecutionType = ExecutionType.STANDARD
    rollback_target: str | None = None  # the execution a rollback redeploys
    only_stage: str | None = None  # a rollback execution runs this stage alone
    waiting_for: str | None = None  # the stage whose inbound transition it waits at
    client_request_token: str | None = None
    execution_mode: ExecutionMode = "SUPERSEDED"
    # Seconds in one minute of ``timeoutInMinutes``: 60, except where tests shorten time.
    minute_seconds: float = 60.0

    @property
    def decl(self) -> PipelineDeclaration:
        """The pipeline declaration this execution runs (attached by the store)."""
        if self.definition is None:
            raise LookupError(f"execution {self.execution_id}: definition not attached")
        return self.definition

    def stage(self, name: str) -> StageState | None:
        return next((s for s in self.stages if s.name == name), None)

    def action(self, stage: str, action: str) -> ActionState | None:
        st = self.stage(stage)
        return st.action(action) if st else None

    def stage_decl(self, name: str) -> StageDeclaration:
        decl = self.decl.stage(name)
        if decl is None:
            raise LookupError(f"stage {name} not in pipeline {self.pipeline_name}")
        return decl

    def action_decl(self, stage: str, action: str) -> ActionDeclaration:
        found = next((a for a in self.stage_decl(stage).actions if a.name == action), None)
        if found is None:
            raise LookupError(f"action {stage}.{action} not in pipeline {self.pipeline_name}")
        return found

    def lookup(self, namespace: str, variable: str) -> str | None:
        """The value of ``#{namespace.variable}`` in this execution so far, or None."""
        if namespace == CODEPIPELINE:
            known = {"PipelineExecutionId": self.execution_id, "PipelineName": self.pipeline_name}
            return known.get(variable)
        if namespace == PIPELINE_VARIABLES:
            return self.variables.get(variable)
        return self.namespaces.get(namespace, {}).get(variable)

    def resolve(self, value: str) -> str:
        """``value`` with its references replaced; one without a value is left as written."""
        return substitute(value, self.lookup)

    def running(self) -> list[ActionState]:
        """Every action in progress, in any stage."""
        return [a for st in self.stages for a in st.actions if a.in_progress]

    def next_deadline(self) -> float | None:
        """The earliest deadline of anything still running: when a timer must look again."""
        due = [a.deadline for a in self.running() if a.deadline is not None]
        due += [
            r.deadline
            for st in self.stages
            for r in st.rules
            if r.in_progress and r.deadline is not None
        ]
        return min(due) if due else None


def new_execution(
    *,
    execution_id: str,
    definition: PipelineDeclaration,
    version: int,
    digest: str,
    artifact_bucket: str,
    variables: dict[str, str],
    timeout_minutes: Callable[[ActionDeclaration], int],
    queue_of: Callable[[ActionDeclaration], str | None] | None = None,
    now: float = 0.0,
    trigger_type: TriggerType = TriggerType.START_PIPELINE_EXECUTION,
    trigger_detail: str | None = None,
    source_revisions: list[dict[str, str]] | None = None,
    client_request_token: str | None = None,
    minute_seconds: float = 60.0,
    started_by: str | None = None,
) -> ExecutionState:
    """A fresh execution of ``definition``, not yet started (``decide`` starts it).

    ``timeout_minutes`` gives each action's timeout: its ``timeoutInMinutes``, else the
    default its provider documents. ``variables`` override the pipeline's defaults.
    """
    stages = [
        StageState(
            name=s.name,
            actions=[
                ActionState(
                    stage=s.name,
                    name=a.name,
                    timeout_minutes=timeout_minutes(a),
                    queue=queue_of(a) if queue_of is not None else None,
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
        definition_digest=digest,
        definition=definition,
        artifact_bucket=artifact_bucket,
        start_time=now,
        last_update_time=now,
        trigger_type=trigger_type,
        trigger_detail=trigger_detail,
        started_by=started_by,
        variables=resolved,
        stages=stages,
        source_revisions=list(source_revisions or []),
        client_request_token=client_request_token,
        execution_mode=definition.execution_mode,
        minute_seconds=minute_seconds,
    )
