"""Approval/AWS/Manual/1: declared here so definitions validate; decided by the engine.

An approval holds no worker: the engine parks the action with a token until someone
answers or it times out. The provider exists for its ``Config`` and artifact limits.
"""

from __future__ import annotations

from pydantic import Field

from providers.base import (
    ActionFailed,
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)


class ManualApprovalConfig(ProviderConfig):
    NotificationArn: str | None = None
    CustomData: str | None = Field(default=None, max_length=500)
    ExternalEntityLink: str | None = None


class ManualApproval(Provider):
    action_type = ActionTypeId(
        category=Category.APPROVAL, owner="AWS", provider="Manual", version="1"
    )
    Config = ManualApprovalConfig
    runs_on_worker = False
    # AWS: the account-level default for manual approval actions is 7 days.
    default_timeout_minutes = 7 * 24 * 60

    def run(self, job: Job) -> Result:
        raise ActionFailed(
            "Approval/AWS/Manual/1 is handled by the engine (it waits for an approval "
            "result), it never runs on a worker"
        )
