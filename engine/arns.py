"""ARNs Conveyor hands out, in one place (the API's metadata and the events' resources)."""

from __future__ import annotations

ARN_PREFIX = "arn:conveyor:codepipeline:local:000000000000:"


def pipeline_arn(name: str) -> str:
    return f"{ARN_PREFIX}{name}"
