"""Execution control through boto3: stage retries, transitions, rollbacks, stage conditions,
idempotent starts and the concurrency limit; every response checked against botocore's model.

No workers run: actions finish by applying ``ActionCompleted`` through the store, as a
worker's completion callback would.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.client import ConveyorClient
from engine.execution import ActionResult, ArtifactLocation
from engine.messages import ActionCompleted, RuleCompleted
from engine.scheduler import MAX_ACTIVE_EXECUTIONS
from tests.e2e.api_support import BUCKET, definition, shape_problems
from tests.e2e.conftest import ApiServer

TARGET = "CodePipeline_20150709."
# Well-formed (execution ids are UUIDs, as CodePipeline checks) but unknown.
MISSING = "00000000-0000-4000-8000-000000000000"


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def raw(api: ApiServer, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON the server answers, before boto3 drops members it does not know."""
    req = urllib.request.Request(
        f"{api.url}/",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"{TARGET}{operation}",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


def conforming(api: ApiServer, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    out = raw(api, operation, body)
    assert shape_problems(operation, out) == []
    return out


def finish(
    api: ApiServer, eid: str, stage: str, action: str, *, succeeded: bool = True, **result: Any
) -> None:
    """Complete the current attempt of an action, as its worker's callback would."""
    store = api.service.store
    state = store.runs.load(eid)
    assert state is not None
    act = state.action(stage, action)
    assert act is not None
    if not succeeded:
        result.setdefault("error_code", "JobFailed")
        result.setdefault("error_message", "it broke")
    event = ActionCompleted(
        now=time.time(),
        execution_id=eid,
        stage=stage,
        action=action,
        attempt=act.attempt,
        result=ActionResult(succeeded=succeeded, **result),
    )
    store.apply(state.pipeline_name, event)


def source_out(eid: str) -> ArtifactLocation:
    return ArtifactLocation(name="SourceOut", bucket=BUCKET, key=f"demo/SourceOut/{eid[:8]}.zip")


def through_source(api: ApiServer, eid: str) -> None:
    finish(api, eid, "Source", "Fetch", output_artifacts=[source_out(eid)])


def build_out(eid: str) -> ArtifactLocation:
    return ArtifactLocation(name="BuildOut", bucket=BUCKET, key=f"demo/BuildOut/{eid[:8]}.zip")


def run_to_success(api: ApiServer, cp: Any, name: str) -> str:
    """An execution of a pipeline without approval, driven to Succeeded."""
    eid = str(cp.start_pipeline_execution(name=name)["pipelineExecutionId"])
    through_source(api, eid)
    finish(api, eid, "Build", "Compile", output_artifacts=[build_out(eid)])
    finish(api, eid, "Release", "Publish")
    assert execution(cp, name, eid)["status"] == "Succeeded"
    return eid


def execution(cp: Any, name: str, eid: str) -> dict[str, Any]:
    out: dict[str, Any] = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)[
        "pipelineExecution"
    ]
    return out


def stage_states(cp: Any, name: str) -> dict[str, dict[str, Any]]:
    return {s["stageName"]: s for s in cp.get_pipeline_state(name=name)["stageStates"]}


def client_of(api: ApiServer) -> ConveyorClient:
    return ConveyorClient(api.url)


# ---------------------------------------------------------------------------- retry


def test_retry_stage_execution(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo", approval=False))
    eid = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    through_source(api, eid)
    finish(api, eid, "Build", "Compile", succeeded=False, error_message="compiler crashed")
    failed = execution(cp, "demo", eid)
    assert failed["status"] == "Failed"
    assert "compiler crashed" in failed["statusSummary"]

    with pytest.raises(ClientError) as exc:  # Source succeeded: nothing to retry
        cp.retry_stage_execution(
            pipelineName="demo",
            stageName="Source",
            pipelineExecutionId=eid,
            retryMode="FAILED_ACTIONS",
        )
    assert code_of(exc) == "StageNotRetryableException"
    with pytest.raises(ClientError) as exc:
        cp.retry_stage_execution(
            pipelineName="demo",
            stageName="Nowhere",
            pipelineExecutionId=eid,
            retryMode="FAILED_ACTIONS",
        )
    assert code_of(exc) == "StageNotFoundException"

    out = cp.retry_stage_execution(
        pipelineName="demo", stageName="Build", pipelineExecutionId=eid, retryMode="FAILED_ACTIONS"
    )
    assert out["pipelineExecutionId"] == eid
    resumed = execution(cp, "demo", eid)
    assert resumed["status"] == "InProgress"
    assert "statusSummary" not in resumed
    body = conforming(api, "GetPipelineState", {"name": "demo"})
    build = next(s for s in body["stageStates"] if s["stageName"] == "Build")
    assert build["latestExecution"] == {
        "pipelineExecutionId": eid,
        "status": "InProgress",
        "type": "STANDARD",
    }
    assert build["actionStates"][0]["latestExecution"]["status"] == "InProgress"
    assert build["retryStageMetadata"] == {
        "autoStageRetryAttempt": 0,
        "manualStageRetryAttempt": 1,
        "latestRetryTrigger": "ManualStageRetry",
    }
    assert api.service.store.runs.load(eid).action("Build", "Compile").attempt == 2  # type: ignore[union-attr]

    finish(api, eid, "Build", "Compile", output_artifacts=[build_out(eid)])
    finish(api, eid, "Release", "Publish")
    assert execution(cp, "demo", eid)["status"] == "Succeeded"

    with pytest.raises(ClientError) as exc:  # it succeeded now
        cp.retry_stage_execution(
            pipelineName="demo",
            stageName="Build",
            pipelineExecutionId=eid,
            retryMode="ALL_ACTIONS",
        )
    assert code_of(exc) == "StageNotRetryableException"


def test_an_automatic_retry_lists_each_attempt_under_its_own_id(api: ApiServer, cp: Any) -> None:
    d = definition("autoretry", approval=False)
    d["stages"][1]["onFailure"] = {"result": "RETRY"}
    cp.create_pipeline(pipeline=d)
    eid = cp.start_pipeline_execution(name="autoretry")["pipelineExecutionId"]
    through_source(api, eid)
    finish(api, eid, "Build", "Compile", succeeded=False)  # onFailure RETRY runs it again
    finish(api, eid, "Build", "Compile", output_artifacts=[build_out(eid)])
    finish(api, eid, "Release", "Publish")
    assert execution(cp, "autoretry", eid)["status"] == "Succeeded"
    details = cp.list_action_executions(
        pipelineName="autoretry", filter={"pipelineExecutionId": eid}
    )["actionExecutionDetails"]
    compile_runs = [d for d in details if d["actionName"] == "Compile"]
    assert [d["status"] for d in compile_runs] == ["Succeeded", "Failed"]  # newest first
    assert len({d["actionExecutionId"] for d in compile_runs}) == 2
    assert compile_runs[1]["output"]["executionResult"]["errorDetails"]["message"] == "it broke"
    state = stage_states(cp, "autoretry")["Build"]
    latest = state["actionStates"][0]["latestExecution"]
    assert latest["actionExecutionId"] == compile_runs[0]["actionExecutionId"]
    assert state["retryStageMetadata"]["autoStageRetryAttempt"] == 1


def test_retry_of_an_execution_that_is_no_longer_the_latest(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo", approval=False))
    first = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    through_source(api, first)
    finish(api, first, "Build", "Compile", succeeded=False)
    second = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    through_source(api, second)  # the second execution is now the latest in Build

    with pytest.raises(ClientError) as exc:
        cp.retry_stage_execution(
            pipelineName="demo",
            stageName="Build",
            pipelineExecutionId=first,
            retryMode="FAILED_ACTIONS",
        )
    assert code_of(exc) == "NotLatestPipelineExecutionException"
    with pytest.raises(ClientError) as exc:
        cp.retry_stage_execution(
            pipelineName="demo",
            stageName="Build",
            pipelineExecutionId=MISSING,
            retryMode="FAILED_ACTIONS",
        )
    assert code_of(exc) == "PipelineExecutionNotFoundException"


# ---------------------------------------------------------------------------- transitions


def test_disable_and_enable_stage_transition(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    client = client_of(api)
    cp.disable_stage_transition(
        pipelineName="demo", stageName="Build", transitionType="Inbound", reason="code freeze"
    )
    build = stage_states(cp, "demo")["Build"]
    transition = build["inboundTransitionState"]
    assert transition["enabled"] is False
    assert transition["disabledReason"] == "code freeze"
    assert isinstance(transition["lastChangedAt"], datetime)

    # An execution reaching a disabled transition waits there, still InProgress.
    first = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    through_source(api, first)
    body = conforming(api, "GetPipelineState", {"name": "demo"})
    build = next(s for s in body["stageStates"] if s["stageName"] == "Build")
    waiting = {"pipelineExecutionId": first, "status": "InProgress", "type": "STANDARD"}
    assert build["inboundExecution"] == waiting
    assert build["inboundExecutions"] == [waiting]
    assert "latestExecution" not in build
    assert execution(cp, "demo", first)["status"] == "InProgress"
    assert client.waiting_at("demo", first) == ("Build", "transition disabled: code freeze")

    cp.enable_stage_transition(pipelineName="demo", stageName="Build", transitionType="Inbound")
    build = stage_states(cp, "demo")["Build"]
    assert build["inboundTransitionState"]["enabled"] is True
    assert "disabledReason" not in build["inboundTransitionState"]
    assert "inboundExecution" not in build
    assert build["latestExecution"]["pipelineExecutionId"] == first
    assert client.waiting_at("demo", first) is None

    # Disabling Source's outbound transition is disabling Build's inbound one.
    client.disable_transition("demo", "Source", "hold", transition_type="Outbound")
    assert stage_states(cp, "demo")["Build"]["inboundTransitionState"]["disabledReason"] == "hold"
    second = client.start_execution("demo")
    through_source(api, second)
    build = stage_states(cp, "demo")["Build"]
    assert build["inboundExecution"]["pipelineExecutionId"] == second
    assert build["latestExecution"]["pipelineExecutionId"] == first

    # Enabled again, the second still waits: the first holds the stage's lock.
    client.enable_transition("demo", "Build")
    assert client.waiting_at("demo", second) == ("Build", f"stage locked by {first}")
    finish(api, first, "Build", "Compile", output_artifacts=[build_out(first)])
    build = stage_states(cp, "demo")["Build"]
    assert build["latestExecution"]["pipelineExecutionId"] == second
    assert "inboundExecution" not in build
    assert client.waiting_at("demo", second) is None


def test_transition_errors(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    with pytest.raises(ClientError) as exc:
        cp.disable_stage_transition(
            pipelineName="demo", stageName="Nowhere", transitionType="Inbound", reason="x"
        )
    assert code_of(exc) == "StageNotFoundException"
    with pytest.raises(ClientError) as exc:
        cp.enable_stage_transition(
            pipelineName="demo", stageName="Release", transitionType="Outbound"
        )
    assert code_of(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        cp.enable_stage_transition(
            pipelineName="ghost", stageName="Build", transitionType="Inbound"
        )
    assert code_of(exc) == "PipelineNotFoundException"


# ---------------------------------------------------------------------------- rollback


def test_rollback_stage(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo", approval=False))
    first = run_to_success(api, cp, "demo")
    second = run_to_success(api, cp, "demo")

    with pytest.raises(ClientError) as exc:
        cp.rollback_stage(pipelineName="demo", stageName="Source", targetPipelineExecutionId=first)
    assert code_of(exc) == "UnableToRollbackStageException"
    with pytest.raises(ClientError) as exc:
        cp.rollback_stage(
            pipelineName="demo", stageName="Release", targetPipelineExecutionId=MISSING
        )
    assert code_of(exc) == "PipelineExecutionNotFoundException"

    rid = cp.rollback_stage(
        pipelineName="demo", stageName="Release", targetPipelineExecutionId=first
    )["pipelineExecutionId"]
    assert rid not in (first, second)
    rolled = conforming(
        api, "GetPipelineExecution", {"pipelineName": "demo", "pipelineExecutionId": rid}
    )["pipelineExecution"]
    assert rolled["status"] == "InProgress"
    assert rolled["executionType"] == "ROLLBACK"
    assert rolled["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": first}
    assert rolled["trigger"]["triggerType"] == "ManualRollback"
    summaries = conforming(api, "ListPipelineExecutions", {"pipelineName": "demo"})
    row = next(
        s for s in summaries["pipelineExecutionSummaries"] if s["pipelineExecutionId"] == rid
    )
    assert row["executionType"] == "ROLLBACK"
    assert row["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": first}

    release = stage_states(cp, "demo")["Release"]
    assert release["latestExecution"] == {
        "pipelineExecutionId": rid,
        "status": "InProgress",
        "type": "ROLLBACK",
    }
    # The rollback redeploys what the target built.
    publish = cp.list_action_executions(pipelineName="demo", filter={"pipelineExecutionId": rid})[
        "actionExecutionDetails"
    ]
    assert [(d["stageName"], d["actionName"]) for d in publish] == [("Release", "Publish")]
    assert publish[0]["input"]["inputArtifacts"][0]["s3location"]["key"] == source_out(first).key

    with pytest.raises(ClientError) as exc:  # a rollback is no rollback target
        cp.rollback_stage(pipelineName="demo", stageName="Release", targetPipelineExecutionId=rid)
    assert code_of(exc) == "UnableToRollbackStageException"

    finish(api, rid, "Release", "Publish")
    assert execution(cp, "demo", rid)["status"] == "Succeeded"

    cp.update_pipeline(pipeline=definition("demo", approval=False))
    with pytest.raises(ClientError) as exc:  # the target ran version 1; the pipeline is at 2
        cp.rollback_stage(
            pipelineName="demo", stageName="Release", targetPipelineExecutionId=second
        )
    assert code_of(exc) == "UnableToRollbackStageException"


# ---------------------------------------------------------------------------- conditions


def gated(rule: dict[str, Any], result: str = "FAIL") -> dict[str, Any]:
    """The demo pipeline without approval, its Build stage behind one beforeEntry rule."""
    decl = definition("gated", approval=False)
    decl["stages"][1]["beforeEntry"] = {"conditions": [{"result": result, "rules": [rule]}]}
    return decl


ENV_IS_PROD = {
    "name": "EnvIsProd",
    "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
    "configuration": {"Variable": "#{variables.Env}", "Value": "prod", "Operator": "EQ"},
}


def test_list_rule_types(api: ApiServer, cp: Any) -> None:
    body = conforming(api, "ListRuleTypes", {})
    providers = {t["id"]["provider"] for t in body["ruleTypes"]}
    # Every rule type AWS's rule reference documents; the ones that cannot run here say so.
    assert providers == {
        "VariableCheck",
        "DeploymentWindow",
        "Commands",
        "LambdaInvoke",
        "CodeBuild",
        "CloudWatchAlarm",
    }
    alarm = next(t for t in body["ruleTypes"] if t["id"]["provider"] == "CloudWatchAlarm")
    for prop in alarm["ruleConfigurationProperties"]:
        assert prop["description"].startswith("Not supported by this installation")
    check = next(t for t in body["ruleTypes"] if t["id"]["provider"] == "VariableCheck")
    assert check["id"] == {
        "category": "Rule",
        "owner": "AWS",
        "provider": "VariableCheck",
        "version": "1",
    }
    assert {p["name"] for p in check["ruleConfigurationProperties"]} == {
        "Variable",
        "Value",
        "Operator",
    }
    assert check["inputArtifactDetails"] == {"minimumCount": 0, "maximumCount": 0}
    filtered = cp.list_rule_types(ruleOwnerFilter="AWS", regionFilter="eu-west-1")["ruleTypes"]
    assert len(filtered) == len(body["ruleTypes"])
    assert client_of(api).list_rule_types() == filtered


def test_list_rule_executions_and_condition_state(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=gated(ENV_IS_PROD))
    dev = cp.start_pipeline_execution(name="gated")["pipelineExecutionId"]
    through_source(api, dev)
    assert execution(cp, "gated", dev)["status"] == "Failed"  # Env is dev: FAIL

    body = conforming(
        api, "ListRuleExecutions", {"pipelineName": "gated", "filter": {"pipelineExecutionId": dev}}
    )
    [detail] = body["ruleExecutionDetails"]
    assert (detail["stageName"], detail["ruleName"], detail["status"]) == (
        "Build",
        "EnvIsProd",
        "Failed",
    )
    assert detail["pipelineExecutionId"] == dev
    assert detail["pipelineVersion"] == 1
    assert detail["input"]["ruleTypeId"]["provider"] == "VariableCheck"
    assert detail["input"]["configuration"] == ENV_IS_PROD["configuration"]
    assert detail["input"]["resolvedConfiguration"] == {
        "Variable": "dev",
        "Value": "prod",
        "Operator": "EQ",
    }
    assert "does not equal" in detail["output"]["executionResult"]["externalExecutionSummary"]

    state = conforming(api, "GetPipelineState", {"name": "gated"})
    build = next(s for s in state["stageStates"] if s["stageName"] == "Build")
    assert build["latestExecution"]["status"] == "Failed"
    cond = build["beforeEntryConditionState"]
    assert cond["latestExecution"]["status"] == "Failed"
    [one] = cond["conditionStates"]
    assert one["latestExecution"]["status"] == "Failed"
    [rule] = one["ruleStates"]
    assert rule["ruleName"] == "EnvIsProd"
    assert rule["latestExecution"]["ruleExecutionId"] == detail["ruleExecutionId"]
    assert rule["latestExecution"]["status"] == "Failed"
    assert "onSuccessConditionState" not in build

    prod = cp.start_pipeline_execution(name="gated", variables=[{"name": "Env", "value": "prod"}])[
        "pipelineExecutionId"
    ]
    through_source(api, prod)
    assert stage_states(cp, "gated")["Build"]["latestExecution"]["status"] == "InProgress"
    both = client_of(api).list_rule_executions("gated")
    assert [(d["pipelineExecutionId"], d["status"]) for d in both] == [
        (prod, "Succeeded"),
        (dev, "Failed"),
    ]
    paged = cp.list_rule_executions(pipelineName="gated", maxResults=1)
    assert len(paged["ruleExecutionDetails"]) == 1
    assert paged["nextToken"]

    with pytest.raises(ClientError) as exc:
        cp.list_rule_executions(pipelineName="gated", filter={"pipelineExecutionId": MISSING})
    assert code_of(exc) == "PipelineExecutionNotFoundException"
    with pytest.raises(ClientError) as exc:
        cp.list_rule_executions(pipelineName="ghost")
    assert code_of(exc) == "PipelineNotFoundException"


def test_skip_condition_shows_a_skipped_stage(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=gated(ENV_IS_PROD, result="SKIP"))
    eid = cp.start_pipeline_execution(name="gated")["pipelineExecutionId"]
    through_source(api, eid)
    body = conforming(api, "GetPipelineState", {"name": "gated"})
    stages = {s["stageName"]: s for s in body["stageStates"]}
    assert stages["Build"]["latestExecution"]["status"] == "Skipped"
    assert stages["Release"]["latestExecution"]["status"] == "InProgress"


def test_override_stage_condition(api: ApiServer, cp: Any) -> None:
    commands = {
        "name": "Smoke",
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
        "commands": ["true"],
    }
    cp.create_pipeline(pipeline=gated(commands))
    eid = cp.start_pipeline_execution(name="gated")["pipelineExecutionId"]

    with pytest.raises(ClientError) as exc:  # nothing is being evaluated yet
        cp.override_stage_condition(
            pipelineName="gated",
            stageName="Build",
            pipelineExecutionId=eid,
            conditionType="BEFORE_ENTRY",
        )
    assert code_of(exc) == "ConditionNotOverridableException"

    through_source(api, eid)  # the Commands rule waits for a worker that never comes
    build = stage_states(cp, "gated")["Build"]
    assert build["beforeEntryConditionState"]["latestExecution"]["status"] == "InProgress"
    assert "latestExecution" not in build["actionStates"][0]
    with pytest.raises(ClientError) as exc:
        cp.override_stage_condition(
            pipelineName="gated",
            stageName="Build",
            pipelineExecutionId=eid,
            conditionType="ON_SUCCESS",
        )
    assert code_of(exc) == "ConditionNotOverridableException"

    client_of(api).override_condition("gated", "Build", eid, "BEFORE_ENTRY")
    body = conforming(api, "GetPipelineState", {"name": "gated"})
    build = next(s for s in body["stageStates"] if s["stageName"] == "Build")
    assert build["beforeEntryConditionState"]["latestExecution"]["status"] == "Overridden"
    assert build["actionStates"][0]["latestExecution"]["status"] == "InProgress"
    [run] = cp.list_rule_executions(pipelineName="gated")["ruleExecutionDetails"]
    assert run["status"] == "Abandoned"

    # A late result of the overridden rule changes nothing.
    rid = run["ruleExecutionId"]
    event = RuleCompleted(
        now=time.time(),
        execution_id=eid,
        stage="Build",
        rule_execution_id=rid,
        attempt=1,
        succeeded=False,
        summary="late",
    )
    api.service.store.apply("gated", event)
    assert (
        cp.list_rule_executions(pipelineName="gated")["ruleExecutionDetails"][0]["status"]
        == "Abandoned"
    )


# ---------------------------------------------------------------------------- starting


def test_client_request_token_makes_starts_idempotent(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    first = cp.start_pipeline_execution(name="demo", clientRequestToken="deploy-42")
    again = cp.start_pipeline_execution(name="demo", clientRequestToken="deploy-42")
    assert again["pipelineExecutionId"] == first["pipelineExecutionId"]
    other = client_of(api).start_execution("demo", client_request_token="deploy-43")
    assert other != first["pipelineExecutionId"]
    assert client_of(api).start_execution("demo", client_request_token="deploy-43") == other
    ids = [
        s["pipelineExecutionId"]
        for s in cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]
    ]
    assert sorted(ids) == sorted([first["pipelineExecutionId"], other])


def test_parallel_pipeline_limits_active_executions(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("wide") | {"executionMode": "PARALLEL"})
    started = {
        cp.start_pipeline_execution(name="wide")["pipelineExecutionId"]
        for _ in range(MAX_ACTIVE_EXECUTIONS)
    }
    assert len(started) == MAX_ACTIVE_EXECUTIONS
    with pytest.raises(ClientError) as exc:
        cp.start_pipeline_execution(name="wide")
    assert code_of(exc) == "ConcurrentPipelineExecutionsLimitExceededException"

    some = next(iter(started))
    summary = execution(cp, "wide", some)
    assert summary["executionMode"] == "PARALLEL"
    cp.stop_pipeline_execution(pipelineName="wide", pipelineExecutionId=some, abandon=True)
    assert cp.start_pipeline_execution(name="wide")["pipelineExecutionId"] not in started


def test_superseded_execution_reads_back(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    first = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    second = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]  # waits for Source
    third = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]  # supersedes it
    rows = conforming(api, "ListPipelineExecutions", {"pipelineName": "demo"})
    statuses = {s["pipelineExecutionId"]: s["status"] for s in rows["pipelineExecutionSummaries"]}
    assert statuses == {first: "InProgress", second: "Superseded", third: "InProgress"}
    assert execution(cp, "demo", second)["status"] == "Superseded"
    source = stage_states(cp, "demo")["Source"]
    assert source["latestExecution"]["pipelineExecutionId"] == first
    assert source["inboundExecution"]["pipelineExecutionId"] == third
    assert client_of(api).waiting_at("demo", third) == ("Source", f"stage locked by {first}")


def test_every_read_conforms_to_botocore(api: ApiServer, cp: Any) -> None:
    """boto3 drops members it does not know: check the raw answers against the model."""
    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    through_source(api, eid)
    finish(
        api,
        eid,
        "Build",
        "Compile",
        output_artifacts=[build_out(eid)],
        output_variables={"IMAGE": "app:1"},
        summary="built",
    )
    by_name = {"name": "demo"}
    in_pipeline = {"pipelineName": "demo"}
    one = {**in_pipeline, "pipelineExecutionId": eid}
    for operation, body in [
        ("GetPipeline", by_name),
        ("ListPipelines", {}),
        ("GetPipelineState", by_name),
        ("GetPipelineExecution", one),
        ("ListPipelineExecutions", in_pipeline),
        ("ListActionExecutions", {**in_pipeline, "filter": {"pipelineExecutionId": eid}}),
        ("ListRuleExecutions", in_pipeline),
    ]:
        conforming(api, operation, body)
    details = raw(api, "ListActionExecutions", in_pipeline)["actionExecutionDetails"]
    compiled = next(d for d in details if d["actionName"] == "Compile")
    assert compiled["input"]["resolvedConfiguration"] == {"ProjectName": "Compile-dev"}
    assert compiled["output"]["outputVariables"] == {"IMAGE": "app:1"}
    fetching = next(d for d in details if d["actionName"] == "Fetch")
    assert fetching["output"]["outputVariables"] == {}
