"""The one API every front end calls: the HTTP API, the CLI (through it) and the client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from engine.definition import PipelineDeclaration, normalize, validate
from engine.errors import (
    ActionNotFoundError,
    ApprovalAlreadyCompletedError,
    ConcurrentExecutionsLimitError,
    ConditionNotOverridableError,
    DuplicatedStopRequestError,
    ExecutionNotFoundError,
    ExecutionNotStoppableError,
    InvalidApprovalTokenError,
    NotLatestPipelineExecutionError,
    PipelineNameInUseError,
    PipelineNotFoundError,
    PipelineVersionNotFoundError,
    StageNotFoundError,
    StageNotRetryableError,
    UnableToRollbackStageError,
    ValidationError,
)
from engine.execution import (
    ActionState,
    ActionStatus,
    ExecutionState,
    ExecutionStatus,
    RuleRun,
    StageStatus,
)
from engine.messages import (
    ApprovalAnswered,
    ConditionOverridden,
    RetryRequested,
    RollbackRequested,
    Started,
    StopRequested,
    TransitionChanged,
    new_execution,
)
from engine.run import PipelineRun, TransitionState
from engine.scheduler import MAX_ACTIVE_EXECUTIONS
from engine.store import Store
from providers.base import Category
from providers.registry import Registry


@dataclass
class PipelineRecord:
    declaration: PipelineDeclaration
    version: int
    created: float
    updated: float


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.default_bucket = default_bucket
        self.ensure_bucket = ensure_bucket
        self.clock = clock

    # ------------------------------------------------------------------ pipelines

    def create_pipeline(self, raw: dict[str, Any]) -> PipelineRecord:
        decl = validate(normalize(raw), self.registry)
        self._ensure_store(decl)
        version = self.store.put_pipeline(decl.name, decl.to_aws(), create=True)
        if version < 0:
            raise PipelineNameInUseError(f"pipeline {decl.name} already exists")
        return self.get_pipeline(decl.name)

    def update_pipeline(self, raw: dict[str, Any]) -> PipelineRecord:
        decl = validate(normalize(raw), self.registry)
        self._ensure_store(decl)
        version = self.store.put_pipeline(decl.name, decl.to_aws(), create=False)
        if version == 0:
            raise PipelineNotFoundError(f"pipeline {decl.name} not found")
        return self.get_pipeline(decl.name)

    def _ensure_store(self, decl: PipelineDeclaration) -> None:
        if self.ensure_bucket is not None:
            self.ensure_bucket(self.bucket_of(decl))

    def bucket_of(self, decl: PipelineDeclaration) -> str:
        return decl.artifact_store.location if decl.artifact_store else self.default_bucket

    def get_pipeline(self, name: str, version: int | None = None) -> PipelineRecord:
        found = self.store.get_pipeline(name, version)
        if found is None:
            if version is not None and self.store.get_pipeline(name) is not None:
                raise PipelineVersionNotFoundError(f"pipeline {name} has no version {version}")
            raise PipelineNotFoundError(f"pipeline {name} not found")
        raw, meta = found
        decl = PipelineDeclaration.model_validate(raw)
        return PipelineRecord(decl, int(raw["version"]), meta["created"], meta["updated"])

    def list_pipelines(self) -> list[PipelineRecord]:
        out = []
        for name in self.store.list_pipelines():
            try:
                out.append(self.get_pipeline(name))
            except PipelineNotFoundError:
                continue  # deleted between the two reads
        return out

    def delete_pipeline(self, name: str) -> None:
        # AWS answers success for a pipeline that does not exist; so do we.
        self.store.delete_pipeline(name)

    # ------------------------------------------------------------------ executions

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        trigger_type: str = "StartPipelineExecution",
        trigger_detail: str | None = None,
        source_revisions: list[dict[str, str]] | None = None,
        client_request_token: str | None = None,
    ) -> ExecutionState:
        rec = self.get_pipeline(name)
        if client_request_token:
            known = self.store.load_run(name).tokens.get(client_request_token)
            if known is not None:
                return self.get_execution(name, known)
        variables = variables or {}
        declared = {v.name for v in rec.declaration.variables}
        unknown = sorted(set(variables) - declared)
        if unknown:
            raise ValidationError(
                f"variables: {', '.join(unknown)} not declared by pipeline {name}"
            )
        missing = [
            v.name
            for v in rec.declaration.variables
            if v.default_value is None and v.name not in variables
        ]
        if missing:
            raise ValidationError(f"variables: {', '.join(missing)} have no default and no value")
        now = self.clock()
        state = new_execution(
            execution_id=str(uuid.uuid4()),
            definition=rec.declaration,
            version=rec.version,
            artifact_bucket=self.bucket_of(rec.declaration),
            now=now,
            variables=variables,
            trigger_type=trigger_type,
            trigger_detail=trigger_detail,
            source_revisions=source_revisions,
            client_request_token=client_request_token,
        )
        run = self.store.apply(name, Started(now=now, execution=state))
        started = run.executions.get(state.execution_id) or run.finished.get(state.execution_id)
        if started is not None:
            return started
        if client_request_token and client_request_token in run.tokens:
            return self.get_execution(name, run.tokens[client_request_token])
        raise ConcurrentExecutionsLimitError(
            f"pipeline {name} already has {len(run.executions)} active executions "
            f"({rec.declaration.execution_mode} allows {MAX_ACTIVE_EXECUTIONS})"
        )

    def get_execution(self, name: str, execution_id: str) -> ExecutionState:
        state = self.store.try_load(execution_id)
        if state is None or state.pipeline_name != name:
            raise ExecutionNotFoundError(f"execution {execution_id} not found in pipeline {name}")
        return state

    def list_executions(self, name: str, limit: int = 100) -> list[ExecutionState]:
        self.get_pipeline(name)
        out = []
        for eid in self.store.execution_ids(name, limit):
            state = self.store.try_load(eid)
            if state is not None:
                out.append(state)
        return out

    def stop_execution(
        self, name: str, execution_id: str, *, abandon: bool = False, reason: str | None = None
    ) -> ExecutionState:
        state = self.get_execution(name, execution_id)
        if state.status.terminal:
            raise ExecutionNotStoppableError(
                f"execution {execution_id} is {state.status.value} and cannot be stopped"
            )
        if state.stop_mode == "wait" and not abandon:
            raise DuplicatedStopRequestError(f"execution {execution_id} is already stopping")
        if state.stop_mode == "abandon":
            raise DuplicatedStopRequestError(f"execution {execution_id} is already being abandoned")
        event = StopRequested(
            now=self.clock(), execution_id=execution_id, abandon=abandon, reason=reason
        )
        self.store.apply(name, event)
        return self.get_execution(name, execution_id)

    def retry_stage(self, name: str, stage: str, execution_id: str, mode: str) -> ExecutionState:
        """RetryStageExecution: rerun a failed stage of the latest execution to reach it."""
        rec = self.get_pipeline(name)
        if rec.declaration.stage(stage) is None:
            raise StageNotFoundError(f"stage {stage} not found in pipeline {name}")
        if mode not in ("FAILED_ACTIONS", "ALL_ACTIONS"):
            raise ValidationError(f"retryMode {mode!r} must be FAILED_ACTIONS or ALL_ACTIONS")
        state = self.get_execution(name, execution_id)
        run = self.store.load_run(name)
        if run.latest.get(stage) != execution_id:
            raise NotLatestPipelineExecutionError(
                f"execution {execution_id} is not the latest in stage {stage}"
            )
        st = state.stage(stage)
        if (
            state.status is not ExecutionStatus.FAILED
            or st is None
            or st.status is not StageStatus.FAILED
        ):
            raise StageNotRetryableError(
                f"stage {stage} of execution {execution_id} has not failed; nothing to retry"
            )
        if state.pipeline_version != rec.version:
            raise StageNotRetryableError(
                f"pipeline {name} changed since execution {execution_id} (version "
                f"{state.pipeline_version} -> {rec.version}); start a new execution"
            )
        retry_mode: Literal["FAILED_ACTIONS", "ALL_ACTIONS"] = (
            "ALL_ACTIONS" if mode == "ALL_ACTIONS" else "FAILED_ACTIONS"
        )
        run = self.store.apply(
            name, RetryRequested(now=self.clock(), execution=state, stage=stage, mode=retry_mode)
        )
        if execution_id not in run.executions and execution_id not in run.finished:
            if run.latest.get(stage) != execution_id:
                raise NotLatestPipelineExecutionError(
                    f"execution {execution_id} is no longer the latest in stage {stage}"
                )
            if run.mode in ("QUEUED", "PARALLEL") and len(run.executions) >= MAX_ACTIVE_EXECUTIONS:
                raise ConcurrentExecutionsLimitError(
                    f"pipeline {name} already has {len(run.executions)} active executions"
                )
            raise StageNotRetryableError(
                f"stage {stage} of execution {execution_id} changed; retry"
            )
        return self.get_execution(name, execution_id)

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
        rec = self.get_pipeline(name)
        names = [s.name for s in rec.declaration.stages]
        if stage not in names:
            raise StageNotFoundError(f"stage {stage} not found in pipeline {name}")
        if transition_type not in ("Inbound", "Outbound"):
            raise ValidationError(f"transitionType {transition_type!r} must be Inbound or Outbound")
        target = stage
        if transition_type == "Outbound":
            i = names.index(stage)
            if i + 1 >= len(names):
                raise ValidationError(
                    f"stage {stage} is the last stage: it has no outbound transition"
                )
            target = names[i + 1]
        if not enabled and not reason:
            raise ValidationError("reason is required to disable a transition")
        self.store.apply(
            name,
            TransitionChanged(
                now=self.clock(),
                stage=target,
                enabled=enabled,
                reason=reason,
                changed_by=changed_by,
            ),
        )

    def rollback_stage(self, name: str, stage: str, target_execution_id: str) -> ExecutionState:
        rec = self.get_pipeline(name)
        names = [s.name for s in rec.declaration.stages]
        if stage not in names:
            raise StageNotFoundError(f"stage {stage} not found in pipeline {name}")
        if names.index(stage) == 0:
            raise UnableToRollbackStageError("the source stage cannot be rolled back")
        target = self.get_execution(name, target_execution_id)
        if target.execution_type != "STANDARD":
            raise UnableToRollbackStageError(
                f"execution {target_execution_id} is a rollback; roll back to a standard one"
            )
        if target.pipeline_version != rec.version:
            raise UnableToRollbackStageError(
                f"execution {target_execution_id} ran pipeline version "
                f"{target.pipeline_version}, not the current {rec.version}"
            )
        st = target.stage(stage)
        if st is None or st.status is not StageStatus.SUCCEEDED:
            raise UnableToRollbackStageError(
                f"stage {stage} did not succeed in execution {target_execution_id}"
            )
        lane = self.store.load_run(name).lanes.get(stage)
        if lane is not None and (lane.occupant or lane.waiting):
            raise UnableToRollbackStageError(
                f"stage {stage} is running or has executions waiting; roll back once it is idle"
            )
        rid = str(uuid.uuid4())
        event = RollbackRequested(now=self.clock(), target=target, stage=stage, rollback_id=rid)
        run = self.store.apply(name, event)
        created = run.executions.get(rid) or run.finished.get(rid)
        if created is not None:
            return created
        raise UnableToRollbackStageError(f"stage {stage} could not be rolled back")

    def override_condition(
        self, name: str, stage: str, execution_id: str, condition_type: str
    ) -> None:
        self.get_pipeline(name)
        state = self.get_execution(name, execution_id)
        st = state.stage(stage)
        if st is None:
            raise StageNotFoundError(f"stage {stage} not found in pipeline {name}")
        kind = {"BEFORE_ENTRY": "beforeEntry", "ON_SUCCESS": "onSuccess"}.get(condition_type)
        if kind is None or st.evaluating != kind:
            raise ConditionNotOverridableError(
                f"no {condition_type} condition of stage {stage} is being evaluated"
            )
        if self.store.load_run(name).latest.get(stage) != execution_id:
            raise NotLatestPipelineExecutionError(
                f"execution {execution_id} is not the latest in stage {stage}"
            )
        self.store.apply(
            name,
            ConditionOverridden(
                now=self.clock(),
                execution_id=execution_id,
                stage=stage,
                condition_type=condition_type,
            ),
        )

    def run_state(self, name: str) -> PipelineRun:
        return self.store.load_run(name)

    def pipeline_state(self, name: str) -> tuple[PipelineRecord, list[StageView]]:
        rec = self.get_pipeline(name)
        run = self.store.load_run(name)
        views = []
        for s in rec.declaration.stages:
            latest = run.latest.get(s.name)
            ex = self.store.try_load(latest) if latest else None
            lane = run.lanes.get(s.name)
            inbound = self.store.try_load(lane.waiting[0]) if lane and lane.waiting else None
            views.append(StageView(s.name, ex, inbound, run.transition(s.name)))
        return rec, views

    def action_executions(
        self, name: str, execution_id: str | None = None, limit: int = 100
    ) -> list[tuple[ExecutionState, ActionState]]:
        states = (
            [self.get_execution(name, execution_id)]
            if execution_id
            else self.list_executions(name, limit=limit)
        )
        return [
            (s, a) for s in states for st in s.stages for a in st.actions if a.status is not None
        ]

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
        names = [name] if name else self.store.list_pipelines()
        out = []
        for n in names:
            for state in self.list_executions(n, limit=50):
                for st in state.stages:
                    for a in st.actions:
                        if a.token and a.status is ActionStatus.IN_PROGRESS:
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
        answered_by: str | None = None,
    ) -> float:
        rec = self.get_pipeline(name)
        sdecl = rec.declaration.stage(stage)
        if sdecl is None:
            raise StageNotFoundError(f"stage {stage} not found in pipeline {name}")
        adecl = next((a for a in sdecl.actions if a.name == action), None)
        if adecl is None:
            raise ActionNotFoundError(f"action {action} not found in stage {stage}")
        if adecl.action_type_id.category is not Category.APPROVAL:
            raise ValidationError(f"action {stage}.{action} is not an approval action")
        for state in self.list_executions(name, limit=100):
            act = state.action(stage, action)
            if act is None or act.token != token:
                continue
            if act.status is not ActionStatus.IN_PROGRESS:
                raise ApprovalAlreadyCompletedError(
                    f"the approval for {stage}.{action} has already been answered or expired"
                )
            now = self.clock()
            event = ApprovalAnswered(
                now=now,
                execution_id=state.execution_id,
                stage=stage,
                action=action,
                token=token,
                approved=approved,
                summary=summary,
                answered_by=answered_by,
            )
            _, applied = self.store.apply_changed(name, event)
            if not applied:  # another answer, the timeout or a stop got there first
                raise ApprovalAlreadyCompletedError(
                    f"the approval for {stage}.{action} has already been answered or expired"
                )
            return now
        raise InvalidApprovalTokenError(f"the token is not valid for {stage}.{action}")
