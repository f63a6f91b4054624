"""Handlers that end badly in each way a function can: it reports a failure, it raises, it
returns without reporting, or it reports output variables along with a continuation token
(which the API refuses, so it then reports the refusal as its failure)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import botocore.exceptions


def fails(event: dict[str, Any], context: Any) -> None:
    boto3.client("codepipeline").put_job_failure_result(
        jobId=event["CodePipeline.job"]["id"],
        failureDetails={
            "type": "ConfigurationError",
            "message": "migration refused: schema version 7 is newer than the code",
            "externalExecutionId": "migration-42",
        },
    )


def raises(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError(f"disk on fire ({context.function_name})")


def silent(event: dict[str, Any], context: Any) -> None:
    print(f"forgot to report; {context.get_remaining_time_in_millis()} ms left")


def variables_too_early(event: dict[str, Any], context: Any) -> None:
    job_id = event["CodePipeline.job"]["id"]
    codepipeline = boto3.client("codepipeline")
    try:
        codepipeline.put_job_success_result(
            jobId=job_id, continuationToken="more", outputVariables={"A": "1"}
        )
    except botocore.exceptions.ClientError as exc:
        error = exc.response["Error"]
        codepipeline.put_job_failure_result(
            jobId=job_id,
            failureDetails={"type": "JobFailed", "message": json.dumps(error)},
        )


def lingers(event: dict[str, Any], context: Any) -> None:
    """Starts a child that would outlive it, records both pids, and never answers."""
    import os
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "300"])
    pids = event["CodePipeline.job"]["data"]["actionConfiguration"]["configuration"]
    with open(pids["UserParameters"], "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    time.sleep(300)


def forgets_output(event: dict[str, Any], context: Any) -> None:
    """Reports success without uploading the output artifact it was given a location for."""
    boto3.client("codepipeline").put_job_success_result(jobId=event["CodePipeline.job"]["id"])
