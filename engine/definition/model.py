"""CodePipeline's ``PipelineDeclaration`` as pydantic models, and the limits it is held to.

The models check shape only (types, required fields, no unknown keys); the rules CodePipeline
enforces across fields live in :mod:`engine.definition.checks`.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, model_validator

from engine.definition.triggers import PipelineTriggerDeclaration
from engine.records import Declaration
from engine.rules import Condition, ConditionKind, Conditions, FailureConditions, RuleDeclaration
from providers.base import ActionTypeId

NAME_RE = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")
ARTIFACT_RE = re.compile(r"^[a-zA-Z0-9_\-]{1,100}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9@\-_]{1,100}$")
VARIABLE_RE = re.compile(r"^[A-Za-z0-9@\-_]{1,128}$")
MAX_ACTIONS_PER_STAGE = 50
MAX_STAGES = 50


# CodePipeline fields Conveyor does not run yet: rejected by name rather than dropped, since
# silently ignoring e.g. a stage's onFailure would change what the pipeline does.
NOT_YET_SUPPORTED = frozenset(
    {
        "artifactStores",
        "blockers",
        "disableInboundStageTransitions",
    }
)
# Fields with no effect on how a pipeline runs here; accepted so exported definitions load.
IGNORED_TOP_LEVEL = frozenset({"tags", "restartExecutionOnUpdate", "metadata"})


_Model = Declaration

# How executions of a pipeline share its stages (CodePipeline's ``executionMode``).
ExecutionMode = Literal["SUPERSEDED", "QUEUED", "PARALLEL"]


class ArtifactRefDecl(_Model):
    name: str


class OutputArtifactDecl(_Model):
    name: str
    # Which files a compute (Commands) action puts in the artifact; None: not given.
    files: list[str] | None = None


class EnvironmentVariableDecl(_Model):
    """An action's ``environmentVariables`` item (Commands actions)."""

    name: str
    value: str
    type: Literal["PLAINTEXT", "SECRETS_MANAGER"] = "PLAINTEXT"


class ActionDeclaration(_Model):
    name: str
    action_type_id: ActionTypeId = Field(alias="actionTypeId")
    run_order: int = Field(default=1, alias="runOrder")
    configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactRefDecl] = Field(default_factory=list, alias="inputArtifacts")
    output_artifacts: list[OutputArtifactDecl] = Field(
        default_factory=list, alias="outputArtifacts"
    )
    # Compute (Commands) actions only; None (not []) so to_aws() omits what was not given.
    commands: list[str] | None = None
    output_variables: list[str] | None = Field(default=None, alias="outputVariables")
    environment_variables: list[EnvironmentVariableDecl] | None = Field(
        default=None, alias="environmentVariables"
    )
    role_arn: str | None = Field(default=None, alias="roleArn")
    region: str | None = None
    namespace: str | None = None
    timeout_in_minutes: int | None = Field(default=None, alias="timeoutInMinutes")


class StageDeclaration(_Model):
    name: str
    actions: list[ActionDeclaration]
    before_entry: Conditions | None = Field(default=None, alias="beforeEntry")
    on_success: Conditions | None = Field(default=None, alias="onSuccess")
    on_failure: FailureConditions | None = Field(default=None, alias="onFailure")

    def groups(self) -> list[list[int]]:
        """Action indexes grouped by runOrder, groups in ascending runOrder."""
        return self._groups

    @cached_property
    def _groups(self) -> list[list[int]]:
        # Declarations are shared and never change: every transition reads this, so once.
        by_order: dict[int, list[int]] = {}
        for i, a in enumerate(self.actions):
            by_order.setdefault(a.run_order, []).append(i)
        return [by_order[o] for o in sorted(by_order)]

    def conditions(self, kind: ConditionKind) -> list[Condition]:
        """The stage's conditions of one kind (beforeEntry, onSuccess, onFailure)."""
        block = {
            ConditionKind.BEFORE_ENTRY: self.before_entry,
            ConditionKind.ON_SUCCESS: self.on_success,
            ConditionKind.ON_FAILURE: self.on_failure,
        }[kind]
        return list(block.conditions) if block is not None else []

    def rule(self, kind: ConditionKind, condition: int, name: str) -> RuleDeclaration | None:
        """One rule of one of the stage's conditions, if it exists."""
        conds = self.conditions(kind)
        if not 0 <= condition < len(conds):
            return None
        return next((r for r in conds[condition].rules if r.name == name), None)


class ArtifactStore(_Model):
    type: Literal["S3"] = "S3"
    location: str


class PipelineVariable(_Model):
    name: str
    default_value: str | None = Field(default=None, alias="defaultValue")
    description: str | None = None


def _uses_v2(data: dict[str, Any]) -> bool:
    """Whether a declaration uses V2 parameters (AWS: "Including V2 parameters ... in the
    pipeline JSON when creating or updating a pipeline will result in the pipeline having
    the V2 type"): variables, triggers, an execution mode other than SUPERSEDED, stage
    conditions or compute (Commands) actions."""
    if data.get("variables") or data.get("triggers"):
        return True
    if data.get("executionMode") not in (None, "SUPERSEDED"):
        return True
    for stage in data.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        if stage.get("beforeEntry") or stage.get("onSuccess") or stage.get("onFailure"):
            return True
        for action in stage.get("actions") or []:
            if not isinstance(action, dict):
                continue
            type_id = action.get("actionTypeId")
            compute = isinstance(type_id, dict) and type_id.get("category") == "Compute"
            if compute or action.get("commands") is not None:
                return True
    return False


class PipelineDeclaration(_Model):
    """``pipelineType`` left out is V1, or V2 when the declaration uses V2 parameters, as
    CreatePipeline decides it; ``executionMode`` left out is SUPERSEDED."""

    name: str
    role_arn: str | None = Field(default=None, alias="roleArn")
    artifact_store: ArtifactStore | None = Field(default=None, alias="artifactStore")
    stages: list[StageDeclaration]
    version: int | None = None
    pipeline_type: Literal["V1", "V2"] = Field(default="V2", alias="pipelineType")
    execution_mode: ExecutionMode = Field(default="SUPERSEDED", alias="executionMode")
    variables: list[PipelineVariable] = Field(default_factory=list)
    triggers: list[PipelineTriggerDeclaration] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_pipeline_type(cls, data: Any) -> Any:
        absent = isinstance(data, dict) and data.get("pipelineType") is None
        if absent and "pipeline_type" not in data:
            return {**data, "pipelineType": "V2" if _uses_v2(data) else "V1"}
        return data

    def stage(self, name: str) -> StageDeclaration | None:
        return next((s for s in self.stages if s.name == name), None)

    def to_aws(self) -> dict[str, Any]:
        """The camelCase JSON CodePipeline's GetPipeline returns."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
