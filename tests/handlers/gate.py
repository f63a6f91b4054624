"""A LambdaInvoke rule's function: the gate is open when UserParameters says so."""

from __future__ import annotations

from typing import Any

import boto3


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    job = event["CodePipeline.job"]
    wanted = job["data"]["actionConfiguration"]["configuration"].get("UserParameters")
    codepipeline = boto3.client("codepipeline")
    if wanted == "open":
        codepipeline.put_job_success_result(
            jobId=job["id"], executionDetails={"summary": "the gate is open"}
        )
    else:
        codepipeline.put_job_failure_result(
            jobId=job["id"],
            failureDetails={"type": "JobFailed", "message": f"the gate is {wanted}"},
        )
