"""engine.client.ConveyorClient against the in-process API server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from engine.client import ConveyorClient, describe_error, error_code
from engine.execution import ActionResult
from engine.messages import ActionCompleted
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer


def finish(api: ApiServer, eid: str, stage: str, action: str) -> None:
    event = ActionCompleted(
        now=time.time(),
        execution_id=eid,
        stage=stage,
        action=action,
        attempt=1,
        result=ActionResult(succeeded=True),
    )
    state = api.service.store.runs.load(eid)
    assert state is not None
    api.service.store.apply(state.pipeline_name, event)


def test_client_round_trip(api: ApiServer, tmp_path: Path) -> None:
    client = ConveyorClient(api.url)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(definition("demo")))
    assert client.create_pipeline(path)["version"] == 1
    assert client.update_pipeline(definition("demo"))["version"] == 2
    assert [p["name"] for p in client.list_pipelines()] == ["demo"]
    assert client.get_pipeline("demo", version=1)["pipeline"]["version"] == 1

    eid = client.start_execution("demo", {"Env": "qa"})
    assert client.get_execution("demo", eid)["status"] == "InProgress"
    assert [e["pipelineExecutionId"] for e in client.list_executions("demo")] == [eid]
    with pytest.raises(TimeoutError):
        client.wait("demo", eid, timeout=0.2, poll=0.05)

    finish(api, eid, "Source", "Fetch")
    finish(api, eid, "Build", "Compile")
    (pending,) = client.pending_approvals()
    assert (pending.stage, pending.action, pending.execution_id) == ("Approve", "Gate", eid)
    assert pending.custom_data == "ship it?"
    status = client.wait("demo", eid, timeout=5, poll=0.05, until=lambda e: True)
    assert status == "InProgress"

    client.approve("demo", "Approve", "Gate", summary="fine")  # token looked up
    assert client.pending_approvals("demo") == []
    finish(api, eid, "Release", "Publish")
    assert client.wait("demo", eid, timeout=5, poll=0.05) == "Succeeded"
    names = [(d["stageName"], d["status"]) for d in client.list_action_executions("demo", eid)]
    assert ("Approve", "Succeeded") in names
    assert client.pipeline_state("demo")["pipelineVersion"] == 2

    client.delete_pipeline("demo")
    with pytest.raises(ClientError) as exc:
        client.get_pipeline("demo")
    assert error_code(exc.value) == "PipelineNotFoundException"
    assert describe_error(exc.value) == (
        "PipelineNotFoundException: "
        "Account '111122223333' does not have a pipeline with name 'demo'"
    )


def test_endpoint_from_environment(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_URL", api.url)
    assert ConveyorClient().list_pipelines() == []


def test_example_file_without_role_arn_creates_and_starts_without_variables(
    api: ApiServer,
) -> None:
    client = ConveyorClient(api.url)
    example = Path(__file__).resolve().parents[2] / "examples" / "reference-pipeline.json"
    created = client.create_pipeline(example)
    eid = client.start_execution(created["name"])  # no variables: none are sent
    assert client.get_execution(created["name"], eid)["status"] == "InProgress"
