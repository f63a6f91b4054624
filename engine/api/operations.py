"""CodePipeline operations as functions of (service, request body) -> response body.

Each handler is a thin adapter over :class:`engine.service.Service`: unpack the
already-checked request, call the service, render with :mod:`engine.api.shapes`. No HTTP
here, so the protocol layer and these mappings can be read (and changed) separately.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from engine import rules
from engine.api import shapes
from engine.api.action_types_api import ACTION_TYPE_OPERATIONS
from engine.api.jobs import JOB_OPERATIONS, with_progress
from engine.api.revisions import REVISION_OPERATIONS
from engine.api.tags import TAG_OPERATIONS, tag_pipeline
from engine.api.webhooks_api import WEBHOOK_OPERATIONS
from engine.approvals import STAGE_APPROVERS, check_stages
from engine.auth.identity import caller_arn
from engine.errors import ValidationError
from engine.execution import ExecutionState, StageStatus
from engine.service import Service
from engine.source_overrides import source_revision_entries
from engine.tags import tag_list, tags_of

Body = dict[str, Any]
Handler = Callable[[Service, Body], Body]
T = TypeVar("T")

DEFAULT_PAGE = 100
# How far back ListPipelineExecutions/ListActionExecutions look: Service keeps newest first.
MAX_EXECUTIONS_SCANNED = 1000


def _page(items: Sequence[T], body: Body, default: int = DEFAULT_PAGE) -> tuple[list[T], Body]:
    """Offset pagination: ``nextToken`` is the index of the next item, opaque to clients."""
    token = body.get("nextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise ValidationError(f"nextToken {token!r} is not valid") from None
    size = int(body.get("maxResults") or default)
    if size < 1:
        raise ValidationError("maxResults must be at least 1")
    chunk = list(items[start : start + size])
    more = {"nextToken": str(start + size)} if start + size < len(items) else {}
    return chunk, more


# ---------------------------------------------------------------------------- pipelines


def create_pipeline(svc: Service, body: Body) -> Body:
    tags = tags_of(body.get("tags") or [])  # checked before anything is created
    if any(k.startswith(STAGE_APPROVERS) for k in tags):  # before the pipeline exists
        check_stages(tags, _stage_names(body["pipeline"]), str(body["pipeline"].get("name")))
    rec = svc.create_pipeline(body["pipeline"])
    tag_pipeline(svc, rec.declaration.name, tags)
    return {"pipeline": shapes.declaration(rec), "tags": tag_list(tags)}


def _stage_names(declared: Body) -> set[str]:
    """Stage names as sent (the declaration is validated later, with every problem)."""
    stages = declared.get("stages")
    if not isinstance(stages, list):
        return set()
    return {str(s.get("name")) for s in stages if isinstance(s, dict)}


def update_pipeline(svc: Service, body: Body) -> Body:
    return {"pipeline": shapes.declaration(svc.update_pipeline(body["pipeline"]))}


def get_pipeline(svc: Service, body: Body) -> Body:
    rec = svc.get_pipeline(body["name"], body.get("version"))
    return {
        "pipeline": shapes.declaration(rec),
        "metadata": shapes.metadata(rec, svc.store.account),
    }


def list_pipelines(svc: Service, body: Body) -> Body:
    rows, more = _page(svc.list_pipelines(), body)
    return {"pipelines": [shapes.pipeline_summary(r) for r in rows], **more}


def delete_pipeline(svc: Service, body: Body) -> Body:
    svc.delete_pipeline(body["name"])
    return {}


# ---------------------------------------------------------------------------- executions


def start_pipeline_execution(svc: Service, body: Body) -> Body:
    pinned = None
    if body.get("sourceRevisions"):
        decl = svc.get_pipeline(body["name"]).declaration
        pinned = source_revision_entries(decl, body["sourceRevisions"])
    variables: dict[str, str] = {}
    for v in body.get("variables", []):
        if v["name"] in variables:
            raise ValidationError(f"variables: {v['name']} is given more than once")
        variables[v["name"]] = v["value"]
    # The same clientRequestToken returns the execution it started the first time. The
    # starter's ARN is the trigger's detail, as on AWS (separation of duties reads it).
    state = svc.start_execution(
        body["name"],
        variables,
        trigger_detail=caller_arn(svc.store.account),
        source_revisions=pinned,
        client_request_token=body.get("clientRequestToken") or None,
    )
    return {"pipelineExecutionId": state.execution_id}


def stop_pipeline_execution(svc: Service, body: Body) -> Body:
    state = svc.stop_execution(
        body["pipelineName"],
        body["pipelineExecutionId"],
        abandon=bool(body.get("abandon", False)),
        reason=body.get("reason"),
    )
    return {"pipelineExecutionId": state.execution_id}


def get_pipeline_execution(svc: Service, body: Body) -> Body:
    state = svc.get_execution(body["pipelineName"], body["pipelineExecutionId"])
    return {"pipelineExecution": shapes.execution(state)}


def list_pipeline_executions(svc: Service, body: Body) -> Body:
    states = svc.list_executions(body["pipelineName"], limit=MAX_EXECUTIONS_SCANNED)
    stage = (body.get("filter") or {}).get("succeededInStage", {}).get("stageName")
    if stage:
        states = [
            s for s in states if (st := s.stage(stage)) and st.status is StageStatus.SUCCEEDED
        ]
    rows, more = _page(states, body)
    return {"pipelineExecutionSummaries": [shapes.execution_summary(s) for s in rows], **more}


def _succeeded_in(state: ExecutionState, stage: str) -> bool:
    st = state.stage(stage)
    return st is not None and st.status is StageStatus.SUCCEEDED


def get_pipeline_state(svc: Service, body: Body) -> Body:
    rec, views, waiting = svc.pipeline_state(body["name"])
    return with_progress(svc, shapes.pipeline_state(rec, views, waiting))


def _filtered_execution(body: Body) -> str | None:
    f = body.get("filter") or {}
    latest = f.get("latestInPipelineExecution") or {}
    found = f.get("pipelineExecutionId") or latest.get("pipelineExecutionId")
    return str(found) if found else None


def list_action_executions(svc: Service, body: Body) -> Body:
    execution_id = _filtered_execution(body)
    svc.get_pipeline(body["pipelineName"])  # PipelineNotFound before ExecutionNotFound
    runs = svc.action_executions(body["pipelineName"], execution_id, limit=MAX_EXECUTIONS_SCANNED)
    rows, more = _page(runs, body)
    return {
        "actionExecutionDetails": [
            shapes.action_execution_detail(s, a, r, svc.store.account.region) for s, a, r in rows
        ],
        **more,
    }


# ---------------------------------------------------------------------------- stages


def retry_stage_execution(svc: Service, body: Body) -> Body:
    state = svc.retry_stage(
        body["pipelineName"], body["stageName"], body["pipelineExecutionId"], body["retryMode"]
    )
    return {"pipelineExecutionId": state.execution_id}


def disable_stage_transition(svc: Service, body: Body) -> Body:
    svc.set_transition(
        body["pipelineName"],
        body["stageName"],
        body["transitionType"],
        enabled=False,
        reason=body["reason"],
        changed_by=caller_arn(svc.store.account),
    )
    return {}


def enable_stage_transition(svc: Service, body: Body) -> Body:
    svc.set_transition(
        body["pipelineName"],
        body["stageName"],
        body["transitionType"],
        enabled=True,
        changed_by=caller_arn(svc.store.account),
    )
    return {}


def rollback_stage(svc: Service, body: Body) -> Body:
    state = svc.rollback_stage(
        body["pipelineName"], body["stageName"], body["targetPipelineExecutionId"]
    )
    return {"pipelineExecutionId": state.execution_id}


def override_stage_condition(svc: Service, body: Body) -> Body:
    svc.override_condition(
        body["pipelineName"], body["stageName"], body["pipelineExecutionId"], body["conditionType"]
    )
    return {}


# ---------------------------------------------------------------------------- rules


def list_rule_types(svc: Service, body: Body) -> Body:
    # Every rule type is owner AWS and runs in any region, so both filters keep them all
    # (the owner filter's only legal value, AWS, is checked against botocore's enum).
    return {"ruleTypes": rules.RULE_TYPES}


def list_rule_executions(svc: Service, body: Body) -> Body:
    execution_id = _filtered_execution(body)
    svc.get_pipeline(body["pipelineName"])
    pairs = svc.rule_executions(body["pipelineName"], execution_id, limit=MAX_EXECUTIONS_SCANNED)
    rows, more = _page(pairs, body)
    return {
        "ruleExecutionDetails": [shapes.rule_execution_detail(s, r) for s, r in rows],
        **more,
    }


# ---------------------------------------------------------------------------- approvals


def put_approval_result(svc: Service, body: Body) -> Body:
    result = body["result"]
    approved_at = svc.put_approval_result(
        body["pipelineName"],
        body["stageName"],
        body["actionName"],
        body["token"],
        approved=result["status"] == "Approved",
        summary=result.get("summary", ""),
    )
    return {"approvedAt": approved_at}


OPERATIONS: dict[str, Handler] = {
    "CreatePipeline": create_pipeline,
    "UpdatePipeline": update_pipeline,
    "GetPipeline": get_pipeline,
    "ListPipelines": list_pipelines,
    "DeletePipeline": delete_pipeline,
    "StartPipelineExecution": start_pipeline_execution,
    "StopPipelineExecution": stop_pipeline_execution,
    "GetPipelineExecution": get_pipeline_execution,
    "ListPipelineExecutions": list_pipeline_executions,
    "GetPipelineState": get_pipeline_state,
    "ListActionExecutions": list_action_executions,
    "PutApprovalResult": put_approval_result,
    "RetryStageExecution": retry_stage_execution,
    "DisableStageTransition": disable_stage_transition,
    "EnableStageTransition": enable_stage_transition,
    "RollbackStage": rollback_stage,
    "OverrideStageCondition": override_stage_condition,
    "ListRuleTypes": list_rule_types,
    "ListRuleExecutions": list_rule_executions,
    **JOB_OPERATIONS,
    **ACTION_TYPE_OPERATIONS,
    **TAG_OPERATIONS,
    **WEBHOOK_OPERATIONS,
    **REVISION_OPERATIONS,
}
