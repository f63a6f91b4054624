"""The Commands rule of a stage condition runs on a real build worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import Stack, action, put_source, s3_source_stage, start_stack, unique, wait_status


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str]) -> Stack:
    return start_stack(spawn, settings_env)


def _pipeline(name: str, src: str, commands: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            s3_source_stage(src),
            {
                "name": "Release",
                "beforeEntry": {
                    "conditions": [
                        {
                            "result": "FAIL",
                            "rules": [
                                {
                                    "name": "Smoke",
                                    "ruleTypeId": {
                                        "category": "Rule",
                                        "owner": "AWS",
                                        "provider": "Commands",
                                        "version": "1",
                                    },
                                    "inputArtifacts": [{"name": "SourceOutput"}],
                                    "commands": commands,
                                }
                            ],
                        }
                    ]
                },
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


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (["test -f READY", "grep -q yes READY"], "Succeeded"),
        (["test -f MISSING"], "Failed"),
    ],
)
def test_commands_rule_gates_stage_entry(stack: Stack, commands: list[str], expected: str) -> None:
    name, src = unique("cmd"), unique("src")
    buildspec = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo built\n"
    put_source(stack.s3(), src, {"buildspec.yml": buildspec, "READY": "yes\n"})
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=_pipeline(name, src, commands))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == expected
    rules = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "ruleExecutionDetails"
    ]
    [smoke] = [r for r in rules if r["ruleName"] == "Smoke"]
    assert smoke["status"] == expected
    actions = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    ran = any(a["stageName"] == "Release" for a in actions)
    assert ran == (expected == "Succeeded")
    if expected == "Failed":
        summary = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)[
            "pipelineExecution"
        ].get("statusSummary", "")
        assert "MISSING" in summary
