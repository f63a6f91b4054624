"""CloudFormation templates through the Python client and ``conveyor pipelines create``.

AWS::CodePipeline::Pipeline's DisableInboundStageTransitions, Tags and
RestartExecutionOnUpdate are not part of the declaration CreatePipeline takes; the client
carries them out as CloudFormation does. A property or key Conveyor does not know is refused
with its path in Conveyor's words before anything is created, never as botocore's
client-side ParamValidationError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from engine.client import ConveyorClient
from engine.definition import CFN_PROPERTIES
from engine.errors import DefinitionError
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_cli_client import _pascal, conveyor, run

__all__ = ["conveyor"]  # the CLI fixture, shared with test_cli_client


def template(name: str, **extra: Any) -> dict[str, Any]:
    props = _pascal(definition(name))
    assert isinstance(props, dict)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Pipeline": {
                "Type": "AWS::CodePipeline::Pipeline",
                "Properties": {**props, **extra},
            }
        },
    }


def write(tmp_path: Path, data: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


HELD = [
    {"StageName": "Approve", "Reason": "Change freeze until Monday"},
    {"StageName": "Release", "Reason": "Release train leaves at noon"},
]


def inbound(cp: Any, name: str) -> dict[str, Any]:
    return {
        s["stageName"]: s.get("inboundTransitionState")
        for s in cp.get_pipeline_state(name=name)["stageStates"]
    }


def test_template_extras_are_carried_out_by_the_client(
    api: ApiServer, cp: Any, tmp_path: Path
) -> None:
    client = ConveyorClient(api.url)
    tags = [{"Key": "team", "Value": "platform"}]
    path = write(
        tmp_path,
        template("cfn", DisableInboundStageTransitions=HELD, Tags=tags),
    )
    client.create_pipeline(path)

    states = inbound(cp, "cfn")
    assert states["Approve"]["enabled"] is False
    assert states["Approve"]["disabledReason"] == "Change freeze until Monday"
    assert states["Release"]["disabledReason"] == "Release train leaves at noon"
    assert states["Build"]["enabled"] is True
    arn = cp.get_pipeline(name="cfn")["metadata"]["pipelineArn"]
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == [
        {"key": "team", "value": "platform"}
    ]

    # RestartExecutionOnUpdate: an update starts an execution of the new version.
    def runs() -> set[str]:
        summaries = cp.list_pipeline_executions(pipelineName="cfn")["pipelineExecutionSummaries"]
        return {s["pipelineExecutionId"] for s in summaries}

    before = runs()
    client.update_pipeline(write(tmp_path, template("cfn", RestartExecutionOnUpdate=True)))
    (eid,) = runs() - before
    execution = cp.get_pipeline_execution(pipelineName="cfn", pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["pipelineVersion"] == 2


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ({"Bogus": 1}, "Properties.Bogus", "not a property of AWS::CodePipeline::Pipeline"),
        (
            {"DisableInboundStageTransitions": [{"StageName": "Nope", "Reason": "x"}]},
            "DisableInboundStageTransitions[0].StageName",
            "no stage is named 'Nope'",
        ),
        (
            {"DisableInboundStageTransitions": [{"StageName": "Build"}]},
            "DisableInboundStageTransitions[0].Reason",
            "required",
        ),
        (
            {"DisableInboundStageTransitions": [{"StageName": "Build", "Reason": "a;b"}]},
            "DisableInboundStageTransitions[0].Reason",
            "pattern",
        ),
        ({"Tags": [{"Key": "k"}]}, "Tags[0].value", "must not be null"),
        ({"ArtifactStores": []}, "artifactStores", "not supported by Conveyor yet"),
    ],
)
def test_what_conveyor_cannot_honour_is_refused_before_anything_exists(
    api: ApiServer, cp: Any, tmp_path: Path, extra: dict[str, Any], path: str, words: str
) -> None:
    client = ConveyorClient(api.url)
    with pytest.raises(DefinitionError) as exc:
        client.create_pipeline(write(tmp_path, template("bad", **extra)))
    assert f"{path}:" in exc.value.message
    assert words in exc.value.message
    assert cp.list_pipelines()["pipelines"] == []


def test_a_nested_unknown_key_is_conveyors_error_not_botocores(api: ApiServer, cp: Any) -> None:
    decl = definition("nested")
    decl["stages"][1]["actions"][0]["retries"] = 3
    with pytest.raises(DefinitionError) as exc:
        ConveyorClient(api.url).create_pipeline(decl)
    assert "stages[1].actions[0].retries: unknown key" in exc.value.message
    assert cp.list_pipelines()["pipelines"] == []


def test_every_cloudformation_property_is_accounted_for() -> None:
    """The list in CloudFormation's AWS::CodePipeline::Pipeline reference."""
    assert {
        "ArtifactStore",
        "ArtifactStores",
        "DisableInboundStageTransitions",
        "ExecutionMode",
        "Name",
        "PipelineType",
        "RestartExecutionOnUpdate",
        "RoleArn",
        "Stages",
        "Tags",
        "Triggers",
        "Variables",
    } == CFN_PROPERTIES


def test_the_cli_honours_and_refuses_the_same(
    api: ApiServer, cp: Any, conveyor: click.Group, tmp_path: Path
) -> None:
    path = write(tmp_path, template("cli", DisableInboundStageTransitions=HELD[:1]))
    out = run(conveyor, api, "pipelines", "create", str(path))
    assert out.exit_code == 0, out.output
    assert inbound(cp, "cli")["Approve"]["disabledReason"] == "Change freeze until Monday"

    bad = write(tmp_path, template("cli2", RestartExecutionOnUpdat=True), "bad.yaml")
    out = run(conveyor, api, "pipelines", "create", str(bad))
    assert out.exit_code == 1
    assert "Properties.RestartExecutionOnUpdat: not a property" in out.output
    assert "Traceback" not in out.output and "ParamValidation" not in out.output
    assert [p["name"] for p in cp.list_pipelines()["pipelines"]] == ["cli"]
