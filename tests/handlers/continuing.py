"""Asks to be called again twice, then succeeds on the third call: writes its output
artifact (a zip holding the version read from its input) and reports output variables.
Every call reads its own job back with GetJobDetails and fails if it is not the same job.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import boto3

CALLS_BEFORE_SUCCESS = 3


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    job = event["CodePipeline.job"]
    job_id, data = job["id"], job["data"]
    codepipeline = boto3.client("codepipeline")
    details = codepipeline.get_job_details(jobId=job_id)["jobDetails"]
    if details["id"] != job_id or details["data"].get("continuationToken") != data.get(
        "continuationToken"
    ):
        codepipeline.put_job_failure_result(
            jobId=job_id,
            failureDetails={"type": "JobFailed", "message": "GetJobDetails disagrees"},
        )
        return
    state = json.loads(data.get("continuationToken") or '{"calls": 0}')
    calls = state["calls"] + 1
    if calls < CALLS_BEFORE_SUCCESS:
        codepipeline.put_job_success_result(
            jobId=job_id,
            continuationToken=json.dumps({"calls": calls}),
            executionDetails={"summary": f"call {calls}", "percentComplete": 30 * calls},
        )
        return
    creds = data["artifactCredentials"]
    s3 = boto3.client(
        "s3",
        aws_access_key_id=creds["accessKeyId"],
        aws_secret_access_key=creds["secretAccessKey"],
        aws_session_token=creds["sessionToken"] or None,
    )
    source = data["inputArtifacts"][0]["location"]["s3Location"]
    body = s3.get_object(Bucket=source["bucketName"], Key=source["objectKey"])["Body"].read()
    version = zipfile.ZipFile(io.BytesIO(body)).read("version.txt").decode().strip()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("release.txt", f"release {version} after {calls} calls\n")
    target = data["outputArtifacts"][0]["location"]["s3Location"]
    s3.put_object(Bucket=target["bucketName"], Key=target["objectKey"], Body=out.getvalue())
    codepipeline.put_job_success_result(
        jobId=job_id,
        executionDetails={
            "summary": f"released {version} after {calls} calls",
            "externalExecutionId": f"release-{version}",
            "percentComplete": 100,
        },
        outputVariables={"Version": version, "Calls": str(calls)},
    )
