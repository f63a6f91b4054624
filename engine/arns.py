"""ARNs Conveyor hands out, in one place: the API's metadata, the events' ``resources``,
action types and webhooks.

They are shaped as CodePipeline's (``arn:aws:codepipeline:<region>:<account>:<resource>``)
because tools written against AWS parse them: split on ``:``, take the region or the
account, match a pattern in an EventBridge rule. The region and the account id are
settings (``CONVEYOR_REGION``, ``CONVEYOR_ACCOUNT_ID``); there is no real account behind them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.base import DEFAULT_ACCOUNT_ID

PARTITION = "aws"
SERVICE = "codepipeline"
__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_ACCOUNT_ID", "DEFAULT_REGION", "Account"]

DEFAULT_REGION = "us-east-1"
ACCOUNT_ID_RE = re.compile(r"^[0-9]{12}$")


@dataclass(frozen=True)
class Account:
    """The region and account id this installation answers as."""

    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID

    def __post_init__(self) -> None:
        if not ACCOUNT_ID_RE.match(self.account_id):
            raise ValueError(f"account id {self.account_id!r} must be 12 digits")
        if not self.region or ":" in self.region:
            raise ValueError(f"region {self.region!r} must be a non-empty name without ':'")

    def arn(self, resource: str) -> str:
        return f"arn:{PARTITION}:{SERVICE}:{self.region}:{self.account_id}:{resource}"

    def pipeline_arn(self, name: str) -> str:
        """``arn:aws:codepipeline:us-east-1:111122223333:MyPipeline``"""
        return self.arn(name)

    def action_type_arn(self, category: str, owner: str, provider: str, version: str) -> str:
        """``arn:aws:codepipeline:us-east-1:111122223333:actiontype:Custom/Build/P/1``"""
        return self.arn(f"actiontype:{owner}/{category}/{provider}/{version}")

    def webhook_arn(self, name: str) -> str:
        """``arn:aws:codepipeline:us-east-1:111122223333:webhook:MyWebhook``"""
        return self.arn(f"webhook:{name}")


DEFAULT_ACCOUNT = Account()

WEBHOOK_RESOURCE = "webhook:"


def resource_of(arn: str) -> str | None:
    """The resource part of a CodePipeline ARN (``<name>``, ``webhook:<name>``,
    ``actiontype:...``), or None if ``arn`` is not shaped like one."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != SERVICE or not parts[5]:
        return None
    return parts[5]
