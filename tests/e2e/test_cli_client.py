"""``conveyor pipelines|executions|approvals`` against the in-process API server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from engine.execution import ActionResult, ArtifactLocation
from engine.messages import ActionCompleted
from tests.e2e.api_support import BUCKET, definition
from tests.e2e.conftest import ApiServer
from workers.cli_client import register


@pytest.fixture
def conveyor(api: ApiServer) -> click.Group:
    """A root group like the real ``conveyor`` command, with the client groups added."""
    root = click.Group("conveyor")
    register(root)
    return root


def run(root: click.Group, api: ApiServer, *args: str) -> Result:
    return CliRunner().invoke(root, ["--endpoint", api.url, *args], catch_exceptions=False)


def complete(api: ApiServer, eid: str, stage: str, action: str, *outputs: str) -> None:
    arts = [ArtifactLocation(name=o, bucket=BUCKET, key=f"demo/{o}/x.zip") for o in outputs]
    result = ActionResult(succeeded=True, output_artifacts=arts)
    event = ActionCompleted(
        now=time.time(), execution_id=eid, stage=stage, action=action, attempt=1, result=result
    )
    state = api.service.store.runs.load(eid)
    assert state is not None
    api.service.store.apply(state.pipeline_name, event)


def test_pipelines_create_list_get(api: ApiServer, conveyor: click.Group, tmp_path: Path) -> None:
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(definition("demo")))
    out = run(conveyor, api, "pipelines", "create", str(path))
    assert out.exit_code == 0, out.output
    assert "created pipeline demo (version 1)" in out.output

    # The same definition as a CloudFormation template (PascalCase) updates it.
    cfn = {
        "Resources": {
            "Pipeline": {
                "Type": "AWS::CodePipeline::Pipeline",
                "Properties": _pascal(definition("demo", approval=False)),
            }
        }
    }
    cfn_path = tmp_path / "demo.yaml"
    cfn_path.write_text(yaml.safe_dump(cfn))
    out = run(conveyor, api, "pipelines", "update", str(cfn_path))
    assert out.exit_code == 0, out.output
    assert "version 2" in out.output

    out = run(conveyor, api, "pipelines", "list")
    assert out.exit_code == 0, out.output
    assert "demo" in out.output

    out = run(conveyor, api, "pipelines", "list", "--json")
    assert [p["name"] for p in json.loads(out.output)] == ["demo"]

    out = run(conveyor, api, "pipelines", "get", "demo", "--version", "1")
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["pipeline"]["version"] == 1
    assert [s["name"] for s in got["pipeline"]["stages"]] == [
        "Source",
        "Build",
        "Approve",
        "Release",
    ]
    assert got["metadata"]["pipelineArn"].endswith(":demo")

    out = run(conveyor, api, "pipelines", "delete", "demo")
    assert out.exit_code == 0, out.output


def test_errors_are_one_line_without_traceback(
    api: ApiServer, conveyor: click.Group, tmp_path: Path
) -> None:
    out = run(conveyor, api, "pipelines", "get", "ghost")
    assert out.exit_code == 1
    assert out.stderr.startswith("error: PipelineNotFoundException: ")
    assert "Traceback" not in out.output

    bad = definition("bad")
    del bad["stages"][0]["actions"][0]["configuration"]["S3Bucket"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    out = run(conveyor, api, "pipelines", "create", str(path))
    assert out.exit_code == 1
    assert out.stderr.startswith("error: InvalidActionDeclarationException: ")
    assert "configuration.S3Bucket" in out.stderr


def test_executions_and_approvals(
    api: ApiServer, conveyor: click.Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.service.create_pipeline(definition("demo"))
    # The endpoint from the environment works as well as --endpoint.
    monkeypatch.setenv("CONVEYOR_API_URL", api.url)
    out = CliRunner().invoke(conveyor, ["executions", "start", "demo", "-v", "Env=prod"])
    assert out.exit_code == 0, out.output
    eid = out.output.strip()

    out = run(conveyor, api, "executions", "get", "demo", eid)
    assert out.exit_code == 0, out.output
    execution = json.loads(out.output)
    assert execution["status"] == "InProgress"
    assert execution["variables"] == [{"name": "Env", "resolvedValue": "prod"}]

    out = run(conveyor, api, "executions", "list", "demo")
    assert out.exit_code == 0, out.output
    assert eid in out.output
    assert "InProgress" in out.output

    out = run(conveyor, api, "approvals", "list", "demo")
    assert out.exit_code == 0, out.output
    assert "Gate" not in out.output

    complete(api, eid, "Source", "Fetch", "SourceOut")
    complete(api, eid, "Build", "Compile", "BuildOut")

    out = run(conveyor, api, "approvals", "list", "--json")
    assert out.exit_code == 0, out.output
    (pending,) = json.loads(out.output)
    assert (pending["pipeline"], pending["stage"], pending["action"]) == ("demo", "Approve", "Gate")
    assert pending["execution_id"] == eid
    assert pending["custom_data"] == "ship it?"

    out = run(conveyor, api, "executions", "watch", "demo", eid, "--until-approval")
    assert out.exit_code == 0, out.output
    assert "conveyor approvals approve demo Approve Gate" in out.output

    out = run(conveyor, api, "approvals", "approve", "demo", "Approve", "Gate", "--summary", "ok")
    assert out.exit_code == 0, out.output
    assert "approved demo/Approve/Gate" in out.output
    assert api.service.get_execution("demo", eid).stage("Release").status == "InProgress"  # type: ignore[union-attr]

    out = run(conveyor, api, "approvals", "reject", "demo", "Approve", "Gate")
    assert out.exit_code == 1
    assert "no approval is waiting at demo/Approve/Gate" in out.stderr

    complete(api, eid, "Release", "Publish")
    out = run(conveyor, api, "executions", "watch", "demo", eid, "--interval", "0.1")
    assert out.exit_code == 0, out.output
    assert "Succeeded" in out.output


def test_stop_and_watch_a_stopped_execution(api: ApiServer, conveyor: click.Group) -> None:
    api.service.create_pipeline(definition("demo"))
    eid = api.service.start_execution("demo").execution_id
    out = run(conveyor, api, "executions", "stop", "demo", eid, "--abandon", "--reason", "test")
    assert out.exit_code == 0, out.output
    out = run(conveyor, api, "executions", "watch", "demo", eid)
    assert out.exit_code == 1
    assert "Stopped" in out.output

    out = run(conveyor, api, "executions", "start", "demo", "--variable", "oops")
    assert out.exit_code == 2
    assert "NAME=VALUE" in out.output


def _pascal(node: object) -> object:
    """CodePipeline camelCase to CloudFormation PascalCase, keeping configuration keys."""
    if isinstance(node, list):
        return [_pascal(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {
        k[:1].upper() + k[1:]: (v if k == "configuration" else _pascal(v)) for k, v in node.items()
    }


def finish(api: ApiServer, eid: str, stage: str, action: str, *, succeeded: bool = True) -> None:
    """Complete an action's current attempt (retries raise it past 1)."""
    state = api.service.store.runs.load(eid)
    assert state is not None
    act = state.action(stage, action)
    assert act is not None
    result = ActionResult(
        succeeded=succeeded,
        output_artifacts=[
            ArtifactLocation(name=o.name, bucket=BUCKET, key=f"demo/{o.name}/{eid[:8]}.zip")
            for o in state.action_decl(stage, action).output_artifacts
        ],
        error_message=None if succeeded else "broken",
    )
    event = ActionCompleted(
        now=time.time(),
        execution_id=eid,
        stage=stage,
        action=action,
        attempt=act.attempt,
        result=result,
    )
    api.service.store.apply(state.pipeline_name, event)


def test_retry_rollback_and_idempotent_start(api: ApiServer, conveyor: click.Group) -> None:
    api.service.create_pipeline(definition("demo", approval=False))
    out = run(conveyor, api, "executions", "start", "demo", "--client-request-token", "tok-1")
    assert out.exit_code == 0, out.output
    eid = out.output.strip()
    out = run(conveyor, api, "executions", "start", "demo", "--client-request-token", "tok-1")
    assert out.output.strip() == eid

    finish(api, eid, "Source", "Fetch")
    finish(api, eid, "Build", "Compile", succeeded=False)
    out = run(conveyor, api, "executions", "retry", "demo", "Source", eid)
    assert out.exit_code == 1
    assert out.stderr.startswith("error: StageNotRetryableException: ")
    out = run(conveyor, api, "executions", "retry", "demo", "Build", eid, "--mode", "ALL_ACTIONS")
    assert out.exit_code == 0, out.output
    assert f"retrying Build of {eid} (ALL_ACTIONS)" in out.output
    finish(api, eid, "Build", "Compile")
    finish(api, eid, "Release", "Publish")
    assert api.service.get_execution("demo", eid).status == "Succeeded"

    out = run(conveyor, api, "stages", "rollback", "demo", "Release", "--target", eid)
    assert out.exit_code == 0, out.output
    rollback = out.output.strip()
    got = json.loads(run(conveyor, api, "executions", "get", "demo", rollback).output)
    assert got["executionType"] == "ROLLBACK"
    assert got["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": eid}
    out = run(conveyor, api, "stages", "rollback", "demo", "Source", "--target", eid)
    assert out.exit_code == 1
    assert out.stderr.startswith("error: UnableToRollbackStageException: ")


def test_transitions_and_watching_a_waiting_execution(
    api: ApiServer, conveyor: click.Group
) -> None:
    api.service.create_pipeline(definition("demo"))
    out = run(conveyor, api, "stages", "disable", "demo", "Source", "--outbound")
    assert out.exit_code == 2  # --reason is required
    out = run(
        conveyor, api, "stages", "disable", "demo", "Source", "--outbound", "--reason", "freeze"
    )
    assert out.exit_code == 0, out.output
    assert "disabled the outbound transition of demo/Source" in out.output
    eid = api.service.start_execution("demo").execution_id
    finish(api, eid, "Source", "Fetch")

    out = run(
        conveyor, api, "executions", "watch", "demo", eid, "--interval", "0.05", "--timeout", "0.2"
    )
    assert out.exit_code == 1
    assert "waiting at Build (transition disabled: freeze)" in out.output
    assert "still InProgress" in out.stderr

    out = run(conveyor, api, "stages", "enable", "demo", "Build")
    assert out.exit_code == 0, out.output
    assert "enabled the inbound transition of demo/Build" in out.output
    assert api.service.get_execution("demo", eid).stage("Build").status == "InProgress"  # type: ignore[union-attr]


def test_rules_commands_and_a_skipped_stage(api: ApiServer, conveyor: click.Group) -> None:
    out = run(conveyor, api, "rules", "types")
    assert out.exit_code == 0, out.output
    for provider in ("VariableCheck", "DeploymentWindow", "Commands", "LambdaInvoke", "CodeBuild"):
        assert provider in out.output
    out = run(conveyor, api, "rules", "types", "--json")
    assert {t["id"]["provider"] for t in json.loads(out.output)} == {
        "VariableCheck",
        "DeploymentWindow",
        "Commands",
        "LambdaInvoke",
        "CodeBuild",
        "CloudWatchAlarm",
    }

    decl = definition("demo", approval=False)
    check = {
        "name": "OnlyProd",
        "ruleTypeId": {"category": "Rule", "provider": "VariableCheck"},
        "configuration": {"Variable": "#{variables.Env}", "Value": "prod", "Operator": "EQ"},
    }
    decl["stages"][1]["beforeEntry"] = {"conditions": [{"result": "SKIP", "rules": [check]}]}
    api.service.create_pipeline(decl)
    eid = api.service.start_execution("demo").execution_id
    finish(api, eid, "Source", "Fetch")

    out = run(conveyor, api, "rules", "executions", "demo", eid, "--json")
    assert out.exit_code == 0, out.output
    (detail,) = json.loads(out.output)
    assert (detail["stageName"], detail["ruleName"], detail["status"]) == (
        "Build",
        "OnlyProd",
        "Failed",
    )
    out = run(conveyor, api, "rules", "executions", "demo")
    assert out.exit_code == 0, out.output
    assert "OnlyProd" in out.output

    out = run(
        conveyor, api, "stages", "override", "demo", "Build", eid, "--condition", "BEFORE_ENTRY"
    )
    assert out.exit_code == 1
    assert out.stderr.startswith("error: ConditionNotOverridableException: ")

    finish(api, eid, "Release", "Publish")
    out = run(conveyor, api, "executions", "watch", "demo", eid)
    assert out.exit_code == 0, out.output
    assert "Skipped" in out.output
