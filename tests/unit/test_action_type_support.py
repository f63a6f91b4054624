"""Definition-time answers for action types no provider runs here, with the real registry;
and the configuration checks of Invoke/CodePipeline and Build/Jenkins (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.definition import normalize, validate
from engine.errors import DefinitionError
from providers import default_registry
from providers._jenkins_http import job_path
from providers.codepipeline_invoke import PipelineInvokeConfig

REPO = Path(__file__).resolve().parents[2]
REGISTRY = default_registry(entry_points=False)
DEPLOY = "stages[4].actions[0]"  # the reference pipeline's production deploy


def problems_with_type(category: str, owner: str, provider: str) -> dict[str, str]:
    raw: dict[str, Any] = json.loads((REPO / "examples" / "reference-pipeline.json").read_text())
    raw["stages"][4]["actions"][0]["actionTypeId"] = {
        "category": category,
        "owner": owner,
        "provider": provider,
        "version": "1",
    }
    with pytest.raises(DefinitionError) as info:
        validate(normalize(raw), REGISTRY)
    return {p.path: p.message for p in info.value.problems}


@pytest.mark.parametrize(
    ("category", "provider"),
    [
        ("Deploy", "CodeDeploy"),
        ("Deploy", "ECS"),
        ("Deploy", "CloudFormation"),
        ("Deploy", "ElasticBeanstalk"),
    ],
)
def test_aws_backed_deploys_are_not_supported_yet(category: str, provider: str) -> None:
    problems = problems_with_type(category, "AWS", provider)
    assert problems[f"{DEPLOY}.actionTypeId"] == (
        f"action type Deploy/AWS/{provider}/1 is not supported by this installation yet; "
        "Deploy action types this installation runs: Deploy/AWS/S3/1"
    )


def test_step_functions_is_not_supported_yet() -> None:
    message = problems_with_type("Invoke", "AWS", "StepFunctions")[f"{DEPLOY}.actionTypeId"]
    assert message.startswith(
        "action type Invoke/AWS/StepFunctions/1 is not supported by this installation yet; "
        "Invoke action types this installation runs: "
    )
    assert "Invoke/AWS/CodePipeline/1" in message


def test_a_wrong_owner_gets_a_suggestion() -> None:
    problems = problems_with_type("Build", "AWS", "Jenkins")
    assert problems[f"{DEPLOY}.actionTypeId"] == (
        "unknown action type Build/AWS/Jenkins/1; did you mean Build/Custom/Jenkins/1?"
    )


def test_a_made_up_type_is_unknown() -> None:
    problems = problems_with_type("Deploy", "AWS", "Teleport")
    assert problems[f"{DEPLOY}.actionTypeId"] == (
        "unknown action type Deploy/AWS/Teleport/1; Deploy action types this installation "
        "runs: Deploy/AWS/S3/1"
    )


# -- Invoke/AWS/CodePipeline configuration ----------------------------------------------------


def test_invoke_configuration_as_aws_documents_it() -> None:
    config = PipelineInvokeConfig.model_validate(
        {
            "PipelineName": "downstream",
            "Variables": '[{"name":"VAR1","value":"VALUE1"}]',
            "SourceRevisions": (
                '[{"actionName":"Source","revisionType":"S3_OBJECT_VERSION_ID",'
                '"revisionValue":"zq8mjNEXAMPLE"}]'
            ),
        }
    )
    assert config.variables() == [{"name": "VAR1", "value": "VALUE1"}]
    assert config.source_revisions() == [
        {
            "actionName": "Source",
            "revisionType": "S3_OBJECT_VERSION_ID",
            "revisionValue": "zq8mjNEXAMPLE",
        }
    ]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("Variables", "{not json", "is not valid JSON"),
        ("Variables", '{"name":"A","value":"1"}', "must be a JSON list"),
        ("Variables", '[{"name":"A"}]', "[0].value: Field required"),
        ("Variables", '[{"name":"A","value":"1"},{"name":"A","value":"2"}]', "A is given more"),
        (
            "SourceRevisions",
            '[{"actionName":"S","revisionType":"TAG","revisionValue":"v"}]',
            "[0].revisionType",
        ),
        (
            "SourceRevisions",
            '[{"actionName":"S","revisionType":"COMMIT_ID","revision Value":"v"}]',
            "[0].revisionValue: Field required",
        ),
        ("PipelineName", " ", "must not be empty"),
    ],
)
def test_invoke_configuration_errors_say_where(field: str, value: str, fragment: str) -> None:
    config: dict[str, str] = {"PipelineName": "downstream", field: value}
    with pytest.raises(ValidationError) as info:
        PipelineInvokeConfig.model_validate(config)
    (error,) = info.value.errors()
    assert error["loc"] == (field,)
    assert fragment in error["msg"]


# -- Jenkins job names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("project", "path"),
    [
        ("app", "job/app"),
        ("team/app", "job/team/job/app"),
        ("a b/c#d", "job/a%20b/job/c%23d"),
    ],
)
def test_jenkins_folders_become_nested_job_paths(project: str, path: str) -> None:
    assert job_path(project) == path
