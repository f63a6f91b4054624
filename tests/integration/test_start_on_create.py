"""CreatePipeline starts the first execution on a real stack (CONVEYOR_START_ON_CREATE on,
as the product ships), and that execution runs to the end on real workers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import (
    ROLE_ARN,
    action,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
)

pytestmark = pytest.mark.integration


def test_create_pipeline_starts_and_finishes_the_first_execution(
    spawn: Any, settings_env: dict[str, str]
) -> None:
    stack = start_stack(spawn, settings_env, env={"CONVEYOR_START_ON_CREATE": "true"})
    s3 = stack.s3()
    name, src, target = unique("onc"), unique("src"), unique("site")
    put_source(s3, src, {"index.html": "<h1>first</h1>"})
    s3.create_bucket(Bucket=target)
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    deploy = action(
        "Deploy",
        "Deploy",
        "S3",
        config={"BucketName": target, "Extract": "true"},
        ins=("SourceOutput",),
    )
    cp = stack.codepipeline()
    cp.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": ROLE_ARN,
            "artifactStore": {"type": "S3", "location": unique("artifacts")},
            "stages": [source, {"name": "Deploy", "actions": [deploy]}],
        }
    )
    # Right after CreatePipeline answers, with no StartPipelineExecution.
    (summary,) = cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
    assert summary["trigger"]["triggerType"] == "CreatePipeline"
    eid = summary["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, 60) == "Succeeded"
    body = s3.get_object(Bucket=target, Key="index.html")["Body"].read()
    assert body == b"<h1>first</h1>"
    assert len(cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]) == 1
