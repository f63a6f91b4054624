"""State changes as the EventBridge events CodePipeline emits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from engine.arns import Account
from engine.execution import ExecutionState
from engine.messages import Emit

DETAIL_TYPES = {
    "pipeline": "CodePipeline Pipeline Execution State Change",
    "stage": "CodePipeline Stage Execution State Change",
    "action": "CodePipeline Action Execution State Change",
}


def build(state: ExecutionState, emit: Emit, now: float, account: Account) -> dict[str, Any]:
    """The event envelope: ``source: aws.codepipeline``, ``detail.state`` in CAPITALS,
    ``account``, ``region`` and the pipeline's ARN as ``resources`` (as EventBridge rules
    written for AWS match them)."""
    detail: dict[str, Any] = {
        "pipeline": state.pipeline_name,
        "execution-id": state.execution_id,
        "version": state.pipeline_version,
        "state": emit.state.value,
    }
    if emit.level == "pipeline":
        detail["execution-trigger"] = {"trigger-type": state.trigger_type.value}
    if emit.stage:
        detail["stage"] = emit.stage
    if emit.action and emit.stage:
        detail["action"] = emit.action
        act = state.action(emit.stage, emit.action)
        ad = state.action_decl(emit.stage, emit.action)
        detail["type"] = {
            "owner": ad.action_type_id.owner,
            "provider": ad.action_type_id.provider,
            "category": ad.action_type_id.category.value,
            "version": ad.action_type_id.version,
        }
        if act is not None:
            detail["action-execution-id"] = act.action_execution_id
            if act.approved_by:
                # Conveyor's addition: who answered the approval (their ARN), as
                # lastUpdatedBy / updatedBy show it. AWS's events do not carry it.
                detail["updated-by"] = act.approved_by
            if act.result and act.result.error_message:
                detail["execution-result"] = {
                    "external-execution-summary": act.result.error_message,
                    "external-execution-state": emit.state.value,
                }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPES[emit.level],
        "source": "aws.codepipeline",
        "account": account.account_id,
        "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": account.region,
        "resources": [account.pipeline_arn(state.pipeline_name)],
        "detail": detail,
    }
