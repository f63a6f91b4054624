"""The CodeBuild rule of a stage condition runs the buildspec runner on a real build worker
(AWS's CodeBuild rule: the condition is met when the build succeeds); rule types AWS
documents that cannot run here are refused at CreatePipeline."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.api_support import definition
from tests.stack import Stack, action, put_source, s3_source_stage, start_stack, unique, wait_status

BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - echo "gate is $GATE"
      - test "$GATE" != closed
      - test -f READY
"""


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str]) -> Stack:
    return start_stack(spawn, settings_env)


def typed(provider: str) -> dict[str, str]:
    return {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"}


def _pipeline(name: str, src: str, gate: str) -> dict[str, Any]:
    rule = {
        "name": "Verify",
        "ruleTypeId": typed("CodeBuild"),
        "inputArtifacts": [{"name": "SourceOutput"}],
        "configuration": {
            "ProjectName": "verify",
            "EnvironmentVariables": f'[{{"name": "GATE", "value": "{gate}"}}]',
        },
    }
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            s3_source_stage(src),
            {
                "name": "Release",
                "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [rule]}]},
                "actions": [
                    action(
                        "Build",
                        "Build",
                        "CodeBuild",
                        config={"ProjectName": "p"},
                        ins=("SourceOutput",),
                    )
                ],
            },
        ],
    }


@pytest.mark.parametrize(("gate", "expected"), [("open", "Succeeded"), ("closed", "Failed")])
def test_codebuild_rule_gates_stage_entry_by_its_build(
    stack: Stack, gate: str, expected: str
) -> None:
    name, src = unique("cbrule"), unique("src")
    put_source(stack.s3(), src, {"buildspec.yml": BUILDSPEC, "READY": "yes\n"})
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=_pipeline(name, src, gate))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=120) == expected
    [verify] = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "ruleExecutionDetails"
    ]
    assert (verify["ruleName"], verify["status"]) == ("Verify", expected)
    assert verify["input"]["ruleTypeId"]["provider"] == "CodeBuild"
    summary = verify["output"]["executionResult"]["externalExecutionSummary"]
    actions = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    ran = any(a["stageName"] == "Release" for a in actions)
    assert ran == (expected == "Succeeded")
    if expected == "Failed":
        assert "failed in phase BUILD" in summary, summary
        status = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)[
            "pipelineExecution"
        ].get("statusSummary", "")
        assert "entry condition not met" in status and "Verify" in status, status


def test_a_rule_type_not_runnable_here_is_refused_at_create_pipeline(cp: Any) -> None:
    decl = definition("alarmed")
    decl["stages"][1]["beforeEntry"] = {
        "conditions": [
            {
                "result": "FAIL",
                "rules": [
                    {
                        "name": "NoAlarm",
                        "ruleTypeId": typed("CloudWatchAlarm"),
                        "configuration": {"AlarmName": "errors"},
                    }
                ],
            }
        ]
    }
    with pytest.raises(ClientError) as info:
        cp.create_pipeline(pipeline=decl)
    message = info.value.response["Error"]["Message"]
    assert "CloudWatchAlarm/1 is not supported by this installation" in message, message
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert cp.list_pipelines()["pipelines"] == []
    types = {t["id"]["provider"]: t for t in cp.list_rule_types()["ruleTypes"]}
    assert "CloudWatchAlarm" in types and "CodeBuild" in types
