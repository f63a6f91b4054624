"""ARNs Conveyor hands out, in one place (the API's metadata and the events' resources)."""

from __future__ import annotations

ARN_PREFIX = "arn:aws:codepipeline:us-east-1:123456789012:"
WEBHOOK_RESOURCE = "webhook:"


def pipeline_arn(name: str) -> str:
    return f"{ARN_PREFIX}{name}"


def webhook_arn(name: str) -> str:
    """``arn:aws:codepipeline:<region>:<account>:webhook:<name>``, as AWS shapes them."""
    return pipeline_arn(f"{WEBHOOK_RESOURCE}{name}")


def resource_of(arn: str) -> str | None:
    """The resource part of a CodePipeline ARN (``<name>``, ``webhook:<name>``,
    ``actiontype:...``), or None if ``arn`` is not shaped like one."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "codepipeline" or not parts[5]:
        return None
    return parts[5]
