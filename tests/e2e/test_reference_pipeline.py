"""The reference pipeline end to end through the HTTP API with boto3's codepipeline client."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import (
    Stack,
    action,
    approval_token,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
)

BUILDSPEC = """\
version: 0.2
env:
  variables:
    GREETING: hello
phases:
  build:
    commands:
      - mkdir -p dist
      - echo "$GREETING from $(cat VERSION)" > dist/index.html
      - cp VERSION dist/
artifacts:
  base-directory: dist
  files:
    - '**/*'
"""


def reference_pipeline(
    name: str, src: str, staging: str, prod: str, artifacts: str
) -> dict[str, Any]:
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": artifacts},
        "stages": [
            s3_source_stage(src),
            {
                "name": "Build",
                "actions": [
                    action(
                        "Build",
                        "Build",
                        "CodeBuild",
                        config={"ProjectName": "demo"},
                        ins=("SourceOutput",),
                        outs=("BuildOutput",),
                    )
                ],
            },
            {
                "name": "DeployStaging",
                "actions": [
                    action(
                        "Deploy",
                        "Deploy",
                        "S3",
                        config={"BucketName": staging, "Extract": "true"},
                        ins=("BuildOutput",),
                    )
                ],
            },
            {
                "name": "Approve",
                "actions": [
                    action(
                        "ApproveProduction",
                        "Approval",
                        "Manual",
                        config={
                            "CustomData": "Review staging",
                            "ExternalEntityLink": "https://example.com",
                        },
                    )
                ],
            },
            {
                "name": "DeployProduction",
                "actions": [
                    action(
                        "Deploy",
                        "Deploy",
                        "S3",
                        config={"BucketName": prod, "Extract": "true"},
                        ins=("BuildOutput",),
                    )
                ],
            },
        ],
    }


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str]) -> Stack:
    return start_stack(spawn, settings_env)


def _setup(stack: Stack) -> tuple[str, str, str, str]:
    s3 = stack.s3()
    name, src, staging, prod = unique("ref"), unique("src"), unique("staging"), unique("prod")
    for b in (staging, prod):
        s3.create_bucket(Bucket=b)
    put_source(s3, src, {"buildspec.yml": BUILDSPEC, "VERSION": "1.2.3"})
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=reference_pipeline(name, src, staging, prod, unique("artifacts")))
    return name, src, staging, prod


def test_reference_pipeline_succeeds_through_boto3(stack: Stack) -> None:
    name, _, staging, prod = _setup(stack)
    cp, s3 = stack.codepipeline(), stack.s3()
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    token = approval_token(cp, name, "Approve", "ApproveProduction", timeout=90)
    # Staging is deployed before the gate; production is not.
    assert s3.get_object(Bucket=staging, Key="index.html")["Body"].read() == b"hello from 1.2.3\n"
    assert s3.list_objects_v2(Bucket=prod).get("KeyCount", 0) == 0
    cp.put_approval_result(
        pipelineName=name,
        stageName="Approve",
        actionName="ApproveProduction",
        result={"summary": "ship it", "status": "Approved"},
        token=token,
    )
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"
    assert s3.get_object(Bucket=prod, Key="index.html")["Body"].read() == b"hello from 1.2.3\n"
    assert s3.get_object(Bucket=prod, Key="VERSION")["Body"].read() == b"1.2.3"

    details = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    seen = {(d["stageName"], d["actionName"]): d for d in details}
    assert set(seen) == {
        ("Source", "Fetch"),
        ("Build", "Build"),
        ("DeployStaging", "Deploy"),
        ("Approve", "ApproveProduction"),
        ("DeployProduction", "Deploy"),
    }
    assert all(d["status"] == "Succeeded" for d in details)
    build = seen[("Build", "Build")]
    [inp] = build["input"]["inputArtifacts"]
    [out] = build["output"]["outputArtifacts"]
    assert inp["name"] == "SourceOutput" and out["name"] == "BuildOutput"
    for loc in (inp["s3location"], out["s3location"]):
        s3.head_object(Bucket=loc["bucket"], Key=loc["key"])  # the object exists
    [deploy_in] = seen[("DeployProduction", "Deploy")]["input"]["inputArtifacts"]
    assert deploy_in["s3location"] == out["s3location"]


def test_rejected_approval_fails_and_nothing_reaches_production(stack: Stack) -> None:
    name, _, _, prod = _setup(stack)
    cp, s3 = stack.codepipeline(), stack.s3()
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    token = approval_token(cp, name, "Approve", "ApproveProduction", timeout=90)
    cp.put_approval_result(
        pipelineName=name,
        stageName="Approve",
        actionName="ApproveProduction",
        result={"summary": "not today", "status": "Rejected"},
        token=token,
    )
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=60) == "Failed"
    assert s3.list_objects_v2(Bucket=prod).get("KeyCount", 0) == 0
    with pytest.raises(cp.exceptions.ApprovalAlreadyCompletedException):
        cp.put_approval_result(
            pipelineName=name,
            stageName="Approve",
            actionName="ApproveProduction",
            result={"summary": "changed my mind", "status": "Approved"},
            token=token,
        )
