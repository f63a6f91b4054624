"""CreatePipeline starts the first execution, as AWS does (CONVEYOR_START_ON_CREATE), with
trigger type CreatePipeline; switched off, a new pipeline waits. The API server here runs
no workers: the execution's effects stay in the outbox, which is all these tests need."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from engine.settings import Settings
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from workers.cli_client import register


@pytest.fixture
def starting(api: ApiServer) -> Iterator[ApiServer]:
    """The API server with start-on-create on, as the product's default is."""
    api.service.start_on_create = True
    yield api
    api.service.start_on_create = False


def test_the_setting_is_on_by_default() -> None:
    assert Settings.model_fields["start_on_create"].default is True


def test_create_pipeline_starts_an_execution_triggered_by_create_pipeline(
    starting: ApiServer, cp: Any
) -> None:
    cp.create_pipeline(pipeline=definition("demo"))
    summaries = cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]
    assert len(summaries) == 1
    (summary,) = summaries
    assert summary["status"] == "InProgress"
    assert summary["trigger"]["triggerType"] == "CreatePipeline"
    got = cp.get_pipeline_execution(
        pipelineName="demo", pipelineExecutionId=summary["pipelineExecutionId"]
    )["pipelineExecution"]
    assert got["trigger"]["triggerType"] == "CreatePipeline"
    # As on AWS, the detail is who created it: the signed caller's ARN.
    assert got["trigger"]["triggerDetail"] == "arn:aws:iam::111122223333:user/test-admin"
    assert got["pipelineVersion"] == 1
    # UpdatePipeline starts nothing (AWS starts on create only).
    cp.update_pipeline(pipeline=definition("demo"))
    assert len(cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"]) == 1


def test_with_the_setting_off_create_pipeline_starts_nothing(api: ApiServer, cp: Any) -> None:
    assert api.service.start_on_create is False  # the test fixtures' default
    cp.create_pipeline(pipeline=definition("demo"))
    assert cp.list_pipeline_executions(pipelineName="demo")["pipelineExecutionSummaries"] == []


def test_cli_create_names_the_execution_it_started(starting: ApiServer, tmp_path: Path) -> None:
    root = click.Group("conveyor")
    register(root)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(definition("demo")))
    out = CliRunner().invoke(
        root, ["--endpoint", starting.url, "pipelines", "create", str(path)], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    assert "created pipeline demo (version 1)" in out.output
    assert "(trigger CreatePipeline)" in out.output
