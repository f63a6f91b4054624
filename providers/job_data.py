"""Parts of CodePipeline's ``JobData`` every job-API provider builds alike (Lambda-style
handlers, job workers)."""

from __future__ import annotations

from typing import Any

from providers.base import ArtifactObject

__all__ = ["artifact", "pipeline_context"]


def pipeline_context(
    pipeline: str,
    execution_id: str,
    stage: str,
    action: str,
    *,
    pipeline_arn: str | None,
    action_execution_id: str | None = None,
) -> dict[str, Any]:
    """CodePipeline's ``pipelineContext`` of a job (a rule's name stands in its action's)."""
    action_context = {"name": action}
    if action_execution_id:
        action_context["actionExecutionId"] = action_execution_id
    context: dict[str, Any] = {
        "pipelineName": pipeline,
        "stage": {"name": stage},
        "action": action_context,
    }
    if pipeline_arn:
        context["pipelineArn"] = pipeline_arn
    context["pipelineExecutionId"] = execution_id
    return context


def artifact(name: str, obj: ArtifactObject, revision: str | None = None) -> dict[str, Any]:
    """An input or output artifact of a job, as an S3 location in the artifact store."""
    out: dict[str, Any] = {
        "name": name,
        "location": {"type": "S3", "s3Location": {"bucketName": obj.bucket, "objectKey": obj.key}},
    }
    if revision or obj.revision:
        out["revision"] = revision or obj.revision
    return out
