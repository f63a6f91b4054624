"""Invoke/AWS/Lambda on real workers: handlers run in their own processes and answer through
the real HTTP API with boto3's codepipeline client, reading and writing artifacts in S3."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
import redis

from tests.conftest import REPO_ROOT
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

FUNCTIONS = {
    "sample": "tests.handlers.sample_lambda:lambda_handler",
    "continuing": "tests.handlers.continuing:lambda_handler",
    "fails": "tests.handlers.misbehaving:fails",
    "raises": "tests.handlers.misbehaving:raises",
    "silent": "tests.handlers.misbehaving:silent",
    "variables-too-early": "tests.handlers.misbehaving:variables_too_early",
    "gate": "tests.handlers.gate:lambda_handler",
    "forgets-output": "tests.handlers.misbehaving:forgets_output",
}
LAMBDA_ENV = {
    "CONVEYOR_LAMBDA_FUNCTIONS": json.dumps(FUNCTIONS),
    "CONVEYOR_LAMBDA_PATH": str(REPO_ROOT),
}
SAMPLE_PARAMS = json.dumps({"stack": "web", "artifact": "SourceOutput", "file": "template.json"})
# A "minute" of action timeouts, so the silent handler's 5-minute action times out in 5 s.
MINUTE_SECONDS = 1.0


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str]) -> Stack:
    return start_stack(
        spawn,
        settings_env,
        worker_env=LAMBDA_ENV,
        env={"CONVEYOR_MINUTE_SECONDS": str(MINUTE_SECONDS)},
    )


def _lambda(name: str, function: str, **kwargs: Any) -> dict[str, Any]:
    user_parameters = kwargs.pop("user_parameters", None)
    namespace = kwargs.pop("namespace", None)
    a = action(name, "Invoke", "Lambda", config={"FunctionName": function}, **kwargs)
    if user_parameters is not None:
        a["configuration"]["UserParameters"] = user_parameters
    if namespace is not None:
        a["namespace"] = namespace
    return a


def _pipeline(name: str, src: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [source, *stages],
    }


def _actions(cp: Any, name: str, eid: str) -> dict[str, dict[str, Any]]:
    details = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
    return {a["actionName"]: a for a in details["actionExecutionDetails"]}


def test_lambda_actions_run_end_to_end(stack: Stack, redis_client: redis.Redis) -> None:
    name, src, target = unique("lambda"), unique("src"), unique("target")
    s3 = stack.s3()
    put_source(s3, src, {"version.txt": "1.4.2\n", "template.json": '{"Resources": {}}'})
    s3.create_bucket(Bucket=target)
    invoke = {
        "name": "Invoke",
        "actions": [
            _lambda("Sample", "sample", ins=("SourceOutput",), user_parameters=SAMPLE_PARAMS),
            _lambda(
                "Release",
                "continuing",
                ins=("SourceOutput",),
                outs=("ReleaseOutput",),
                namespace="ReleaseVars",
            ),
        ],
    }
    deploy = {
        "name": "Deploy",
        "actions": [
            action(
                "Publish",
                "Deploy",
                "S3",
                config={
                    "BucketName": target,
                    "Extract": "false",
                    "ObjectKey": "release-#{ReleaseVars.Version}-#{ReleaseVars.Calls}.zip",
                },
                ins=("ReleaseOutput",),
            )
        ],
    }
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=_pipeline(name, src, [invoke, deploy]))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=120) == "Succeeded"
    actions = _actions(cp, name, eid)
    release = actions["Release"]
    assert release["status"] == "Succeeded"
    result = release["output"]["executionResult"]
    # Three calls: two continuation tokens, then success with the output variables.
    assert result["externalExecutionSummary"] == "released 1.4.2 after 3 calls"
    assert result["externalExecutionId"] == "release-1.4.2"
    assert release["output"]["outputVariables"] == {"Version": "1.4.2", "Calls": "3"}
    assert actions["Sample"]["status"] == "Succeeded"
    # The function's log (its own output between Lambda-style START/END lines) is the
    # action's log, and the event, which carries the store's keys, is not in it.
    bucket, key = result["externalExecutionUrl"].removeprefix("s3://").split("/", 1)
    function_log = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert function_log.count("START RequestId: ") == 3
    assert "Continuing after call 1: call 1 (30% complete)" in function_log
    assert stack.env["CONVEYOR_S3_SECRET_ACCESS_KEY"] not in function_log
    # The variables reached the deploy's configuration, and the artifact the function wrote
    # itself is what the deploy published.
    published = actions["Publish"]["input"]["resolvedConfiguration"]["ObjectKey"]
    assert published == "release-1.4.2-3.zip"
    body = s3.get_object(Bucket=target, Key=published)["Body"].read()
    assert zipfile.ZipFile(io.BytesIO(body)).read("release.txt") == b"release 1.4.2 after 3 calls\n"
    # One job per call, each answered once: 3 for Release, 2 for Sample (one continuation).
    statuses = [
        str(redis_client.hget(key, "status"))
        for key in redis_client.scan_iter("conveyor:job:*")
        if not key.endswith(":done")
    ]
    assert sorted(statuses) == ["Succeeded"] * 5


def test_lambda_failures_name_their_cause(stack: Stack) -> None:
    src = unique("src")
    put_source(stack.s3(), src, {"version.txt": "1\n"})
    cp = stack.codepipeline()
    runs: dict[str, tuple[str, str]] = {}
    for function in ("fails", "raises", "silent", "variables-too-early", "forgets-output"):
        name = unique(function)
        outs = ("Out",) if function == "forgets-output" else ()
        stage = {"name": "Invoke", "actions": [_lambda("Call", function, timeout=5, outs=outs)]}
        cp.create_pipeline(pipeline=_pipeline(name, src, [stage]))
        runs[function] = (name, cp.start_pipeline_execution(name=name)["pipelineExecutionId"])

    errors: dict[str, dict[str, Any]] = {}
    for function, (name, eid) in runs.items():
        assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=60) == "Failed"
        call = _actions(cp, name, eid)["Call"]
        assert call["status"] == "Failed"
        errors[function] = call["output"]["executionResult"]

    fails = errors["fails"]
    assert fails["errorDetails"] == {
        "code": "ConfigurationError",
        "message": "migration refused: schema version 7 is newer than the code",
    }
    assert fails["externalExecutionId"] == "migration-42"
    assert errors["raises"]["errorDetails"]["message"] == (
        "function raises raised RuntimeError: disk on fire (raises)"
    )
    silent = errors["silent"]["errorDetails"]["message"]
    assert "never called PutJobSuccessResult or PutJobFailureResult" in silent
    forgot = errors["forgets-output"]["errorDetails"]["message"]
    assert forgot.startswith("output artifact Out was not written: the function must upload it")
    refused = json.loads(errors["variables-too-early"]["errorDetails"]["message"])
    assert refused["Code"] == "ValidationException"
    assert (
        "outputVariables can be included only when there is no continuation token"
        in (refused["Message"])
    )


def _gated(name: str, src: str, gate: str) -> dict[str, Any]:
    """Source, then a stage whose beforeEntry condition is a LambdaInvoke rule."""
    rule = {
        "name": "Gate",
        "ruleTypeId": {
            "category": "Rule",
            "owner": "AWS",
            "provider": "LambdaInvoke",
            "version": "1",
        },
        "configuration": {"FunctionName": "gate", "UserParameters": gate},
        "inputArtifacts": [{"name": "SourceOutput"}],
    }
    release = {
        "name": "Release",
        "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [rule]}]},
        "actions": [
            _lambda("Sample", "sample", ins=("SourceOutput",), user_parameters=SAMPLE_PARAMS)
        ],
    }
    return _pipeline(name, src, [release])


def test_lambda_invoke_rule_gates_stage_entry(stack: Stack) -> None:
    src = unique("src")
    put_source(stack.s3(), src, {"template.json": "{}"})
    cp = stack.codepipeline()
    runs = {}
    for gate in ("open", "closed"):
        name = unique(f"gate-{gate}")
        cp.create_pipeline(pipeline=_gated(name, src, gate))
        runs[gate] = (name, cp.start_pipeline_execution(name=name)["pipelineExecutionId"])

    rules: dict[str, dict[str, Any]] = {}
    for gate, (name, eid) in runs.items():
        # Open: the rule passes and the stage runs; closed: the rule fails the stage.
        expected = "Succeeded" if gate == "open" else "Failed"
        assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=60) == expected
        details = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
        [rules[gate]] = details["ruleExecutionDetails"]
        ran = _actions(cp, name, eid).get("Sample")
        assert (ran is not None) == (gate == "open")
    assert rules["open"]["status"] == "Succeeded"
    assert rules["open"]["output"]["executionResult"]["externalExecutionSummary"] == (
        "the gate is open"
    )
    assert rules["closed"]["status"] == "Failed"
    assert rules["closed"]["output"]["executionResult"]["externalExecutionSummary"] == (
        "the gate is closed"
    )
