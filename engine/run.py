"""A pipeline's run record: the state the transition function works on.

One record per pipeline holds its stage locks ("lanes"), inbound transitions, rollback
targets and every execution still active, so that superseding and queueing are atomic: an
execution leaving a stage and the one waiting for it move in the same transition.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.execution import ArtifactLocation, ExecutionState


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lane(_Record):
    """A stage's lock: who is in it, and who waits at its inbound transition, in order."""

    occupant: str | None = None
    waiting: list[str] = Field(default_factory=list)


class TransitionState(_Record):
    enabled: bool = True
    reason: str | None = None
    changed_by: str | None = None
    changed_at: float | None = None


class StageSnapshot(_Record):
    """What a stage last ran with successfully: the target of a rollback."""

    execution_id: str
    pipeline_version: int
    artifacts: dict[str, ArtifactLocation]
    variables: dict[str, str]
    namespaces: dict[str, dict[str, str]]
    at: float


class PipelineRun(_Record):
    name: str
    mode: str = "SUPERSEDED"
    lanes: dict[str, Lane] = Field(default_factory=dict)
    transitions: dict[str, TransitionState] = Field(default_factory=dict)
    executions: dict[str, ExecutionState] = Field(default_factory=dict)  # active only
    latest: dict[str, str] = Field(default_factory=dict)  # stage -> last execution to enter
    snapshots: dict[str, StageSnapshot] = Field(default_factory=dict)
    tokens: dict[str, str] = Field(default_factory=dict)  # clientRequestToken -> execution
    # Executions this transition finished: persisted by the store, then dropped from here.
    finished: dict[str, ExecutionState] = Field(default_factory=dict)
    seq: int = 0
    # The clock of the last transition. An event is stamped before its compare-and-set, so
    # one that lost a race to another engine worker may carry an older time: it is applied
    # at this time instead, and timestamps never run backwards against the commit order.
    clock: float = 0.0

    def lane(self, stage: str) -> Lane:
        return self.lanes.setdefault(stage, Lane())

    def transition(self, stage: str) -> TransitionState:
        return self.transitions.get(stage) or TransitionState()
