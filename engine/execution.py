"""Execution records: what happened to one run of a pipeline, with CodePipeline's enums."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.definition import PipelineDeclaration


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


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactLocation(_Record):
    name: str
    bucket: str
    key: str
    version_id: str | None = None
    sha256: str | None = None
    size: int | None = None


class ActionResult(_Record):
    """A worker's report of one attempt, recorded in Redis before the callback is sent."""

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


class ActionState(_Record):
    stage: str
    name: str
    action_execution_id: str
    status: ActionStatus | None = None  # None: not started
    attempt: int = 0  # grows across retries, so a stale task never matches
    lease_losses: int = 0
    # The attempt a worker or the sweep reported as running: a lease was claimed for it.
    token: str | None = None  # approval token
    start_time: float | None = None
    last_update_time: float | None = None
    deadline: float | None = None
    resolved_configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactLocation] = Field(default_factory=list)
    result: ActionResult | None = None
    approval_summary: str | None = None
    approved_by: str | None = None


class RuleRun(_Record):
    """One evaluation of one rule of a stage condition (ListRuleExecutions)."""

    rule_execution_id: str
    stage: str = ""
    kind: str  # "beforeEntry" | "onSuccess" | "onFailure"
    condition: int  # index of the condition within its kind
    rule: str
    provider: str
    status: str  # InProgress | Succeeded | Failed | Abandoned
    summary: str | None = None
    start_time: float
    last_update_time: float
    attempt: int = 1
    deadline: float | None = None  # for rules run on a worker
    resolved_configuration: dict[str, str] = Field(default_factory=dict)


class StageState(_Record):
    name: str
    status: StageStatus | None = None  # None: not entered
    group: int = 0  # index into StageDeclaration.groups() of the running group
    actions: list[ActionState]
    rules: list[RuleRun] = Field(default_factory=list)
    # Set while the stage's conditions of this kind are being evaluated.
    evaluating: str | None = None
    overridden: list[str] = Field(default_factory=list)  # condition kinds overridden
    auto_retried: bool = False
    retries: int = 0

    def action(self, name: str) -> ActionState | None:
        return next((a for a in self.actions if a.name == name), None)


class ExecutionState(_Record):
    execution_id: str
    pipeline_name: str
    pipeline_version: int
    definition: PipelineDeclaration
    artifact_bucket: str
    status: ExecutionStatus = ExecutionStatus.IN_PROGRESS
    status_summary: str | None = None
    start_time: float
    last_update_time: float
    trigger_type: str = "StartPipelineExecution"
    trigger_detail: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    stop_mode: str | None = None  # "wait" | "abandon"
    stop_reason: str | None = None
    stages: list[StageState]
    current_stage: int = -1  # -1: not started
    # Artifacts produced so far, by name; inputs of later actions read from here.
    artifacts: dict[str, ArtifactLocation] = Field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = Field(default_factory=dict)
    source_revisions: list[dict[str, Any]] = Field(default_factory=list)
    execution_type: str = "STANDARD"  # or "ROLLBACK"
    rollback_target: str | None = None  # the execution a rollback redeploys
    only_stage: str | None = None  # a rollback execution runs this stage alone
    waiting_for: str | None = None  # the stage whose inbound transition it waits at
    client_request_token: str | None = None
    execution_mode: str = "SUPERSEDED"
    seq: int = 0  # bumped by every committed transition

    def stage(self, name: str) -> StageState | None:
        return next((s for s in self.stages if s.name == name), None)

    def action(self, stage: str, action: str) -> ActionState | None:
        st = self.stage(stage)
        return st.action(action) if st else None
