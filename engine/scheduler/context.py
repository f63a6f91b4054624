"""One transition in progress: what ``decide`` reads, what it changes, what it says.

The state a transition sees is a :class:`View` the store assembles inside its
compare-and-set: the pipeline's run record, the executions the event names plus those
waiting at stage transitions, and the pipeline's current version. ``decide`` never mutates
the view: :meth:`Ctx.ex` hands out a private copy of an execution the first time a handler
touches it (copy on write), so a transition costs a copy of what it touches, not of
everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from engine.definition import PipelineDeclaration
from engine.execution import ExecutionState
from engine.messages import Dispatch, Effect, Emit, EventLevel, EventState, Revoke
from engine.run import PipelineRun


@dataclass(frozen=True)
class PipelineInfo:
    """The pipeline as it is now (its latest version), for rules that compare with it."""

    version: int
    declaration: PipelineDeclaration


@dataclass(frozen=True)
class View:
    """Everything one transition may read. ``pipeline`` is None once it was deleted."""

    run: PipelineRun
    executions: Mapping[str, ExecutionState]
    pipeline: PipelineInfo | None
    # The execution a Started event's clientRequestToken already started, if any.
    token_owner: str | None = None
    # The JSON each execution was read from, when the caller has it: a transition's private
    # copy of an execution is parsed from it, twice as fast as copying the parsed record.
    sources: Mapping[str, str] = field(default_factory=dict)


class RejectionCode(StrEnum):
    """Why a request was refused; the service maps each onto CodePipeline's error."""

    PIPELINE_NOT_FOUND = "PipelineNotFound"
    # A start built on a pipeline version that is no longer the latest: build it again.
    STALE_VERSION = "StaleVersion"
    EXECUTION_NOT_FOUND = "ExecutionNotFound"
    STAGE_NOT_FOUND = "StageNotFound"
    ACTION_NOT_FOUND = "ActionNotFound"
    INVALID = "Invalid"
    NOT_STOPPABLE = "NotStoppable"
    DUPLICATE_STOP = "DuplicateStop"
    NOT_LATEST = "NotLatest"
    STAGE_NOT_RETRYABLE = "StageNotRetryable"
    LIMIT_EXCEEDED = "LimitExceeded"
    UNABLE_TO_ROLLBACK = "UnableToRollback"
    CONDITION_NOT_OVERRIDABLE = "ConditionNotOverridable"
    APPROVAL_ALREADY_COMPLETED = "ApprovalAlreadyCompleted"
    INVALID_APPROVAL_TOKEN = "InvalidApprovalToken"
    # An approver list that does not name the caller, or separation of duties.
    ACCESS_DENIED = "AccessDenied"


@dataclass(frozen=True)
class Rejection:
    code: RejectionCode
    message: str


class Rejected(Exception):
    """Raised by a guard inside a handler; ``decide`` turns it into a :class:`Rejection`
    and discards whatever the handler had changed."""

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, message)


@dataclass
class Decision:
    """The outcome of one event: the new run record, every execution the transition changed
    or created (private copies), the effects to carry out, and, when the event was refused,
    why. ``subject`` is the execution the request resolved to (a start, a repeated start with
    the same token, a rollback)."""

    run: PipelineRun
    executions: dict[str, ExecutionState]
    effects: list[Effect]
    changed: bool = False
    rejection: Rejection | None = None
    subject: str | None = None


@dataclass
class Ctx:
    view: View
    run: PipelineRun
    now: float
    fx: list[Effect] = field(default_factory=list)
    touched: dict[str, ExecutionState] = field(default_factory=dict)
    subject: str | None = None

    @property
    def mode(self) -> str:
        return self.run.mode

    def ex(self, execution_id: str) -> ExecutionState:
        """The execution, as this transition's own copy (made on first use)."""
        mine = self.touched.get(execution_id)
        if mine is not None:
            return mine
        original = self.view.executions.get(execution_id)
        if original is None:
            raise LookupError(f"execution {execution_id} was not loaded for this transition")
        source = self.view.sources.get(execution_id)
        mine = clone(original) if source is None else _parsed(source, original)
        self.touched[execution_id] = mine
        return mine

    def find(self, execution_id: str | None) -> ExecutionState | None:
        """The execution if the view has it (or this transition made it), else None."""
        if execution_id is None:
            return None
        if execution_id in self.touched or execution_id in self.view.executions:
            return self.ex(execution_id)
        return None

    def add(self, ex: ExecutionState) -> None:
        """A new execution this transition creates."""
        self.touched[ex.execution_id] = ex

    def emit(
        self,
        ex: ExecutionState,
        level: EventLevel,
        state: EventState,
        stage: str | None = None,
        action: str | None = None,
    ) -> None:
        self.fx.append(
            Emit(execution_id=ex.execution_id, level=level, state=state, stage=stage, action=action)
        )

    def dispatch(self, d: Dispatch) -> None:
        self.fx.append(d)

    def revoke(self, r: Revoke) -> None:
        self.fx.append(r)


def _parsed(source: str, original: ExecutionState) -> ExecutionState:
    copy = ExecutionState.model_validate_json(source)
    copy.definition = original.definition
    return copy


def clone(ex: ExecutionState) -> ExecutionState:
    """A private copy of one execution; its (shared, immutable) definition is re-attached
    rather than copied. pydantic-core's dump/validate is much faster than deepcopy."""
    copy = ExecutionState.model_validate(ex.model_dump())
    copy.definition = ex.definition
    return copy
