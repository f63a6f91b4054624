"""CodePipeline's ``PipelineDeclaration`` as pydantic models, and the limits it is held to.

The models check shape only (types, required fields, no unknown keys); the rules CodePipeline
enforces across fields live in :mod:`engine.definition.checks`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.rules import Conditions, FailureConditions
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
        "commands",
        "outputVariables",
        "disableInboundStageTransitions",
    }
)
# Fields with no effect on how a pipeline runs here; accepted so exported definitions load.
IGNORED_TOP_LEVEL = frozenset({"tags", "restartExecutionOnUpdate", "metadata"})


class _Model(BaseModel):
    # Unknown keys are errors: a typo such as ``runorder`` must not pass unnoticed.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ArtifactRefDecl(_Model):
    name: str


class ActionDeclaration(_Model):
    name: str
    action_type_id: ActionTypeId = Field(alias="actionTypeId")
    run_order: int = Field(default=1, alias="runOrder")
    configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactRefDecl] = Field(default_factory=list, alias="inputArtifacts")
    output_artifacts: list[ArtifactRefDecl] = Field(default_factory=list, alias="outputArtifacts")
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
        orders = sorted({a.run_order for a in self.actions})
        return [[i for i, a in enumerate(self.actions) if a.run_order == o] for o in orders]


class ArtifactStore(_Model):
    type: Literal["S3"] = "S3"
    location: str


class PipelineVariable(_Model):
    name: str
    default_value: str | None = Field(default=None, alias="defaultValue")
    description: str | None = None


class PipelineDeclaration(_Model):
    name: str
    role_arn: str | None = Field(default=None, alias="roleArn")
    artifact_store: ArtifactStore | None = Field(default=None, alias="artifactStore")
    stages: list[StageDeclaration]
    version: int | None = None
    pipeline_type: Literal["V1", "V2"] = Field(default="V2", alias="pipelineType")
    execution_mode: Literal["SUPERSEDED", "QUEUED", "PARALLEL"] = Field(
        default="SUPERSEDED", alias="executionMode"
    )
    variables: list[PipelineVariable] = Field(default_factory=list)
    triggers: list[dict[str, Any]] = Field(default_factory=list)

    def stage(self, name: str) -> StageDeclaration | None:
        return next((s for s in self.stages if s.name == name), None)

    def to_aws(self) -> dict[str, Any]:
        """The camelCase JSON CodePipeline's GetPipeline returns."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
