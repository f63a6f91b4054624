"""Invoke/AWS/CodePipeline on real workers: pipeline A starts pipeline B through the API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.stack import (
    ROLE_ARN,
    Stack,
    action,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
)

# B's build passes only when the pipeline variable Flag it was started with is "ok".
BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - echo "flag is $FLAG"
      - test "$FLAG" = ok
"""


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str]) -> Stack:
    # The invoke action holds a worker while B's actions need others.
    return start_stack(spawn, settings_env, workers={"providers": ("all", 3)})


def target_pipeline(name: str, src: str, artifacts: str) -> dict[str, Any]:
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    env = json.dumps([{"name": "FLAG", "value": "#{variables.Flag}", "type": "PLAINTEXT"}])
    build = action(
        "Check",
        "Build",
        "CodeBuild",
        config={"ProjectName": "check", "EnvironmentVariables": env},
        ins=("SourceOutput",),
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": artifacts},
        "variables": [{"name": "Flag", "defaultValue": "unset"}],
        "stages": [source, {"name": "Check", "actions": [build]}],
    }


def invoking_pipeline(
    name: str, src: str, artifacts: str, target: str, flag: str
) -> dict[str, Any]:
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    invoke = action(
        "StartTarget",
        "Invoke",
        "CodePipeline",
        config={
            "PipelineName": target,
            "Variables": json.dumps([{"name": "Flag", "value": flag}]),
        },
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": artifacts},
        "stages": [source, {"name": "Invoke", "actions": [invoke]}],
    }


def invoke_state(cp: Any, name: str) -> dict[str, Any]:
    state = cp.get_pipeline_state(name=name)
    stage = next(s for s in state["stageStates"] if s["stageName"] == "Invoke")
    latest: dict[str, Any] = stage["actionStates"][0]["latestExecution"]
    return latest


def test_a_invokes_b_with_variables_and_fails_when_b_fails(stack: Stack) -> None:
    cp, s3 = stack.codepipeline(), stack.s3()
    src = unique("src")
    put_source(s3, src, {"buildspec.yml": BUILDSPEC})
    b = unique("target")
    cp.create_pipeline(pipeline=target_pipeline(b, src, unique("art")))
    a_ok, a_bad = unique("invoker-ok"), unique("invoker-bad")
    cp.create_pipeline(pipeline=invoking_pipeline(a_ok, src, unique("art"), b, "ok"))
    cp.create_pipeline(pipeline=invoking_pipeline(a_bad, src, unique("art"), b, "broken"))

    # A succeeds with B, which ran with the variable A gave it.
    ok_id = cp.start_pipeline_execution(name=a_ok)["pipelineExecutionId"]
    assert wait_status(cp, a_ok, ok_id, {"Succeeded", "Failed"}, timeout=120) == "Succeeded"
    (b_run,) = cp.list_pipeline_executions(pipelineName=b)["pipelineExecutionSummaries"]
    b_id = b_run["pipelineExecutionId"]
    b_execution = cp.get_pipeline_execution(pipelineName=b, pipelineExecutionId=b_id)
    assert b_execution["pipelineExecution"]["status"] == "Succeeded"
    assert b_execution["pipelineExecution"]["variables"] == [
        {"name": "Flag", "resolvedValue": "ok"}
    ]
    latest = invoke_state(cp, a_ok)
    assert latest["externalExecutionId"] == b_id
    assert latest["summary"] == f"pipeline '{b}' execution {b_id} Succeeded"

    # B fails (its build refuses the flag), so A fails, naming B, its execution and status.
    bad_id = cp.start_pipeline_execution(name=a_bad)["pipelineExecutionId"]
    assert wait_status(cp, a_bad, bad_id, {"Succeeded", "Failed"}, timeout=120) == "Failed"
    runs = cp.list_pipeline_executions(pipelineName=b)["pipelineExecutionSummaries"]
    failed_b = next(r["pipelineExecutionId"] for r in runs if r["pipelineExecutionId"] != b_id)
    assert (
        cp.get_pipeline_execution(pipelineName=b, pipelineExecutionId=failed_b)[
            "pipelineExecution"
        ]["status"]
        == "Failed"
    )
    message = invoke_state(cp, a_bad)["errorDetails"]["message"]
    assert message.startswith(f"pipeline '{b}' execution {failed_b} Failed")


def test_stopping_a_stops_b(stack: Stack) -> None:
    cp, s3 = stack.codepipeline(), stack.s3()
    src = unique("src")
    slow = BUILDSPEC.replace('      - echo "flag is $FLAG"\n', "      - sleep 8\n")
    put_source(s3, src, {"buildspec.yml": slow})
    b, a = unique("target"), unique("invoker")
    cp.create_pipeline(pipeline=target_pipeline(b, src, unique("art")))
    cp.create_pipeline(pipeline=invoking_pipeline(a, src, unique("art"), b, "ok"))
    a_id = cp.start_pipeline_execution(name=a)["pipelineExecutionId"]

    def b_building() -> str | None:
        for run in cp.list_pipeline_executions(pipelineName=b)["pipelineExecutionSummaries"]:
            state = cp.get_pipeline_state(name=b)
            check = next(s for s in state["stageStates"] if s["stageName"] == "Check")
            if check.get("latestExecution", {}).get("status") == "InProgress":
                return str(run["pipelineExecutionId"])
        return None

    b_id = wait_for(b_building, timeout=60, interval=0.3, message="B never reached its build")
    cp.stop_pipeline_execution(pipelineName=a, pipelineExecutionId=a_id, abandon=True)
    # Abandoning A cancels its invoke action, which stops B (stop and wait: B's build ends).
    assert wait_status(cp, b, b_id, {"Stopped", "Failed", "Succeeded"}, timeout=90) == "Stopped"
