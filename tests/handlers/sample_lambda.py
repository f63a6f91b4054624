"""A handler written the way AWS's documented sample for CodePipeline's Lambda invoke action
is written: the same boto3 calls, event fields and continuation-token pattern, with nothing
changed for Conveyor. Where the sample creates or updates a CloudFormation stack from a
template in an input artifact, this one only checks that the template parses, then asks to
be called again once, as the sample does while it waits for the stack.

UserParameters is JSON: {"stack": ..., "artifact": <input artifact name>, "file": <path in
the artifact's zip>}.
"""
# mypy: ignore-errors
# Kept in the sample's own style on purpose (module-level clients, prints, bare Exceptions).

import json
import tempfile
import traceback
import zipfile

import boto3
import botocore
from boto3.session import Session

print("Loading function")

code_pipeline = boto3.client("codepipeline")


def find_artifact(artifacts, name):
    """The artifact called ``name`` among those the job lists."""
    for artifact in artifacts:
        if artifact["name"] == name:
            return artifact
    raise Exception(f'Input artifact named "{name}" not found in event')


def get_template(s3, artifact, file_in_zip):
    """Download the artifact's zip from the artifact store and read one file out of it."""
    bucket = artifact["location"]["s3Location"]["bucketName"]
    key = artifact["location"]["s3Location"]["objectKey"]
    with tempfile.NamedTemporaryFile() as tmp_file:
        s3.download_file(bucket, key, tmp_file.name)
        with zipfile.ZipFile(tmp_file.name, "r") as archive:
            return archive.read(file_in_zip)


def put_job_success(job, message):
    print("Putting job success")
    print(message)
    code_pipeline.put_job_success_result(jobId=job)


def put_job_failure(job, message):
    print("Putting job failure")
    print(message)
    code_pipeline.put_job_failure_result(
        jobId=job, failureDetails={"message": message, "type": "JobFailed"}
    )


def continue_job_later(job, message):
    """Succeed this job with a continuation token, so the pipeline calls us again."""
    continuation_token = json.dumps({"previous_job_id": job})
    print("Putting job continuation")
    print(message)
    code_pipeline.put_job_success_result(jobId=job, continuationToken=continuation_token)


def get_user_params(job_data):
    try:
        user_parameters = job_data["actionConfiguration"]["configuration"]["UserParameters"]
        decoded_parameters = json.loads(user_parameters)
    except Exception:
        raise Exception("UserParameters could not be decoded as JSON") from None
    for required in ("stack", "artifact", "file"):
        if required not in decoded_parameters:
            raise Exception(f"Your UserParameters JSON must include the {required} name")
    return decoded_parameters


def setup_s3_client(job_data):
    """An S3 client with the credentials the job carries for the artifact store."""
    key_id = job_data["artifactCredentials"]["accessKeyId"]
    key_secret = job_data["artifactCredentials"]["secretAccessKey"]
    session_token = job_data["artifactCredentials"]["sessionToken"]
    session = Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=key_secret,
        aws_session_token=session_token,
    )
    return session.client("s3", config=botocore.client.Config(signature_version="s3v4"))


def lambda_handler(event, context):
    try:
        job_id = event["CodePipeline.job"]["id"]
        job_data = event["CodePipeline.job"]["data"]
        params = get_user_params(job_data)
        artifacts = job_data["inputArtifacts"]
        if "continuationToken" in job_data:
            # Called again: the work started on the first call is done by now.
            put_job_success(job_id, "Stack update complete")
        else:
            artifact_data = find_artifact(artifacts, params["artifact"])
            s3 = setup_s3_client(job_data)
            template = get_template(s3, artifact_data, params["file"])
            json.loads(template)
            continue_job_later(job_id, f"Stack create started for {params['stack']}")
    except Exception as e:
        print("Function failed due to exception.")
        print(e)
        traceback.print_exc()
        put_job_failure(job_id, "Function exception: " + str(e))
    print("Function complete.")
    return "Complete."
