"""PutActionRevision and ListDeployActionExecutionTargets through boto3."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.errors import ConcurrentExecutionsLimitError
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import MISSING, code_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def revision(rev: str) -> dict[str, Any]:
    return {"revisionId": rev, "revisionChangeId": f"change-{rev}", "created": NOW}


def put(cp: Any, rev: str, **kw: str) -> dict[str, Any]:
    args = {"pipelineName": "demo", "stageName": "Source", "actionName": "Fetch", **kw}
    return dict(cp.put_action_revision(**args, actionRevision=revision(rev)))


def test_a_new_revision_starts_a_pinned_execution_once(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    first = put(cp, "v1")
    assert first["newRevision"] is True
    got = cp.get_pipeline_execution(
        pipelineName="demo", pipelineExecutionId=first["pipelineExecutionId"]
    )["pipelineExecution"]
    assert got["trigger"]["triggerType"] == "PutActionRevision"
    assert got["trigger"]["triggerDetail"] == "Fetch"
    # The S3 source is pinned to that object version (what its worker will fetch).
    assert [(r["name"], r["revisionId"]) for r in got["artifactRevisions"]] == [("SourceOut", "v1")]
    state = api.service.store.runs.load(first["pipelineExecutionId"])
    assert state is not None
    assert state.source_revisions == [
        {"actionName": "Fetch", "revisionType": "S3_OBJECT_VERSION_ID", "revisionId": "v1"}
    ]

    again = put(cp, "v1")
    assert again["newRevision"] is False
    assert "pipelineExecutionId" not in again
    summaries = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]
    assert len(summaries) == 1

    second = put(cp, "v2")
    assert second["newRevision"] is True
    assert second["pipelineExecutionId"] != first["pipelineExecutionId"]
    summaries = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]
    assert len(summaries) == 2


def test_put_action_revision_errors(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    for kw, code in (
        ({"pipelineName": "nope"}, "PipelineNotFoundException"),
        ({"stageName": "Nope"}, "StageNotFoundException"),
        ({"actionName": "Nope"}, "ActionNotFoundException"),
        ({"stageName": "Build", "actionName": "Compile"}, "ValidationException"),
    ):
        with pytest.raises(ClientError) as err:
            put(cp, "v1", **kw)
        assert code_of(err) == code, kw
    assert cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"] == []


def test_deploy_targets_of_a_known_and_an_unknown_action_execution(cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    cp.start_pipeline_execution(name="demo")
    details = cp.list_action_executions(pipelineName="demo")["actionExecutionDetails"]
    action_execution_id = details[0]["actionExecutionId"]

    got = cp.list_deploy_action_execution_targets(
        pipelineName="demo", actionExecutionId=action_execution_id
    )
    assert got["targets"] == []
    # pipelineName is optional in the model: the id is looked up across pipelines.
    assert (
        cp.list_deploy_action_execution_targets(actionExecutionId=action_execution_id)["targets"]
        == []
    )

    with pytest.raises(ClientError) as err:
        cp.list_deploy_action_execution_targets(pipelineName="demo", actionExecutionId=MISSING)
    assert code_of(err) == "ActionExecutionNotFoundException"
    with pytest.raises(ClientError) as err:
        cp.list_deploy_action_execution_targets(pipelineName="nope", actionExecutionId=MISSING)
    assert code_of(err) == "PipelineNotFoundException"


def test_a_refused_start_gives_the_revision_back(
    api: ApiServer, cp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revision is claimed before the start; if the start is refused, reporting the same
    revision again must start it then (not answer newRevision: false forever)."""
    cp.create_pipeline(pipeline=definition("demo"))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConcurrentExecutionsLimitError("the pipeline is at its limit")

    with monkeypatch.context() as patched:
        patched.setattr(api.service, "start_execution", refuse)
        with pytest.raises(ClientError) as err:
            put(cp, "v1")
        assert code_of(err) == "ConcurrentPipelineExecutionsLimitExceededException"
    assert put(cp, "v1")["newRevision"] is True
