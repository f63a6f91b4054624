"""What clients written against AWS notice (issue 8): ARN shapes, error codes and AWS's
sentences, history gone with a deleted pipeline, the first stage's missing transition,
ROLLBACK refused in PARALLEL, and the action's region in ListActionExecutions."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.execution import ArtifactLocation
from tests.e2e.api_support import BUCKET, definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import code_of, complete, message_of

ACCOUNT = "111122223333"  # the default CONVEYOR_ACCOUNT_ID: AWS's documentation example


def test_pipeline_arn_is_shaped_like_aws(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    arn = cp.get_pipeline(name="demo")["metadata"]["pipelineArn"]
    assert arn == f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:demo"


def test_events_name_the_account_region_and_pipeline_arn(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    cp.start_pipeline_execution(name="demo")
    rows = api.service.store.events.read("0", 100)
    assert rows, "starting an execution emitted no event"
    for _, event in rows:
        assert event["account"] == ACCOUNT
        assert event["region"] == "us-east-1"
        assert event["resources"] == [f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:demo"]


def test_missing_pipeline_is_named_in_aws_words(cp: Any) -> None:
    expected = f"Account '{ACCOUNT}' does not have a pipeline with name 'ghost'"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_pipeline", {"name": "ghost"}),
        ("start_pipeline_execution", {"name": "ghost"}),
        ("get_pipeline_state", {"name": "ghost"}),
        ("update_pipeline", {"pipeline": definition("ghost")}),
    ]
    for operation, kwargs in calls:
        with pytest.raises(ClientError) as exc:
            getattr(cp, operation)(**kwargs)
        assert code_of(exc) == "PipelineNotFoundException"
        assert message_of(exc) == expected


def test_one_stage_pipeline_gets_aws_sentence_then_every_problem(cp: Any) -> None:
    bad = definition("short")
    bad["stages"] = bad["stages"][:1]
    bad["stages"][0]["actions"][0]["name"] = "bad name!"
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=bad)
    assert code_of(exc) == "InvalidStructureException"
    message = message_of(exc)
    assert message.startswith(
        "Pipeline has only 1 stage(s). There should be a minimum of 2 stages in a pipeline"
    )
    assert "stages[0].actions[0].name" in message  # the path-precise list follows


def test_problems_inside_a_stage_or_an_action_get_their_declaration_codes(cp: Any) -> None:
    stage = definition("stagebad")
    stage["stages"][1]["name"] = stage["stages"][2]["name"]  # duplicate stage names
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=stage)
    assert code_of(exc) == "InvalidStageDeclarationException"
    assert "stages[2].name: duplicate stage name" in message_of(exc)

    action = definition("actionbad")
    action["stages"][1]["actions"][0]["inputArtifacts"] = []
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=action)
    assert code_of(exc) == "InvalidActionDeclarationException"
    assert message_of(exc).startswith(
        "Action Compile declares 0 input artifacts which is less than the minimum count (1)"
    )
    assert "stages[1].actions[0].inputArtifacts" in message_of(exc)
    cp.create_pipeline(pipeline=definition("actionbad"))
    with pytest.raises(ClientError) as exc:
        cp.update_pipeline(pipeline=action)
    assert code_of(exc) == "InvalidActionDeclarationException"
    assert cp.get_pipeline(name="actionbad")["pipeline"]["version"] == 1


def test_recreated_pipeline_shows_none_of_the_old_history(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("again"))
    old = cp.start_pipeline_execution(name="again")["pipelineExecutionId"]
    assert cp.list_action_executions(pipelineName="again")["actionExecutionDetails"]
    cp.delete_pipeline(name="again")
    cp.create_pipeline(pipeline=definition("again"))
    assert cp.list_pipeline_executions(pipelineName="again")["pipelineExecutionSummaries"] == []
    assert cp.list_action_executions(pipelineName="again")["actionExecutionDetails"] == []
    with pytest.raises(ClientError) as exc:
        cp.get_pipeline_execution(pipelineName="again", pipelineExecutionId=old)
    assert code_of(exc) == "PipelineExecutionNotFoundException"
    assert cp.get_pipeline(name="again")["pipeline"]["version"] == 1


def test_first_stage_has_no_inbound_transition(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    states = cp.get_pipeline_state(name="demo")["stageStates"]
    assert "inboundTransitionState" not in states[0]
    assert all(s["inboundTransitionState"] == {"enabled": True} for s in states[1:])


def _rollback_on_failure(name: str) -> dict[str, Any]:
    decl = definition(name) | {"executionMode": "PARALLEL"}
    decl["stages"][1]["onFailure"] = {"result": "ROLLBACK"}
    return decl


def test_parallel_pipeline_refuses_rollback_on_failure(cp: Any) -> None:
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=_rollback_on_failure("par"))
    assert code_of(exc) == "InvalidStageDeclarationException"
    assert "stages[1].onFailure: a PARALLEL pipeline cannot roll back" in message_of(exc)
    cp.create_pipeline(pipeline=definition("par") | {"executionMode": "PARALLEL"})
    with pytest.raises(ClientError) as exc:
        cp.update_pipeline(pipeline=_rollback_on_failure("par"))
    assert code_of(exc) == "InvalidStageDeclarationException"
    assert cp.get_pipeline(name="par")["pipeline"]["version"] == 1


def test_action_executions_show_the_action_region_else_the_installation_one(cp: Any) -> None:
    elsewhere = definition("elsewhere")
    elsewhere["stages"][0]["actions"][0]["region"] = "eu-west-1"
    for decl in (definition("here"), elsewhere):
        cp.create_pipeline(pipeline=decl)
        cp.start_pipeline_execution(name=decl["name"])

    def regions(name: str) -> dict[str, str]:
        details = cp.list_action_executions(pipelineName=name)["actionExecutionDetails"]
        return {d["actionName"]: d["input"]["region"] for d in details}

    assert regions("here") == {"Fetch": "us-east-1"}
    assert regions("elsewhere") == {"Fetch": "eu-west-1"}


def test_pipeline_type_and_execution_mode_defaults_are_shown_everywhere(cp: Any) -> None:
    decl = definition("defaults")
    assert "pipelineType" not in decl and "executionMode" not in decl
    cp.create_pipeline(pipeline=decl)
    got = cp.get_pipeline(name="defaults")["pipeline"]
    assert (got["pipelineType"], got["executionMode"]) == ("V2", "SUPERSEDED")
    [summary] = cp.list_pipelines()["pipelines"]
    assert (summary["pipelineType"], summary["executionMode"]) == ("V2", "SUPERSEDED")
    eid = cp.start_pipeline_execution(name="defaults")["pipelineExecutionId"]
    execution = cp.get_pipeline_execution(pipelineName="defaults", pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["executionMode"] == "SUPERSEDED"
    [listed] = cp.list_pipeline_executions(pipelineName="defaults")["pipelineExecutionSummaries"]
    assert listed["executionMode"] == "SUPERSEDED"


def test_parallel_approval_token_is_the_external_execution_id(api: ApiServer, cp: Any) -> None:
    """AWS's PutApprovalResult reference: in PARALLEL mode the token is the waiting
    approval's externalExecutionId in ListActionExecutions."""
    decl = definition("par")
    decl["executionMode"] = "PARALLEL"
    cp.create_pipeline(pipeline=decl)
    eid = cp.start_pipeline_execution(name="par")["pipelineExecutionId"]
    source = ArtifactLocation(name="SourceOut", bucket=BUCKET, key="par/SourceOut/a.zip")
    complete(api, eid, "Source", "Fetch", output_artifacts=[source])
    built = ArtifactLocation(name="BuildOut", bucket=BUCKET, key="par/BuildOut/b.zip")
    complete(api, eid, "Build", "Compile", output_artifacts=[built])

    def details() -> dict[str, Any]:
        rows = cp.list_action_executions(pipelineName="par", filter={"pipelineExecutionId": eid})
        return {d["actionName"]: d for d in rows["actionExecutionDetails"]}

    gate = details()["Gate"]
    assert gate["status"] == "InProgress"
    token = gate["output"]["executionResult"]["externalExecutionId"]
    cp.put_approval_result(
        pipelineName="par",
        stageName="Approve",
        actionName="Gate",
        result={"summary": "ok", "status": "Approved"},
        token=token,
    )
    assert details()["Gate"]["status"] == "Succeeded"
