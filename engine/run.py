"""A pipeline's run record: what its executions share.

One small record per pipeline holds its stage locks ("lanes"), inbound transitions, rollback
targets and the ids of its active executions, so superseding and queueing are atomic: an
execution leaving a stage and the one waiting for it move in the same transition. The
executions themselves live in records of their own, so the run record stays small however
many executions are in flight, and a transition reads and writes only what it touches.
"""

from __future__ import annotations

from pydantic import Field

from engine.definition.model import ExecutionMode
from engine.execution import ArtifactLocation
from engine.records import Record


class Lane(Record):
    """A stage's lock: who is in it, and who waits at its inbound transition, in order.

    Outside PARALLEL mode at most one execution occupies a stage; PARALLEL executions share
    it, and are listed so that "is the stage idle" (for a rollback) is one look.
    """

    occupants: list[str] = Field(default_factory=list)
    waiting: list[str] = Field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not self.occupants and not self.waiting


class TransitionState(Record):
    enabled: bool = True
    reason: str | None = None
    changed_by: str | None = None
    changed_at: float | None = None


class StageSnapshot(Record):
    """What a stage last ran with successfully: the target of an automatic rollback."""

    execution_id: str
    pipeline_version: int
    artifacts: dict[str, ArtifactLocation]
    variables: dict[str, str]
    namespaces: dict[str, dict[str, str]]
    at: float


class PipelineRun(Record):
    name: str
    mode: ExecutionMode = "SUPERSEDED"
    lanes: dict[str, Lane] = Field(default_factory=dict)
    transitions: dict[str, TransitionState] = Field(default_factory=dict)
    active: list[str] = Field(default_factory=list)  # executions not yet finished
    latest: dict[str, str] = Field(default_factory=dict)  # stage -> last execution to enter
    snapshots: dict[str, StageSnapshot] = Field(default_factory=dict)
    # The clock of the last transition. The store stamps events with Redis's clock, which
    # may step back after a failover: an event is applied at no earlier than this, so
    # timestamps never run backwards against the commit order.
    clock: float = 0.0

    def lane(self, stage: str) -> Lane:
        return self.lanes.setdefault(stage, Lane())

    def transition(self, stage: str) -> TransitionState:
        return self.transitions.get(stage) or TransitionState()

    def waiting_ids(self) -> list[str]:
        """Every execution waiting at any stage's inbound transition."""
        return [eid for lane in self.lanes.values() for eid in lane.waiting]
