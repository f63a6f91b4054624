"""The CodePipeline JSON 1.1 API, driven by boto3 (and raw HTTP for what boto3 won't send)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.api.operations import OPERATIONS
from engine.api.validation import known_operations
from engine.execution import ActionResult, ArtifactLocation
from engine.messages import ActionCompleted
from tests.auth_support import next_second, sign, signed_get
from tests.e2e.api_support import BUCKET, definition
from tests.e2e.conftest import ApiServer

TARGET = "CodePipeline_20150709."
# Well-formed (execution ids and tokens are UUIDs, as CodePipeline checks) but unknown.
MISSING = "00000000-0000-4000-8000-000000000000"


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def message_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Message"])


def raw(
    api: ApiServer, operation: str | None, body: bytes | str, *, target: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST without boto3, for requests boto3 would refuse to send (signed as the admin)."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None or operation is not None:
        headers["X-Amz-Target"] = target or f"{TARGET}{operation}"
    data = body.encode() if isinstance(body, str) else body
    headers = sign("POST", f"{api.url}/", data, headers)
    req = urllib.request.Request(f"{api.url}/", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def complete(api: ApiServer, execution_id: str, stage: str, action: str, **result: Any) -> None:
    """What a worker's completion callback does: apply ActionCompleted through the store."""
    event = ActionCompleted(
        now=time.time(),
        execution_id=execution_id,
        stage=stage,
        action=action,
        attempt=1,
        result=ActionResult(succeeded=True, **result),
    )
    state = api.service.store.runs.load(execution_id)
    assert state is not None
    api.service.store.apply(state.pipeline_name, event)


def stage_states(cp: Any, name: str) -> dict[str, dict[str, Any]]:
    return {s["stageName"]: s for s in cp.get_pipeline_state(name=name)["stageStates"]}


# ---------------------------------------------------------------------------- pipelines


def test_pipeline_lifecycle(cp: Any) -> None:
    created = cp.create_pipeline(pipeline=definition("demo"))["pipeline"]
    assert created["name"] == "demo"
    assert created["version"] == 1
    assert [s["name"] for s in created["stages"]] == ["Source", "Build", "Approve", "Release"]

    got = cp.get_pipeline(name="demo")
    assert got["pipeline"]["stages"][0]["actions"][0]["configuration"]["S3Bucket"] == "src"
    meta = got["metadata"]
    assert meta["pipelineArn"].endswith(":demo")
    assert isinstance(meta["created"], datetime)
    assert isinstance(meta["updated"], datetime)

    listed = cp.list_pipelines()["pipelines"]
    assert [(p["name"], p["version"], p["pipelineType"], p["executionMode"]) for p in listed] == [
        ("demo", 1, "V2", "SUPERSEDED")
    ]

    changed = definition("demo", approval=False)
    updated = cp.update_pipeline(pipeline=changed)["pipeline"]
    assert updated["version"] == 2
    assert cp.get_pipeline(name="demo")["pipeline"]["version"] == 2
    old = cp.get_pipeline(name="demo", version=1)["pipeline"]
    assert old["version"] == 1
    assert len(old["stages"]) == 4

    with pytest.raises(ClientError) as exc:
        cp.get_pipeline(name="demo", version=9)
    assert code_of(exc) == "PipelineVersionNotFoundException"

    with pytest.raises(ClientError) as exc:  # not the first call's bytes: that is a replay
        cp.create_pipeline(pipeline=definition("demo", approval=False))
    assert code_of(exc) == "PipelineNameInUseException"

    cp.delete_pipeline(name="demo")
    with pytest.raises(ClientError) as exc:
        cp.get_pipeline(name="demo")
    assert code_of(exc) == "PipelineNotFoundException"
    assert cp.list_pipelines()["pipelines"] == []
    next_second()  # the same DeletePipeline within a second would be a replay
    cp.delete_pipeline(name="demo")  # deleting what is gone succeeds, as on AWS


def test_update_of_missing_pipeline_is_not_found(cp: Any) -> None:
    with pytest.raises(ClientError) as exc:
        cp.update_pipeline(pipeline=definition("ghost"))
    assert code_of(exc) == "PipelineNotFoundException"


def test_invalid_definition_reports_every_problem_with_its_path(cp: Any) -> None:
    bad = definition("broken")
    del bad["stages"][0]["actions"][0]["configuration"]["S3Bucket"]
    bad["stages"][1]["actions"][0]["inputArtifacts"] = [{"name": "Nope"}]
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=bad)
    # The first problem is inside an action: CodePipeline's code for that, and its sentence.
    assert code_of(exc) == "InvalidActionDeclarationException"
    message = message_of(exc)
    assert message.startswith(
        "Action configuration for action 'Fetch' is missing required configuration 'S3Bucket'"
    )
    assert "stages[0].actions[0].configuration.S3Bucket: required" in message
    assert "stages[1].actions[0].inputArtifacts[0].name" in message
    assert cp.list_pipelines()["pipelines"] == []


def test_list_pipelines_paginates(cp: Any) -> None:
    for name in ("a1", "a2", "a3"):
        cp.create_pipeline(pipeline=definition(name))
    first = cp.list_pipelines(maxResults=2)
    assert [p["name"] for p in first["pipelines"]] == ["a1", "a2"]
    pages = cp.get_paginator("list_pipelines").paginate(PaginationConfig={"PageSize": 1})
    assert [p["name"] for page in pages for p in page["pipelines"]] == ["a1", "a2", "a3"]


# ---------------------------------------------------------------------------- executions


def test_start_execution_and_read_it_back(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(
        name="demo", variables=[{"name": "Env", "value": "prod"}], clientRequestToken="t-1"
    )["pipelineExecutionId"]

    execution = cp.get_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid)[
        "pipelineExecution"
    ]
    assert execution["status"] == "InProgress"
    assert execution["pipelineVersion"] == 1
    assert execution["variables"] == [{"name": "Env", "resolvedValue": "prod"}]
    assert execution["trigger"]["triggerType"] == "StartPipelineExecution"
    assert execution["executionType"] == "STANDARD"

    summaries = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]
    assert [s["pipelineExecutionId"] for s in summaries] == [eid]
    assert summaries[0]["status"] == "InProgress"
    assert isinstance(summaries[0]["startTime"], datetime)
    assert summaries[0]["executionMode"] == "SUPERSEDED"

    stages = stage_states(cp, "demo")
    assert stages["Source"]["latestExecution"] == {
        "pipelineExecutionId": eid,
        "status": "InProgress",
        "type": "STANDARD",
    }
    assert "inboundTransitionState" not in stages["Source"]  # nothing comes into it
    assert stages["Build"]["inboundTransitionState"] == {"enabled": True}
    fetch = stages["Source"]["actionStates"][0]
    assert fetch["actionName"] == "Fetch"
    assert fetch["latestExecution"]["status"] == "InProgress"
    assert "token" not in fetch["latestExecution"]
    assert "latestExecution" not in stages["Build"]
    assert "latestExecution" not in stages["Build"]["actionStates"][0]

    details = cp.list_action_executions(pipelineName="demo", filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    assert len(details) == 1
    d = details[0]
    assert (d["stageName"], d["actionName"], d["status"]) == ("Source", "Fetch", "InProgress")
    assert d["input"]["actionTypeId"] == {
        "category": "Source",
        "owner": "AWS",
        "provider": "S3",
        "version": "1",
    }
    assert d["input"]["configuration"] == {"S3Bucket": "src", "S3ObjectKey": "app.zip"}
    assert d["pipelineVersion"] == 1
    assert "output" not in d


def test_source_revision_overrides_pin_the_source_action(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(
        name="demo",
        sourceRevisions=[
            {"actionName": "Fetch", "revisionType": "S3_OBJECT_VERSION_ID", "revisionValue": "v7"}
        ],
    )["pipelineExecutionId"]
    execution = cp.get_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid)[
        "pipelineExecution"
    ]
    assert execution["artifactRevisions"][0]["revisionId"] == "v7"

    bad = [
        ({"actionName": "Nope", "revisionType": "COMMIT_ID"}, "sourceRevisions[0].actionName"),
        ({"actionName": "Fetch", "revisionType": "COMMIT_ID"}, "takes S3_OBJECT_VERSION_ID"),
        ({"actionName": "Fetch", "revisionType": "S3_OBJECT_KEY"}, "cannot pin"),
    ]
    for override, expected in bad:
        with pytest.raises(ClientError) as exc:
            cp.start_pipeline_execution(
                name="demo", sourceRevisions=[{**override, "revisionValue": "abc"}]
            )
        assert code_of(exc) == "ValidationException"
        assert expected in message_of(exc)
    assert len(cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]) == 1


def test_variables_are_checked(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    with pytest.raises(ClientError) as exc:
        cp.start_pipeline_execution(name="demo", variables=[{"name": "Nope", "value": "x"}])
    assert code_of(exc) == "ValidationException"
    assert "Nope" in message_of(exc)


def test_missing_pipeline_and_execution(cp: Any) -> None:
    calls: tuple[Callable[[], Any], ...] = (
        lambda: cp.start_pipeline_execution(name="ghost"),
        lambda: cp.get_pipeline_state(name="ghost"),
        lambda: cp.list_pipeline_executions(pipelineName="ghost"),
    )
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc) == "PipelineNotFoundException"

    cp.create_pipeline(pipeline=definition("demo"))
    with pytest.raises(ClientError) as exc:
        cp.get_pipeline_execution(pipelineName="demo", pipelineExecutionId=MISSING)
    assert code_of(exc) == "PipelineExecutionNotFoundException"
    with pytest.raises(ClientError) as exc:
        cp.stop_pipeline_execution(pipelineName="demo", pipelineExecutionId=MISSING)
    assert code_of(exc) == "PipelineExecutionNotFoundException"


def test_stop_then_duplicate_stop_then_abandon(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]

    out = cp.stop_pipeline_execution(
        pipelineName="demo", pipelineExecutionId=eid, reason="changed my mind"
    )
    assert out["pipelineExecutionId"] == eid
    execution = cp.get_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["status"] == "Stopping"
    summary = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"][0]
    assert summary["stopTrigger"] == {"reason": "changed my mind"}

    with pytest.raises(ClientError) as exc:
        cp.stop_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid)
    assert code_of(exc) == "DuplicatedStopRequestException"

    cp.stop_pipeline_execution(
        pipelineName="demo", pipelineExecutionId=eid, abandon=True, reason="now"
    )
    summary = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"][0]
    assert summary["status"] == "Stopped"
    assert summary["stopTrigger"] == {"reason": "now"}
    fetch = stage_states(cp, "demo")["Source"]["actionStates"][0]["latestExecution"]
    assert fetch["status"] == "Abandoned"

    with pytest.raises(ClientError) as exc:  # not the earlier stop's bytes: a replay
        cp.stop_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid, reason="again")
    assert code_of(exc) == "PipelineExecutionNotStoppableException"


# ---------------------------------------------------------------------------- approvals


def test_approval_errors(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    cp.start_pipeline_execution(name="demo")

    def answer(stage: str, action: str, token: str = MISSING) -> None:
        cp.put_approval_result(
            pipelineName="demo",
            stageName=stage,
            actionName=action,
            result={"summary": "ok", "status": "Approved"},
            token=token,
        )

    with pytest.raises(ClientError) as exc:
        answer("Approve", "Gate")
    assert code_of(exc) == "InvalidApprovalTokenException"
    with pytest.raises(ClientError) as exc:
        answer("Nowhere", "Gate")
    assert code_of(exc) == "StageNotFoundException"
    with pytest.raises(ClientError) as exc:
        answer("Approve", "Nobody")
    assert code_of(exc) == "ActionNotFoundException"
    with pytest.raises(ClientError) as exc:
        answer("Build", "Compile")
    assert code_of(exc) == "ValidationException"


def test_approval_happy_path(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]

    source = ArtifactLocation(name="SourceOut", bucket=BUCKET, key="demo/SourceOut/abc.zip")
    complete(
        api,
        eid,
        "Source",
        "Fetch",
        output_artifacts=[source],
        revision_id="v-123",
        revision_summary="first upload",
    )
    log = ArtifactLocation(name="log", bucket=BUCKET, key="demo/logs/compile.log")
    build_out = ArtifactLocation(name="BuildOut", bucket=BUCKET, key="demo/BuildOut/def.zip")
    complete(
        api,
        eid,
        "Build",
        "Compile",
        summary="built",
        external_execution_id="build-1",
        log_location=log,
        output_artifacts=[build_out],
        output_variables={"IMAGE": "app:1"},
    )

    stages = stage_states(cp, "demo")
    assert stages["Build"]["latestExecution"]["status"] == "Succeeded"
    gate = stages["Approve"]["actionStates"][0]["latestExecution"]
    assert gate["status"] == "InProgress"
    token = gate["token"]
    compile_state = stages["Build"]["actionStates"][0]["latestExecution"]
    assert compile_state["summary"] == "built"
    assert compile_state["externalExecutionUrl"] == f"s3://{BUCKET}/demo/logs/compile.log"

    details = {
        d["actionName"]: d
        for d in cp.list_action_executions(
            pipelineName="demo", filter={"pipelineExecutionId": eid}
        )["actionExecutionDetails"]
    }
    compiled = details["Compile"]
    assert compiled["input"]["inputArtifacts"] == [
        {"name": "SourceOut", "s3location": {"bucket": BUCKET, "key": "demo/SourceOut/abc.zip"}}
    ]
    assert compiled["input"]["resolvedConfiguration"] == {"ProjectName": "Compile-dev"}
    assert compiled["output"]["outputArtifacts"][0]["s3location"]["key"] == "demo/BuildOut/def.zip"
    assert compiled["output"]["executionResult"]["externalExecutionId"] == "build-1"
    assert compiled["output"]["outputVariables"] == {"IMAGE": "app:1"}

    execution = cp.get_pipeline_execution(pipelineName="demo", pipelineExecutionId=eid)
    [revision] = execution["pipelineExecution"]["artifactRevisions"]
    assert isinstance(revision.pop("created"), datetime)  # when the source action took it
    assert revision == {
        "name": "SourceOut",
        "revisionId": "v-123",
        "revisionSummary": "first upload",
    }

    approved = cp.put_approval_result(
        pipelineName="demo",
        stageName="Approve",
        actionName="Gate",
        result={"summary": "looks good", "status": "Approved"},
        token=token,
    )
    assert isinstance(approved["approvedAt"], datetime)

    stages = stage_states(cp, "demo")
    gate = stages["Approve"]["actionStates"][0]["latestExecution"]
    assert gate["status"] == "Succeeded"
    assert gate["summary"] == "looks good"
    assert "token" not in gate
    assert stages["Release"]["latestExecution"]["status"] == "InProgress"

    with pytest.raises(ClientError) as exc:
        cp.put_approval_result(
            pipelineName="demo",
            stageName="Approve",
            actionName="Gate",
            result={"summary": "again", "status": "Rejected"},
            token=token,
        )
    assert code_of(exc) == "ApprovalAlreadyCompletedException"

    complete(api, eid, "Release", "Publish")
    summary = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"][0]
    assert summary["status"] == "Succeeded"
    assert summary["sourceRevisions"] == [
        {"actionName": "Fetch", "revisionId": "v-123", "revisionSummary": "first upload"}
    ]


# ---------------------------------------------------------------------------- protocol


def test_protocol_errors(api: ApiServer) -> None:
    status, headers, body = raw(api, "LaunchRockets", "{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    assert headers["content-type"] == "application/x-amz-json-1.1"

    unsupported = sorted(known_operations() - set(OPERATIONS))
    if unsupported:  # an operation of the model Conveyor does not serve (yet)
        status, _, body = raw(api, unsupported[0], "{}")
        assert (status, body["__type"]) == (400, "UnknownOperationException")
        assert "not supported" in body["message"]

    status, _, body = raw(api, None, "{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")

    status, _, body = raw(api, "ListPipelines", "{not json")
    assert (status, body["__type"]) == (400, "SerializationException")

    status, _, body = raw(api, "ListPipelines", "[1, 2]")
    assert (status, body["__type"]) == (400, "SerializationException")

    status, _, body = raw(api, "GetPipeline", "{}")
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "'name'" in body["message"]

    status, _, body = raw(api, "StopPipelineExecution", json.dumps({"pipelineName": 5}))
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "'pipelineName'" in body["message"]
    assert "'pipelineExecutionId'" in body["message"]

    status, _, body = raw(
        api,
        "PutApprovalResult",
        json.dumps(
            {
                "pipelineName": "p",
                "stageName": "s",
                "actionName": "a",
                "token": "t",
                "result": {"summary": "x", "status": "Maybe"},
            }
        ),
    )
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "result.status" in body["message"]

    status, _, body = raw(api, "ListPipelines", b"")
    assert (status, body) == (200, {"pipelines": []})


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/x-amz-json-1.1", 200),
        ("application/x-amz-json-1.1; charset=utf-8", 200),  # parameters are ignored
        ("Application/X-Amz-Json-1.1", 200),  # media types are case-insensitive
        ("application/x-amz-json-1.0", 200),  # AWS's JSON services take 1.0 as well
        ("application/json", 400),
        ("text/plain", 400),
        ("application/x-www-form-urlencoded", 400),  # what curl -d sends
        ("application/cbor", 400),  # CBOR has its own path
        (None, 400),
    ],
)
def test_json_requests_must_say_they_are_json(
    api: ApiServer, content_type: str | None, status: int
) -> None:
    headers = {"X-Amz-Target": f"{TARGET}ListPipelines", "Content-Length": "2"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers = sign("POST", f"{api.url}/", b"{}", headers)  # as the admin
    parts = urllib.parse.urlsplit(api.url)  # http.client: urllib would add a Content-Type
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("POST", "/", body=b"{}", headers=headers)
        resp = conn.getresponse()
        got, reply = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert got == status, reply
    if status == 400:
        assert reply["__type"] == "UnknownOperationException"
        assert repr(content_type) in reply["message"]
        assert "application/x-amz-json-1.1" in reply["message"]


def test_unexpected_errors_become_internal_failure(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("kaput")

    monkeypatch.setattr(api.service, "list_pipelines", boom)
    status, _, body = raw(api, "ListPipelines", "{}")
    assert (status, body["__type"]) == (500, "InternalFailure")
    assert "kaput" not in body["message"]  # details go to the log, not to clients


def test_health_and_events(api: ApiServer, cp: Any) -> None:
    with urllib.request.urlopen(f"{api.url}/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"ok": True}

    cp.create_pipeline(pipeline=definition("demo"))
    eid = cp.start_pipeline_execution(name="demo")["pipelineExecutionId"]
    page = signed_get(f"{api.url}/events")
    states = [(e["event"]["detail-type"], e["event"]["detail"]["state"]) for e in page["events"]]
    assert ("CodePipeline Pipeline Execution State Change", "STARTED") in states
    assert all(e["event"]["detail"]["execution-id"] == eid for e in page["events"])

    assert signed_get(f"{api.url}/events?after={page['last']}") == {
        "events": [],
        "last": page["last"],
    }


def test_lengths_and_patterns_are_checked_as_codepipeline_does(api: ApiServer) -> None:
    """boto3 checks only minimum lengths; the server checks the rest of the model's rules."""
    status, _, body = raw(
        api, "GetPipelineExecution", json.dumps({"pipelineName": "p", "pipelineExecutionId": "x"})
    )
    assert (status, body["__type"]) == (400, "ValidationException")
    assert (
        "'pipelineExecutionId' failed to satisfy constraint: Member must satisfy pattern"
        in (body["message"])
    )
    status, _, body = raw(api, "ListPipelines", json.dumps({"maxResults": 5000}))
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "Member must have value <= 1000" in body["message"]
    reason = json.dumps(
        {"pipelineName": "p", "stageName": "s", "transitionType": "Inbound", "reason": "a" * 301}
    )
    status, _, body = raw(api, "DisableStageTransition", reason)
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "Member must have length <= 300" in body["message"]
