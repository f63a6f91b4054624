"""The one API every front end calls: the HTTP API, the CLI (through it) and the client.

The service judges nothing itself: it validates definitions, turns each request into an
event, lets the store apply it (``decide`` judges, inside the compare-and-set), and maps a
refusal onto CodePipeline's error for it. Reads go straight to the store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine import keys
from engine.approvals import policy_from_tags
from engine.auth.context import current
from engine.auth.identity import caller_arn
from engine.definition import ActionDeclaration, PipelineDeclaration, normalize, validate
from engine.errors import (
    AccessDeniedError,
    ActionNotFoundError,
    ApprovalAlreadyCompletedError,
    ConcurrentExecutionsLimitError,
    ConditionNotOverridableError,
    ConflictError,
    ConveyorError,
    DuplicatedStopRequestError,
    ExecutionNotFoundError,
    ExecutionNotStoppableError,
    InvalidApprovalTokenError,
    NotLatestPipelineExecutionError,
    PipelineNotFoundError,
    StageNotFoundError,
    StageNotRetryableError,
    UnableToRollbackStageError,
    ValidationError,
)
from engine.execution import (
    ActionRun,
    ActionState,
    ActionStatus,
    ExecutionState,
    RetryMode,
    RuleRun,
    TriggerType,
    new_execution,
)
from engine.keys import JOB_WORKER_QUEUE
from engine.messages import (
    ApprovalAnswered,
    ConditionOverridden,
    Event,
    RetryRequested,
    RollbackRequested,
    Started,
    StopRequested,
    TransitionChanged,
)
from engine.run import PipelineRun, TransitionState
from engine.scheduler import Decision, RejectionCode
from engine.store import PipelineRecord, Store
from providers.job_worker import JOB_WORKER_OWNERS, provider_class
from providers.registry import Registry

# How each refusal of ``decide`` reaches the client.
_ERRORS: dict[RejectionCode, type[ConveyorError]] = {
    RejectionCode.PIPELINE_NOT_FOUND: PipelineNotFoundError,
    RejectionCode.STALE_VERSION: ConflictError,
    RejectionCode.EXECUTION_NOT_FOUND: ExecutionNotFoundError,
    RejectionCode.STAGE_NOT_FOUND: StageNotFoundError,
    RejectionCode.ACTION_NOT_FOUND: ActionNotFoundError,
    RejectionCode.INVALID: ValidationError,
    RejectionCode.NOT_STOPPABLE: ExecutionNotStoppableError,
    RejectionCode.DUPLICATE_STOP: DuplicatedStopRequestError,
    RejectionCode.NOT_LATEST: NotLatestPipelineExecutionError,
    RejectionCode.STAGE_NOT_RETRYABLE: StageNotRetryableError,
    RejectionCode.LIMIT_EXCEEDED: ConcurrentExecutionsLimitError,
    RejectionCode.UNABLE_TO_ROLLBACK: UnableToRollbackStageError,
    RejectionCode.CONDITION_NOT_OVERRIDABLE: ConditionNotOverridableError,
    RejectionCode.APPROVAL_ALREADY_COMPLETED: ApprovalAlreadyCompletedError,
    RejectionCode.INVALID_APPROVAL_TOKEN: InvalidApprovalTokenError,
    RejectionCode.ACCESS_DENIED: AccessDeniedError,
}

__all__ = ["PipelineRecord", "Service", "StageView"]

log = logging.getLogger("conveyor.service")

# Starts built again after losing a race to an UpdatePipeline before one is given up.
MAX_STALE_STARTS = 5


@dataclass
class StageView:
    """One stage in GetPipelineState: the latest execution that entered it, the one waiting
    at its inbound transition, and that transition."""

    name: str
    execution: ExecutionState | None
    inbound: ExecutionState | None = None
    transition: TransitionState | None = None


class Service:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        default_bucket: str,
        ensure_bucket: Callable[[str], None] | None = None,
        minute_seconds: float = 60.0,
        start_on_create: bool = False,
    ) -> None:
        """``start_on_create``: CreatePipeline starts the first execution, as on AWS. The
        API's runtime passes CONVEYOR_START_ON_CREATE (on by default); a Service built by
        hand (tests, tools) starts nothing it was not asked to."""
        self.store = store
        self.registry = registry
        self.default_bucket = default_bucket
        self.ensure_bucket = ensure_bucket
        self.minute_seconds = minute_seconds
        self.start_on_create = start_on_create

    # ------------------------------------------------------------------ pipelines

    def create_pipeline(self, raw: dict[str, Any]) -> PipelineRecord:
        decl = self._validate(raw)
        self._ensure_store(decl)
        rec = self.store.definitions.create(decl)
        if self.start_on_create:
            self._first_execution(rec.declaration.name)
        return rec

    def _first_execution(self, name: str) -> None:
        """AWS starts a new pipeline at once. The pipeline exists whatever happens here, so
        a start that is refused (a DeletePipeline raced it) is logged, not reported: the
        CreatePipeline itself succeeded."""
        try:
            # As on AWS, the trigger's detail is who created the pipeline.
            self.start_execution(
                name,
                trigger_type=TriggerType.CREATE_PIPELINE,
                trigger_detail=caller_arn(self.store.account),
            )
        except ConveyorError as exc:
            log.warning(
                "pipeline %s was created but its first execution did not start: %s", name, exc
            )

    def update_pipeline(self, raw: dict[str, Any]) -> PipelineRecord:
        decl = self._validate(raw)
        self._ensure_store(decl)
        return self.store.definitions.update(decl)

    def _validate(self, raw: dict[str, Any]) -> PipelineDeclaration:
        return validate(normalize(raw), self.action_registry(), region=self.store.account.region)

    def action_registry(self) -> Registry:
        """The built-in providers plus the job-worker action types declared now (Custom,
        ThirdParty): what a definition may use."""
        return self.registry.extended(
            provider_class(r.job_worker_type()) for r in self.store.action_types.live()
        )

    def queue_of(self, action: ActionDeclaration) -> str | None:
        """The job-worker queue for an action no built-in provider runs (a declared Custom or
        ThirdParty type, checked when the definition was); None: its provider's queue."""
        t = action.action_type_id
        if self.registry.get(t) is None and t.owner in JOB_WORKER_OWNERS:
            return JOB_WORKER_QUEUE
        return None

    def _ensure_store(self, decl: PipelineDeclaration) -> None:
        if self.ensure_bucket is not None:
            self.ensure_bucket(self.bucket_of(decl))

    def bucket_of(self, decl: PipelineDeclaration) -> str:
        return decl.artifact_store.location if decl.artifact_store else self.default_bucket

    def get_pipeline(self, name: str, version: int | None = None) -> PipelineRecord:
        return self.store.definitions.get(name, version)

    def list_pipelines(self) -> list[PipelineRecord]:
        out = []
        for name in self.store.definitions.names():
            try:
                out.append(self.get_pipeline(name))
            except PipelineNotFoundError:
                continue  # deleted between the two reads
        return out

    def delete_pipeline(self, name: str) -> None:
        """Abandon its executions and remove it. AWS answers success for a pipeline that
        does not exist; so do we."""
        self.store.runs.delete_pipeline(name)

    # ------------------------------------------------------------------ executions

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        trigger_type: TriggerType = TriggerType.START_PIPELINE_EXECUTION,
        trigger_detail: str | None = None,
        source_revisions: list[dict[str, str]] | None = None,
        client_request_token: str | None = None,
    ) -> ExecutionState:
        # Built on the latest version; if an update commits before the start does, the start
        # is refused as stale (decide judges it) and built again on the new version.
        for _ in range(MAX_STALE_STARTS):
            rec = self.get_pipeline(name)
            state = new_execution(
                execution_id=str(uuid.uuid4()),
                definition=rec.declaration,
                version=rec.version,
                digest=rec.digest,
                artifact_bucket=self.bucket_of(rec.declaration),
                variables=variables or {},
                timeout_minutes=self.timeout_minutes,
                queue_of=self.queue_of,
                trigger_type=trigger_type,
                trigger_detail=trigger_detail,
                source_revisions=source_revisions,
                client_request_token=client_request_token,
                minute_seconds=self.minute_seconds,
                started_by=caller_arn(self.store.account),
            )
            decision = self.store.apply(name, Started(execution=state))
            rejection = decision.rejection
            if rejection is None or rejection.code is not RejectionCode.STALE_VERSION:
                return self._resolved(name, self._raise_for(name, decision))
        raise ConflictError(f"pipeline {name} is being updated continually; try again")

    def timeout_minutes(self, action: ActionDeclaration) -> int:
        """An action's timeout: its own, else the default AWS documents for its provider."""
        if action.timeout_in_minutes:
            return action.timeout_in_minutes
        provider = self.registry.get(action.action_type_id)
        return provider.default_timeout_minutes if provider is not None else 60

    def get_execution(self, name: str, execution_id: str) -> ExecutionState:
        state = self.store.runs.load(execution_id)
        if state is None or state.pipeline_name != name:
            raise ExecutionNotFoundError(f"execution {execution_id} not found in pipeline {name}")
        return state

    def list_executions(self, name: str, limit: int = 100) -> list[ExecutionState]:
        self.get_pipeline(name)
        ids = self.store.runs.execution_ids(name, limit)
        found = self.store.runs.load_many(ids)
        return [found[e] for e in ids if e in found]

    def stop_execution(
        self, name: str, execution_id: str, *, abandon: bool = False, reason: str | None = None
    ) -> ExecutionState:
        event = StopRequested(execution_id=execution_id, abandon=abandon, reason=reason)
        return self._resolved(name, self._apply(name, event))

    def retry_stage(self, name: str, stage: str, execution_id: str, mode: str) -> ExecutionState:
        """RetryStageExecution: rerun a failed stage of the latest execution to reach it."""
        try:
            retry_mode = RetryMode(mode)
        except ValueError:
            raise ValidationError(
                f"retryMode {mode!r} must be FAILED_ACTIONS or ALL_ACTIONS"
            ) from None
        event = RetryRequested(execution_id=execution_id, stage=stage, mode=retry_mode)
        return self._resolved(name, self._apply(name, event))

    def set_transition(
        self,
        name: str,
        stage: str,
        transition_type: str,
        *,
        enabled: bool,
        reason: str | None = None,
        changed_by: str | None = None,
    ) -> None:
        """Enable/DisableStageTransition. An Outbound transition is the next stage's Inbound."""
        if transition_type not in ("Inbound", "Outbound"):
            raise ValidationError(f"transitionType {transition_type!r} must be Inbound or Outbound")
        self._apply(
            name,
            TransitionChanged(
                stage=stage,
                transition_type="Inbound" if transition_type == "Inbound" else "Outbound",
                enabled=enabled,
                reason=reason,
                changed_by=changed_by,
            ),
        )

    def rollback_stage(self, name: str, stage: str, target_execution_id: str) -> ExecutionState:
        event = RollbackRequested(
            target_execution_id=target_execution_id,
            stage=stage,
            rollback_id=str(uuid.uuid4()),
            started_by=caller_arn(self.store.account),
        )
        return self._resolved(name, self._apply(name, event))

    def override_condition(
        self, name: str, stage: str, execution_id: str, condition_type: str
    ) -> None:
        self._apply(
            name,
            ConditionOverridden(
                execution_id=execution_id, stage=stage, condition_type=condition_type
            ),
        )

    def run_state(self, name: str) -> PipelineRun:
        return self.store.runs.load_run(name)

    def pipeline_state(
        self, name: str
    ) -> tuple[PipelineRecord, list[StageView], dict[str, list[ExecutionState]]]:
        """GetPipelineState's parts: the pipeline, one view per stage, and per stage every
        execution waiting at its inbound transition, in admission order."""
        rec = self.get_pipeline(name)
        run = self.store.runs.load_run(name)
        wanted = [run.latest[s.name] for s in rec.declaration.stages if s.name in run.latest]
        loaded = self.store.runs.load_many(list(dict.fromkeys([*wanted, *run.waiting_ids()])))
        views = []
        waiting: dict[str, list[ExecutionState]] = {}
        for s in rec.declaration.stages:
            lane = run.lanes.get(s.name)
            queued = [loaded[e] for e in (lane.waiting if lane else []) if e in loaded]
            waiting[s.name] = queued
            latest = run.latest.get(s.name)
            views.append(
                StageView(
                    s.name,
                    loaded.get(latest) if latest else None,
                    queued[0] if queued else None,
                    run.transition(s.name),
                )
            )
        return rec, views, waiting

    def action_executions(
        self, name: str, execution_id: str | None = None, limit: int = 100
    ) -> list[tuple[ExecutionState, ActionState, ActionRun]]:
        """Every run of every action, each under its own id, the newest first."""
        states = (
            [self.get_execution(name, execution_id)]
            if execution_id
            else self.list_executions(name, limit=limit)
        )
        runs = [
            (s, a, run) for s in states for st in s.stages for a in st.actions for run in a.runs()
        ]
        return sorted(runs, key=lambda r: -(r[2].start_time or 0.0))

    def rule_executions(
        self, name: str, execution_id: str | None = None, limit: int = 100
    ) -> list[tuple[ExecutionState, RuleRun]]:
        states = (
            [self.get_execution(name, execution_id)]
            if execution_id
            else self.list_executions(name, limit=limit)
        )
        return [(s, rr) for s in states for st in s.stages for rr in st.rules]

    # ------------------------------------------------------------------ approvals

    def pending_approvals(
        self, name: str | None = None
    ) -> list[tuple[ExecutionState, ActionState]]:
        names = [name] if name else self.store.definitions.names()
        out = []
        for n in names:
            active = self.store.runs.load_many(self.store.runs.load_run(n).active)
            for state in active.values():
                for st in state.stages:
                    for a in st.actions:
                        if a.approval_token and a.status is ActionStatus.IN_PROGRESS:
                            out.append((state, a))
        return out

    def put_approval_result(
        self,
        name: str,
        stage: str,
        action: str,
        token: str,
        *,
        approved: bool,
        summary: str = "",
    ) -> float:
        """Answer an approval as the request's principal (:func:`engine.auth.context.current`),
        under the pipeline's approver lists and separation of duties (its tags; judged with
        the answer, inside the compare-and-set). The principal's ARN is recorded as who
        answered (none when Conveyor itself answers, outside a request). Returns when the
        answer was applied (Redis's clock)."""
        principal = current().principal
        event = ApprovalAnswered(
            execution_id=self.store.runs.approval_owner(name, token),
            stage=stage,
            action=action,
            token=token,
            approved=approved,
            summary=summary,
            answered_by=caller_arn(self.store.account),
            principal=principal,
            policy=policy_from_tags(self.store.tags.get(keys.pipeline_tags(name))),
        )
        decision = self._apply(name, event)
        return decision.run.clock

    # ------------------------------------------------------------------ helpers

    def _apply(self, name: str, event: Event) -> Decision:
        return self._raise_for(name, self.store.apply(name, event))

    def _raise_for(self, name: str, decision: Decision) -> Decision:
        rejection = decision.rejection
        if rejection is None:
            return decision
        if rejection.code is RejectionCode.PIPELINE_NOT_FOUND:
            raise PipelineNotFoundError.named(name, self.store.account.account_id)
        raise _ERRORS[rejection.code](rejection.message)

    def _resolved(self, name: str, decision: Decision) -> ExecutionState:
        """The execution a request resolved to, as it stands after the transition."""
        eid = decision.subject
        if eid is None:
            raise ExecutionNotFoundError(f"no execution resulted in pipeline {name}")
        return decision.executions.get(eid) or self.get_execution(name, eid)
