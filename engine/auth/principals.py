"""Principals, their access keys and their roles; which operations each role may call.

Roles are sets of operations, not a ladder: an approver may approve but not start, a
job worker may answer jobs and nothing else. A principal holds any number of roles and may
call the union of what they allow. ``admin`` may call everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    JOB_WORKER = "job-worker"
    ADMIN = "admin"


READ_OPERATIONS = frozenset(
    {
        "GetPipeline",
        "GetPipelineState",
        "GetPipelineExecution",
        "ListPipelines",
        "ListPipelineExecutions",
        "ListActionExecutions",
        "ListRuleExecutions",
        "ListRuleTypes",
        "ListActionTypes",
        "GetActionType",
        "ListTagsForResource",
        "ListWebhooks",
        "ListDeployActionExecutionTargets",
    }
)
OPERATE_OPERATIONS = frozenset(
    {
        "StartPipelineExecution",
        "StopPipelineExecution",
        "RetryStageExecution",
        "RollbackStage",
        "DisableStageTransition",
        "EnableStageTransition",
        "OverrideStageCondition",
        "PutActionRevision",
    }
)
APPROVE_OPERATIONS = frozenset({"PutApprovalResult"})
JOB_OPERATIONS = frozenset(
    {
        "PollForJobs",
        "AcknowledgeJob",
        "GetJobDetails",
        "PutJobSuccessResult",
        "PutJobFailureResult",
        "PollForThirdPartyJobs",
        "AcknowledgeThirdPartyJob",
        "GetThirdPartyJobDetails",
        "PutThirdPartyJobSuccessResult",
        "PutThirdPartyJobFailureResult",
    }
)

# What each role allows besides admin's everything. Viewers' reads come with operating and
# approving: nobody starts or approves what they cannot see.
ROLE_OPERATIONS: dict[Role, frozenset[str]] = {
    Role.VIEWER: READ_OPERATIONS,
    Role.OPERATOR: READ_OPERATIONS | OPERATE_OPERATIONS,
    Role.APPROVER: READ_OPERATIONS | APPROVE_OPERATIONS,
    Role.JOB_WORKER: JOB_OPERATIONS,
}


@dataclass(frozen=True)
class Principal:
    """Someone (a person, a CI system, a job worker) who signs requests."""

    name: str
    roles: frozenset[Role] = field(default_factory=frozenset)

    def may_call(self, operation: str) -> bool:
        if Role.ADMIN in self.roles:
            return True
        return any(operation in ROLE_OPERATIONS[r] for r in self.roles)


# Who a request is when anonymous access is switched on (local development only).
ANONYMOUS = Principal("anonymous", frozenset({Role.ADMIN}))
