"""Invoke/AWS/CodePipeline against the in-process API (no workers: the target never runs,
so these look at starting, stopping and refusing, not at finishing)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from providers.base import ActionFailed, ApiCredentials, Job, S3Access
from providers.codepipeline_invoke import PipelineInvoke, PipelineInvokeConfig
from tests.auth_support import WORKERS
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from workers import devstack


def make_job(tmp_path: Path, api_url: str, config: dict[str, str], *, attempt: int = 1) -> Job:
    (tmp_path / "work").mkdir(exist_ok=True)
    return Job(
        pipeline_name="invoker",
        execution_id="exec-1",
        stage_name="Invoke",
        action_name="StartTarget",
        attempt=attempt,
        configuration=PipelineInvokeConfig.model_validate(config),
        variables={},
        inputs={},
        outputs={},
        workdir=tmp_path / "work",
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
        api_endpoint=api_url,
        api_credentials=ApiCredentials(WORKERS.access_key_id, WORKERS.secret_access_key),
    )


def executions(cp: Any, name: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = cp.list_pipeline_executions(pipelineName=name)[
        "pipelineExecutionSummaries"
    ]
    return runs


def test_timeout_stops_the_target_and_a_rerun_of_the_attempt_reuses_it(
    tmp_path: Path, api: ApiServer, cp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_PIPELINE_INVOKE_POLL_SECONDS", "0.05")
    cp.create_pipeline(pipeline=definition("target"))
    config = {"PipelineName": "target", "Variables": '[{"name":"Env","value":"prod"}]'}
    job = make_job(tmp_path, api.url, config)
    job.deadline = time.time() + 0.5
    with pytest.raises(ActionFailed) as failed:
        PipelineInvoke().run(job)
    (run,) = executions(cp, "target")
    target_id = run["pipelineExecutionId"]
    assert failed.value.message == (
        f"pipeline 'target' execution {target_id} was stopped: the invoking action timed out"
    )
    execution = cp.get_pipeline_execution(pipelineName="target", pipelineExecutionId=target_id)
    assert execution["pipelineExecution"]["status"] in ("Stopping", "Stopped")
    assert execution["pipelineExecution"]["variables"] == [{"name": "Env", "resolvedValue": "prod"}]

    # The worker running the same attempt again finds the same execution, not a new one.
    job.deadline = time.time() + 0.3
    with pytest.raises(ActionFailed, match=target_id):
        PipelineInvoke().run(job)
    assert [r["pipelineExecutionId"] for r in executions(cp, "target")] == [target_id]
    # A new attempt is a new invocation.
    again = make_job(tmp_path, api.url, config, attempt=2)
    again.deadline = time.time() + 0.3
    with pytest.raises(ActionFailed):
        PipelineInvoke().run(again)
    assert len(executions(cp, "target")) == 2


def test_missing_pipeline(tmp_path: Path, api: ApiServer) -> None:
    job = make_job(tmp_path, api.url, {"PipelineName": "nowhere"})
    with pytest.raises(ActionFailed) as failed:
        PipelineInvoke().run(job)
    assert not failed.value.retryable
    assert failed.value.message.startswith(
        "starting pipeline 'nowhere': no such pipeline ("
    ) and failed.value.message.endswith("); check PipelineName")


def test_undeclared_variable_is_refused_by_the_target(
    tmp_path: Path, api: ApiServer, cp: Any
) -> None:
    cp.create_pipeline(pipeline=definition("target"))
    job = make_job(
        tmp_path, api.url, {"PipelineName": "target", "Variables": '[{"name":"Nope","value":"1"}]'}
    )
    with pytest.raises(
        ActionFailed, match=r"starting pipeline 'target': ValidationException: .*Nope"
    ):
        PipelineInvoke().run(job)
    assert executions(cp, "target") == []


def test_its_own_pipeline_is_refused(tmp_path: Path, api: ApiServer) -> None:
    job = make_job(tmp_path, api.url, {"PipelineName": "invoker"})
    with pytest.raises(ActionFailed, match="is this action's own pipeline"):
        PipelineInvoke().run(job)


def test_unreachable_api_is_retryable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{devstack.free_port()}"
    job = make_job(tmp_path, url, {"PipelineName": "target"})
    with pytest.raises(ActionFailed) as failed:
        PipelineInvoke().run(job)
    assert failed.value.retryable
    assert f"cannot reach Conveyor's API at {url}" in failed.value.message
