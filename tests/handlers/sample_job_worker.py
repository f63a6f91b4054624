"""A job worker for a custom action, written the way AWS's sample job worker is written:
poll for jobs of the action type, acknowledge one with its nonce, fetch the input artifact
with the job's own artifact credentials, do the work, and report it — first with a
continuation token (the work goes on), then, when CodePipeline hands the job back with that
token, with the final result and output variables. Nothing in it is specific to Conveyor:
the endpoints come from the environment, as for any boto3 program
(``AWS_ENDPOINT_URL_CODEPIPELINE``, ``AWS_ENDPOINT_URL_S3``).
"""
# Kept in the sample's style on purpose (plain dicts, prints); typed only for mypy.

import io
import json
import os
import zipfile
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

# Uploads larger than this go up in parts (CreateMultipartUpload, UploadPart...).
MULTIPART = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024**2)


def artifact_s3_client(job_data: Any) -> Any:
    """An S3 client with the credentials CodePipeline handed this job (and only this job)."""
    creds = job_data["artifactCredentials"]
    return boto3.client(
        "s3",
        aws_access_key_id=creds["accessKeyId"],
        aws_secret_access_key=creds["secretAccessKey"],
        aws_session_token=creds["sessionToken"],
    )


def location(artifact: Any) -> tuple[str, str]:
    s3 = artifact["location"]["s3Location"]
    return str(s3["bucketName"]), str(s3["objectKey"])


def read_input(s3: Any, job_data: Any) -> dict[str, str]:
    bucket, key = location(job_data["inputArtifacts"][0])
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def write_output(s3: Any, job_data: Any, files: dict[str, str], padding: int = 0) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        if padding:
            archive.writestr("padding.bin", os.urandom(padding))
    buf.seek(0)
    bucket, key = location(job_data["outputArtifacts"][0])
    s3.upload_fileobj(buf, bucket, key, Config=MULTIPART)


def process(codepipeline: Any, job: Any, padding: int = 0) -> str:
    """One job: the first call starts the work, the continued one finishes it."""
    job_id, data = job["id"], job["data"]
    project = data["actionConfiguration"]["configuration"]["ProjectName"]
    s3 = artifact_s3_client(data)
    if "continuationToken" not in data:
        sources = read_input(s3, data)
        print(f"Job {job_id}: building {project} from {sorted(sources)}")
        token = json.dumps({"version": sources.get("version.txt", "").strip()})
        codepipeline.put_job_success_result(
            jobId=job_id,
            continuationToken=token,
            executionDetails={
                "summary": f"building {project}",
                "externalExecutionId": f"{project}-build",
                "percentComplete": 50,
            },
        )
        return "continued"
    state = json.loads(data["continuationToken"])
    write_output(s3, data, {"built.txt": f"{project} {state['version']}\n"}, padding)
    codepipeline.put_job_success_result(
        jobId=job_id,
        executionDetails={
            "summary": f"built {project} {state['version']}",
            "externalExecutionId": f"{project}-build",
            "percentComplete": 100,
        },
        outputVariables={"Version": state["version"], "Project": project},
    )
    return "finished"


def poll_once(
    codepipeline: Any, action_type_id: Any, project: str, handle: Any = process
) -> list[tuple[Any, str]]:
    """Poll, acknowledge and process what came; the jobs handled."""
    response = codepipeline.poll_for_jobs(
        actionTypeId=action_type_id, maxBatchSize=1, queryParam={"ProjectName": project}
    )
    done = []
    for job in response["jobs"]:
        ack = codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
        if ack["status"] != "InProgress":
            continue
        try:
            done.append((job, handle(codepipeline, job)))
        except Exception as exc:  # as the sample does: tell CodePipeline, go on polling
            codepipeline.put_job_failure_result(
                jobId=job["id"], failureDetails={"type": "JobFailed", "message": str(exc)}
            )
    return done
