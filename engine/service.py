"""The one API every front end calls: the HTTP API, the CLI (through it) and the client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.definition import PipelineDeclaration, normalize, validate
from engine.errors import (
    ActionNotFoundError,
    ApprovalAlreadyCompletedError,
    DuplicatedStopRequestError,
    ExecutionNotFoundError,
    ExecutionNotStoppableError,
    InvalidApprovalTokenError,
    PipelineNameInUseError,
    PipelineNotFoundError,
    PipelineVersionNotFoundError,
    StageNotFoundError,
    ValidationError,
)
from engine.execution import ActionState, ActionStatus, ExecutionState
from engine.scheduler import ApprovalAnswered, Started, StopRequested, new_execution
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
    """One stage in GetPipelineState: the latest execution that entered it."""

    name: str
    execution: ExecutionState | None


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
    ) -> ExecutionState:
        rec = self.get_pipeline(name)
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
        )
        return self.store.create_execution(state, Started(now=now))

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
        return self.store.apply(
            execution_id, StopRequested(now=self.clock(), abandon=abandon, reason=reason)
        )

    def pipeline_state(self, name: str) -> tuple[PipelineRecord, list[StageView]]:
        rec = self.get_pipeline(name)
        views = {s.name: StageView(s.name, None) for s in rec.declaration.stages}
        for state in self.list_executions(name, limit=50):  # newest first
            for st in state.stages:
                view = views.get(st.name)
                if view is not None and view.execution is None and st.status is not None:
                    view.execution = state
            if all(v.execution is not None for v in views.values()):
                break
        return rec, list(views.values())

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
                stage=stage,
                action=action,
                token=token,
                approved=approved,
                summary=summary,
                answered_by=answered_by,
            )
            after = self.store.apply(state.execution_id, event)
            settled = after.action(stage, action)
            if settled is None or settled.status is ActionStatus.IN_PROGRESS:
                raise ApprovalAlreadyCompletedError(f"the approval for {stage}.{action} changed")
            return now
        raise InvalidApprovalTokenError(f"the token is not valid for {stage}.{action}")
