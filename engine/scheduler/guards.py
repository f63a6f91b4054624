"""Preconditions shared by several handlers, each written once.

A guard either returns what it checked for or raises :class:`Rejected`; handlers read as a
list of guards followed by the change.
"""

from __future__ import annotations

from engine.definition import PipelineDeclaration, StageDeclaration
from engine.execution import ActionState, ExecutionState, RuleRun
from engine.scheduler.context import Ctx, PipelineInfo, Rejected, RejectionCode

# QUEUED and PARALLEL pipelines hold at most this many active executions (as on AWS).
MAX_ACTIVE_EXECUTIONS = 50


def pipeline(c: Ctx) -> PipelineInfo:
    """The pipeline as it is now; it must still exist."""
    if c.view.pipeline is None:
        raise Rejected(RejectionCode.PIPELINE_NOT_FOUND, f"pipeline {c.run.name} not found")
    return c.view.pipeline


def execution(c: Ctx, execution_id: str) -> ExecutionState:
    """An execution of this pipeline."""
    ex = c.find(execution_id)
    if ex is None or ex.pipeline_name != c.run.name:
        raise Rejected(
            RejectionCode.EXECUTION_NOT_FOUND,
            f"execution {execution_id} not found in pipeline {c.run.name}",
        )
    return ex


def stage_of(decl: PipelineDeclaration, stage: str) -> StageDeclaration:
    """A stage the declaration has."""
    found = decl.stage(stage)
    if found is None:
        raise Rejected(
            RejectionCode.STAGE_NOT_FOUND, f"stage {stage} not found in pipeline {decl.name}"
        )
    return found


def latest_in_stage(c: Ctx, ex: ExecutionState, stage: str) -> None:
    """Only the latest execution to enter a stage may be retried or overridden there."""
    if c.run.latest.get(stage) != ex.execution_id:
        raise Rejected(
            RejectionCode.NOT_LATEST,
            f"execution {ex.execution_id} is not the latest in stage {stage}",
        )


def below_limit(c: Ctx) -> None:
    """QUEUED and PARALLEL pipelines take no more active executions past the limit."""
    if c.mode in ("QUEUED", "PARALLEL") and len(c.run.active) >= MAX_ACTIVE_EXECUTIONS:
        raise Rejected(
            RejectionCode.LIMIT_EXCEEDED,
            f"pipeline {c.run.name} already has {len(c.run.active)} active executions "
            f"({c.mode} allows {MAX_ACTIVE_EXECUTIONS})",
        )


def current_action(ex: ExecutionState | None, stage: str, action: str, attempt: int) -> bool:
    """Whether ``attempt`` is the running attempt of the action (else the report is stale)."""
    act = ex.action(stage, action) if ex is not None and not ex.status.terminal else None
    return act is not None and act.in_progress and act.attempt == attempt


def running_action(ex: ExecutionState, stage: str, action: str) -> ActionState:
    act = ex.action(stage, action)
    assert act is not None
    return act


def current_rule(
    ex: ExecutionState | None, stage: str, rule_execution_id: str, attempt: int | None = None
) -> RuleRun | None:
    """The rule run, if it is still being evaluated (and ``attempt`` is its current one)."""
    st = ex.stage(stage) if ex is not None and not ex.status.terminal else None
    rr = st.rule_run(rule_execution_id) if st is not None else None
    if rr is None or not rr.in_progress or (attempt is not None and rr.attempt != attempt):
        return None
    if attempt is not None and attempt < 1:
        return None  # attempt 0: an engine rule, which no worker runs or reports on
    return rr
