"""engine.definition: loading every accepted shape, and every problem reported with its path.

Pure units against fake providers (tests/unit/_fake_providers.py) so they don't move when a
real provider's configuration grows; one test checks the real registry takes the example.
"""

from __future__ import annotations

import copy
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.definition import (
    PipelineDeclaration,
    check,
    load_file,
    normalize,
    parse_document,
    validate,
)
from engine.errors import DefinitionError, Problem
from tests.unit._fake_providers import fake_registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_JSON = REPO / "examples" / "reference-pipeline.json"
EXAMPLE_CFN = REPO / "examples" / "reference-pipeline.cfn.yaml"
REGISTRY = fake_registry()

# The approval stage from the CodePipeline reference (seed/codepipeline-reference.txt), verbatim.
SEED_APPROVAL_SNIPPET = """\
ApprovalStage:
  Type: StageDeclaration
  Name: ManualApproval
  Actions:
    - Name: ApproveProduction
      ActionTypeId:
        Category: Approval
        Owner: AWS
        Provider: Manual
        Version: "1"
      Configuration:
        NotificationArn: !Ref ApprovalSNSTopic
        CustomData: "Review test results at: https://dashboard.example.com"
        ExternalEntityLink: "https://jira.example.com/RELEASE-123"
"""


# --------------------------------------------------------------------------- builders


def _type(category: str, provider: str) -> dict[str, str]:
    return {"category": category, "owner": "AWS", "provider": provider, "version": "1"}


def source(name: str, out: str, run_order: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": _type("Source", "S3"),
        "runOrder": run_order,
        "configuration": {"S3Bucket": "src", "S3ObjectKey": f"{name}.zip"},
        "outputArtifacts": [{"name": out}],
    }


def codebuild(
    name: str,
    ins: list[str],
    outs: list[str] = [],  # noqa: B006 - never mutated
    run_order: int = 1,
    category: str = "Build",
) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": _type(category, "CodeBuild"),
        "runOrder": run_order,
        "configuration": {"ProjectName": f"{name}-project"},
        "inputArtifacts": [{"name": n} for n in ins],
        "outputArtifacts": [{"name": n} for n in outs],
    }


def deploy(name: str, art: str, run_order: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": _type("Deploy", "S3"),
        "runOrder": run_order,
        "configuration": {"BucketName": f"{name.lower()}-bucket", "Extract": "true"},
        "inputArtifacts": [{"name": art}],
    }


def manual(name: str, run_order: int = 1) -> dict[str, Any]:
    return {"name": name, "actionTypeId": _type("Approval", "Manual"), "runOrder": run_order}


def reference() -> dict[str, Any]:
    """Stages: 0 Source, 1 Build, 2 DeployStaging, 3 Approve, 4 DeployProduction."""
    data: dict[str, Any] = json.loads(EXAMPLE_JSON.read_text())
    return data


def pascal(node: Any) -> Any:
    """camelCase CodePipeline JSON as CloudFormation writes it (configuration keys as-is)."""
    if isinstance(node, list):
        return [pascal(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {
        k[:1].upper() + k[1:]: dict(v) if k == "configuration" else pascal(v)
        for k, v in node.items()
    }


def problems_of(raw: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        validate(normalize(raw), REGISTRY)
    return info.value.problems


def assert_problem(problems: list[Problem], path: str, fragment: str) -> None:
    at_path = [p.message for p in problems if p.path == path]
    assert any(fragment in m for m in at_path), (
        f"no problem at {path!r} mentioning {fragment!r}; got:\n"
        + "\n".join(str(p) for p in problems)
    )


REFERENCE = validate(reference(), REGISTRY)


# --------------------------------------------------------------------------- loading


def test_example_is_the_reference_pipeline() -> None:
    decl = load_file(EXAMPLE_JSON, REGISTRY)
    assert [s.name for s in decl.stages] == [
        "Source",
        "Build",
        "DeployStaging",
        "Approve",
        "DeployProduction",
    ]
    assert decl.pipeline_type == "V2"
    assert decl.execution_mode == "SUPERSEDED"
    assert decl.artifact_store is not None
    assert decl.artifact_store.location == "conveyor-demo-artifacts"
    assert decl.stages[1].actions[0].input_artifacts[0].name == "SourceOutput"


def test_bare_json_loads() -> None:
    assert validate(parse_document(json.dumps(reference())), REGISTRY) == REFERENCE


def test_get_pipeline_wrapper_loads() -> None:
    wrapped = {
        "pipeline": {**reference(), "version": 3},
        "metadata": {
            "pipelineArn": "arn:aws:codepipeline:us-east-1:000000000000:conveyor-reference",
            "created": "2024-01-01T00:00:00Z",
            "updated": "2024-01-02T00:00:00Z",
        },
    }
    decl = validate(parse_document(json.dumps(wrapped)), REGISTRY)
    assert decl.version == 3
    assert decl.model_copy(update={"version": None}) == REFERENCE


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "wrapped"])
def test_yaml_loads(wrap: bool) -> None:
    data = {"pipeline": reference()} if wrap else reference()
    text = yaml.safe_dump(data, sort_keys=False)
    assert validate(parse_document(text), REGISTRY) == REFERENCE


def _template(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Bucket": {"Type": "AWS::S3::Bucket"},
            "Pipeline": {"Type": "AWS::CodePipeline::Pipeline", "Properties": properties},
        },
    }


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(_template, id="template"),
        pytest.param(
            lambda p: {"Type": "AWS::CodePipeline::Pipeline", "Properties": p}, id="resource"
        ),
        pytest.param(lambda p: p, id="properties"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_cloudformation_shapes_load(
    shape: Callable[[dict[str, Any]], dict[str, Any]], fmt: str
) -> None:
    doc = shape(pascal(reference()))
    text = json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc)
    assert validate(parse_document(text), REGISTRY) == REFERENCE


def _cfn_with_seed_stage() -> str:
    """The reference pipeline as a template, its approval stage the seed's snippet as written."""
    props = pascal(reference())
    stages = [yaml.safe_dump([s], sort_keys=False) for s in props.pop("Stages")]
    stages[3] = "- " + textwrap.indent(SEED_APPROVAL_SNIPPET, "  ")[2:]
    body = yaml.safe_dump(
        {"Resources": {"Pipeline": {"Type": "AWS::CodePipeline::Pipeline", "Properties": props}}},
        sort_keys=False,
    )
    return (
        body
        + "      Stages:\n"
        + "".join(textwrap.indent(s, "        ") for s in stages)
        + "  ApprovalSNSTopic:\n    Type: AWS::SNS::Topic\n"
    )


def test_seed_approval_snippet_loads_inside_a_pipeline() -> None:
    decl = validate(parse_document(_cfn_with_seed_stage()), REGISTRY)
    stage = decl.stages[3]
    assert stage.name == "ManualApproval"
    (action,) = stage.actions
    assert action.name == "ApproveProduction"
    assert str(action.action_type_id) == "Approval/AWS/Manual/1"
    assert action.configuration == {
        "NotificationArn": "ApprovalSNSTopic",
        "CustomData": "Review test results at: https://dashboard.example.com",
        "ExternalEntityLink": "https://jira.example.com/RELEASE-123",
    }
    # Everything but the approval stage is the JSON reference pipeline.
    assert decl.stages[:3] + decl.stages[4:] == REFERENCE.stages[:3] + REFERENCE.stages[4:]


def test_cfn_example_file_loads() -> None:
    decl = load_file(EXAMPLE_CFN, REGISTRY)
    assert decl.name == "conveyor-reference"
    assert decl.stages[3].name == "ManualApproval"
    assert decl.stages[3].actions[0].configuration["NotificationArn"] == "ApprovalSNSTopic"
    # YAML booleans become the strings CodePipeline expects; keys keep their PascalCase.
    assert decl.stages[0].actions[0].configuration["PollForSourceChanges"] == "false"
    assert decl.stages[2].actions[0].configuration == {
        "BucketName": "conveyor-demo-staging",
        "Extract": "true",
    }
    assert (
        textwrap.indent(SEED_APPROVAL_SNIPPET, " " * 10).replace(
            " " * 10 + "ApprovalStage", "        - ApprovalStage"
        )
        in EXAMPLE_CFN.read_text()
    )


def test_cfn_intrinsics_resolve_to_names() -> None:
    props = pascal(reference())
    text = yaml.safe_dump(_template(props), sort_keys=False)
    text = text.replace("Location: conveyor-demo-artifacts", "Location: !Ref Bucket")
    text = text.replace("ProjectName: demo-build", "ProjectName: !Sub '${AWS::StackName}-build'")
    text = text.replace(
        "BucketName: conveyor-demo-staging", "BucketName: !Join ['-', [!Ref Bucket, staging]]"
    )
    text = text.replace("Version: '1'", "Version: 1")  # CloudFormation stringifies numbers
    decl = validate(parse_document(text + "      RoleArn: !GetAtt Role.Arn\n"), REGISTRY)
    assert decl.artifact_store is not None and decl.artifact_store.location == "Bucket"
    assert decl.role_arn == "Role.Arn"
    assert decl.stages[1].actions[0].configuration["ProjectName"] == "${AWS::StackName}-build"
    assert decl.stages[2].actions[0].configuration["BucketName"] == "Bucket-staging"
    assert all(a.action_type_id.version == "1" for s in decl.stages for a in s.actions)


def test_cfn_unresolvable_intrinsic_is_reported_at_its_path() -> None:
    text = _cfn_with_seed_stage().replace(
        "!Ref ApprovalSNSTopic", "!ImportValue shared-approval-topic"
    )
    with pytest.raises(DefinitionError) as info:
        parse_document(text)
    assert_problem(
        info.value.problems,
        "stages[3].actions[0].configuration.NotificationArn",
        "Fn::ImportValue cannot be resolved",
    )


def test_cfn_pipeline_without_name_takes_its_logical_id() -> None:
    props = pascal(reference())
    del props["Name"]
    decl = validate(parse_document(json.dumps(_template(props))), REGISTRY)
    assert decl.name == "Pipeline"


def test_cfn_template_must_hold_exactly_one_pipeline() -> None:
    doc = _template(pascal(reference()))
    doc["Resources"]["Other"] = doc["Resources"]["Pipeline"]
    with pytest.raises(DefinitionError) as info:
        parse_document(json.dumps(doc))
    assert_problem(info.value.problems, "Resources", "found 2")


def test_json_path_does_not_coerce_configuration() -> None:
    raw = reference()
    raw["stages"][2]["actions"][0]["configuration"]["Extract"] = True
    assert_problem(
        problems_of(raw), "stages[2].actions[0].configuration.Extract", "must be a string"
    )


@pytest.mark.parametrize("mode", ["json", "yaml", "cfn"])
def test_round_trip(mode: str) -> None:
    text = {
        "json": lambda: EXAMPLE_JSON.read_text(),
        "yaml": lambda: yaml.safe_dump(reference()),
        "cfn": lambda: EXAMPLE_CFN.read_text(),
    }[mode]()
    decl = validate(parse_document(text), REGISTRY)
    aws = decl.to_aws()
    assert validate(aws, REGISTRY) == decl
    assert validate(parse_document(json.dumps(aws)), REGISTRY) == decl
    assert aws["stages"][0]["actions"][0]["actionTypeId"]["category"] == "Source"


def test_same_action_name_in_two_stages_is_fine() -> None:
    raw = reference()
    assert raw["stages"][2]["actions"][0]["name"] == raw["stages"][4]["actions"][0]["name"]
    validate(raw, REGISTRY)


def test_input_from_lower_run_order_in_the_same_stage_is_fine() -> None:
    raw = reference()
    raw["stages"][1]["actions"].append(codebuild("Test", ["BuildOutput"], [], 2, "Test"))
    validate(raw, REGISTRY)


def test_run_order_not_declaration_order_decides_visibility() -> None:
    raw = reference()
    raw["stages"][1]["actions"].insert(0, codebuild("Test", ["BuildOutput"], [], 2, "Test"))
    decl = validate(raw, REGISTRY)
    assert decl.stages[1].groups() == [[1], [0]]


def test_variable_references_that_can_resolve_are_fine() -> None:
    raw = reference()
    raw["variables"] = [{"name": "Extract", "defaultValue": "true"}]
    raw["stages"][1]["actions"][0]["namespace"] = "BuildVariables"
    cfg = raw["stages"][2]["actions"][0]["configuration"]
    cfg["BucketName"] = "#{BuildVariables.Bucket}-#{codepipeline.PipelineExecutionId}"
    # Only known at run time, so the provider's Literal["true", "false"] doesn't judge it now.
    cfg["Extract"] = "#{variables.Extract}"
    validate(raw, REGISTRY)


def test_load_file_missing() -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_file(REPO / "examples" / "no-such-pipeline.json", REGISTRY)


def test_real_registry_accepts_the_examples() -> None:
    try:
        from providers import default_registry
    except ImportError:
        pytest.skip("providers.default_registry is not written yet")
    registry = default_registry()
    json_decl = load_file(EXAMPLE_JSON, registry)
    cfn_decl = load_file(EXAMPLE_CFN, registry)
    assert len(json_decl.stages) == len(cfn_decl.stages) == 5


# --------------------------------------------------------------------------- malformed

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting ``a.b[2].c`` (dotted keys, [n] indexes) to value; DELETE removes."""

    def mutate(raw: dict[str, Any]) -> None:
        parts: list[str | int] = []
        for piece in path.split("."):
            name, *idx = piece.replace("]", "").split("[")
            if name:
                parts.append(name)
            parts.extend(int(i) for i in idx)
        node: Any = raw
        for part in parts[:-1]:
            node = node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value

    return mutate


DELETE = object()


def _add_action(stage: int, action: dict[str, Any]) -> Mutation:
    return lambda raw: raw["stages"][stage]["actions"].append(action)


def _all(*mutations: Mutation) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        for m in mutations:
            m(raw)

    return mutate


def _rename_artifact(old: str, new: str) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        for stage in raw["stages"]:
            for action in stage["actions"]:
                for key in ("inputArtifacts", "outputArtifacts"):
                    for art in action.get(key, []):
                        if art["name"] == old:
                            art["name"] = new

    return mutate


B = "stages[1].actions[0]"  # the Build action
D = "stages[2].actions[0]"  # the staging Deploy action
M = "stages[3].actions[0]"  # the Manual approval

MALFORMED: list[tuple[str, Mutation, str, str]] = [
    ("bad-pipeline-name", _set("name", "my pipeline!"), "name", "1-100 characters"),
    ("long-pipeline-name", _set("name", "p" * 101), "name", "1-100 characters"),
    ("missing-name", _set("name", DELETE), "name", "required"),
    ("name-not-string", _set("name", 7), "name", "must be a string"),
    ("missing-stages", _set("stages", DELETE), "stages", "required"),
    ("stages-not-a-list", _set("stages", "Source"), "stages", "valid list"),
    ("one-stage", lambda r: r.update(stages=r["stages"][:1]), "stages", "at least two stages"),
    (
        "build-in-first-stage",
        _add_action(0, codebuild("Early", ["SourceOutput"], [], 2)),
        "stages[0].actions[1].actionTypeId.category",
        "first stage may contain only Source actions",
    ),
    (
        "source-in-second-stage",
        _add_action(1, source("Late", "LateOutput")),
        "stages[1].actions[1].actionTypeId.category",
        "Source actions may appear only in the first stage",
    ),
    (
        "duplicate-stage-names",
        _set("stages[4].name", "DeployStaging"),
        "stages[4].name",
        "duplicate stage name 'DeployStaging'",
    ),
    ("bad-stage-name", _set("stages[2].name", "Deploy Staging"), "stages[2].name", "1-100"),
    ("empty-actions", _set("stages[3].actions", []), "stages[3].actions", "at least one action"),
    ("missing-actions", _set("stages[3].actions", DELETE), "stages[3].actions", "required"),
    (
        "duplicate-action-names",
        _add_action(2, deploy("Deploy", "BuildOutput", 2)),
        "stages[2].actions[1].name",
        "duplicate action name 'Deploy' in stage 'DeployStaging'",
    ),
    ("bad-action-name", _set(f"{B}.name", "Build it"), f"{B}.name", "1-100 characters"),
    ("run-order-0", _set(f"{B}.runOrder", 0), f"{B}.runOrder", "between 1 and 999"),
    ("run-order-1000", _set(f"{B}.runOrder", 1000), f"{B}.runOrder", "between 1 and 999"),
    ("run-order-not-int", _set(f"{B}.runOrder", "first"), f"{B}.runOrder", "valid integer"),
    (
        "input-not-produced",
        _set(f"{D}.inputArtifacts[0].name", "Nope"),
        f"{D}.inputArtifacts[0].name",
        "artifact 'Nope' is not an output of an earlier action (it is produced by no action)",
    ),
    (
        "input-produced-later",
        _all(
            _add_action(2, codebuild("Report", ["SourceOutput"], ["TestReport"], 1, "Test")),
            lambda r: r["stages"][1]["actions"][0]["inputArtifacts"].append({"name": "TestReport"}),
        ),
        f"{B}.inputArtifacts[1].name",
        "produced by a later action",
    ),
    (
        "input-same-stage-same-run-order",
        _add_action(1, codebuild("Test", ["BuildOutput"], [], 1, "Test")),
        "stages[1].actions[1].inputArtifacts[0].name",
        "artifact 'BuildOutput' is not an output of an earlier action",
    ),
    (
        "input-twice",
        _set(f"{B}.inputArtifacts", [{"name": "SourceOutput"}, {"name": "SourceOutput"}]),
        f"{B}.inputArtifacts[1].name",
        "already an input of this action",
    ),
    (
        "duplicate-output-names",
        _add_action(1, codebuild("Test", ["BuildOutput"], ["SourceOutput"], 2, "Test")),
        "stages[1].actions[1].outputArtifacts[0].name",
        "output artifact name 'SourceOutput' is already used",
    ),
    (
        "bad-artifact-name",
        _rename_artifact("SourceOutput", "Source.Output"),
        "stages[0].actions[0].outputArtifacts[0].name",
        "a-zA-Z0-9_-",
    ),
    (
        "unknown-provider",
        _set(f"{B}.actionTypeId.provider", "Jenkins"),
        f"{B}.actionTypeId",
        "unknown action type Build/AWS/Jenkins/1",
    ),
    (
        "unknown-owner",
        _set(f"{B}.actionTypeId.owner", "ThirdParty"),
        f"{B}.actionTypeId",
        "unknown action type Build/ThirdParty/CodeBuild/1",
    ),
    (
        "unknown-category",
        _set(f"{B}.actionTypeId.category", "Compile"),
        f"{B}.actionTypeId.category",
        "Input should be 'Source', 'Build'",
    ),
    ("missing-action-type", _set(f"{B}.actionTypeId", DELETE), f"{B}.actionTypeId", "required"),
    (
        "missing-required-config",
        _set("stages[4].actions[0].configuration.BucketName", DELETE),
        "stages[4].actions[0].configuration.BucketName",
        "required",
    ),
    (
        "unknown-config-key",
        _set(f"{B}.configuration.Projectname", "typo"),
        f"{B}.configuration.Projectname",
        "unknown key",
    ),
    (
        "extract-false-without-object-key",
        _set(f"{D}.configuration.Extract", "false"),
        f"{D}.configuration",
        'ObjectKey is required when Extract is "false"',
    ),
    (
        "extract-not-boolean",
        _set(f"{D}.configuration.Extract", "yes"),
        f"{D}.configuration.Extract",
        "Input should be 'true' or 'false'",
    ),
    (
        "config-number",
        _set(f"{B}.configuration.ProjectName", 42),
        f"{B}.configuration.ProjectName",
        'must be a string, got number 42 (write "42")',
    ),
    (
        "config-bool",
        _set(f"{D}.configuration.Extract", True),
        f"{D}.configuration.Extract",
        'must be a string, got boolean true (write "true")',
    ),
    (
        "config-object",
        _set(f"{B}.configuration.EnvironmentVariables", [{"name": "A", "value": "1"}]),
        f"{B}.configuration.EnvironmentVariables",
        "must be a string, got a list",
    ),
    (
        "too-many-inputs-for-deploy-s3",
        _set(f"{D}.inputArtifacts", [{"name": "SourceOutput"}, {"name": "BuildOutput"}]),
        f"{D}.inputArtifacts",
        "Deploy/AWS/S3/1 takes 1 input artifacts, got 2",
    ),
    (
        "output-for-deploy-s3",
        _set(f"{D}.outputArtifacts", [{"name": "Deployed"}]),
        f"{D}.outputArtifacts",
        "takes 0 output artifacts, got 1",
    ),
    (
        "no-output-for-source",
        _set("stages[0].actions[0].outputArtifacts", []),
        "stages[0].actions[0].outputArtifacts",
        "Source/AWS/S3/1 takes 1 output artifacts, got 0",
    ),
    (
        "codebuild-without-input",
        _set(f"{B}.inputArtifacts", []),
        f"{B}.inputArtifacts",
        "Build/AWS/CodeBuild/1 takes 1 to 5 input artifacts, got 0",
    ),
    ("bad-namespace", _set(f"{B}.namespace", "build vars"), f"{B}.namespace", "A-Za-z0-9@-_"),
    (
        "duplicate-namespace",
        _all(_set(f"{B}.namespace", "Vars"), _set(f"{D}.namespace", "Vars")),
        f"{D}.namespace",
        "namespace 'Vars' is already in use",
    ),
    ("reserved-namespace", _set(f"{B}.namespace", "codepipeline"), f"{B}.namespace", "reserved"),
    (
        "timeout-too-short",
        _set(f"{M}.timeoutInMinutes", 4),
        f"{M}.timeoutInMinutes",
        "between 5 and 86400",
    ),
    (
        "timeout-too-long",
        _set(f"{M}.timeoutInMinutes", 86401),
        f"{M}.timeoutInMinutes",
        "between 5 and 86400",
    ),
    (
        "duplicate-variables",
        _set("variables", [{"name": "Env"}, {"name": "Env", "defaultValue": "x"}]),
        "variables[1].name",
        "duplicate variable name 'Env'",
    ),
    ("bad-variable-name", _set("variables", [{"name": "my var"}]), "variables[0].name", "1-128"),
    (
        "execution-mode-invalid",
        _set("executionMode", "PARALLELISED"),
        "executionMode",
        "Input should be 'SUPERSEDED', 'QUEUED' or 'PARALLEL'",
    ),
    (
        "queued-needs-v2",
        _all(_set("pipelineType", "V1"), _set("executionMode", "QUEUED")),
        "executionMode",
        "QUEUED needs pipelineType V2",
    ),
    ("pipeline-type-invalid", _set("pipelineType", "V3"), "pipelineType", "'V1' or 'V2'"),
    (
        "artifact-store-not-s3",
        _set("artifactStore.type", "GCS"),
        "artifactStore.type",
        "Input should be 'S3'",
    ),
    (
        "artifact-store-empty-location",
        _set("artifactStore.location", ""),
        "artifactStore.location",
        "required",
    ),
    (
        "unknown-namespace-reference",
        _set(f"{D}.configuration.BucketName", "#{Nowhere.Bucket}"),
        f"{D}.configuration.BucketName",
        "namespace 'Nowhere' is not set by any action",
    ),
    (
        "later-namespace-reference",
        _all(
            _set(f"{D}.namespace", "StagingVars"),
            _set(f"{B}.configuration.ProjectName", "#{StagingVars.Project}"),
        ),
        f"{B}.configuration.ProjectName",
        "namespace 'StagingVars' is set only by a later action",
    ),
    (
        "undeclared-pipeline-variable",
        _set(f"{D}.configuration.BucketName", "#{variables.Bucket}"),
        f"{D}.configuration.BucketName",
        "pipeline variable 'Bucket' is not declared",
    ),
    (
        "trigger-names-no-source-action",
        _set(
            "triggers",
            [
                {
                    "providerType": "CodeStarSourceConnection",
                    "gitConfiguration": {"sourceActionName": "Build"},
                }
            ],
        ),
        "triggers[0].gitConfiguration.sourceActionName",
        "'Build' is not an action of the first stage",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [pytest.param(m, p, f, id=i) for i, m, p, f in MALFORMED],
)
def test_malformed_definition(mutate: Mutation, path: str, fragment: str) -> None:
    raw = reference()
    mutate(raw)
    assert_problem(problems_of(raw), path, fragment)


def test_malformed_cases_are_many_and_distinct() -> None:
    assert len(MALFORMED) >= 30
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED)


UNPARSEABLE: list[tuple[str, str, str, str]] = [
    ("not-json-or-yaml", '{"name": "p", "stages": [', "", "not valid JSON or YAML"),
    ("tabs-and-braces", "name: p\n\tstages: {{", "", "not valid JSON or YAML"),
    ("plain-words", "this is not a pipeline", "", "expected an object at the top level, got str"),
    ("empty", "", "", "expected an object at the top level, got nothing"),
    ("top-level-list", json.dumps([reference()]), "", "expected an object at the top level"),
    ("duplicate-json-key", '{"name": "a", "name": "b", "stages": []}', "", "duplicate key 'name'"),
    ("duplicate-yaml-key", "name: a\nstages: []\nname: b\n", "", "duplicate key 'name'"),
    (
        "resource-without-properties",
        json.dumps({"Type": "AWS::CodePipeline::Pipeline"}),
        "Properties",
        "required",
    ),
    (
        "template-without-pipeline",
        json.dumps({"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}),
        "Resources",
        "found 0",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [pytest.param(t, p, f, id=i) for i, t, p, f in UNPARSEABLE],
)
def test_unparseable_document(text: str, path: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_document(text, source="pipeline.yaml")
    assert_problem(info.value.problems, path, fragment)
    assert "pipeline.yaml" in str(info.value) or path


def test_every_problem_is_reported_at_once() -> None:
    raw = reference()
    raw["name"] = "bad name"
    raw["stages"][4]["name"] = "Build"
    del raw["stages"][4]["actions"][0]["configuration"]["BucketName"]
    raw["stages"][2]["actions"][0]["inputArtifacts"][0]["name"] = "Missing"
    raw["stages"][1]["actions"][0]["runOrder"] = 1000
    raw["stages"][1]["actions"].append(source("Again", "Again"))
    problems = problems_of(raw)
    expected = {
        ("name", "1-100 characters"),
        ("stages[4].name", "duplicate stage name 'Build'"),
        ("stages[4].actions[0].configuration.BucketName", "required"),
        ("stages[2].actions[0].inputArtifacts[0].name", "artifact 'Missing'"),
        ("stages[1].actions[0].runOrder", "between 1 and 999"),
        ("stages[1].actions[1].actionTypeId.category", "only in the first stage"),
    }
    for path, fragment in expected:
        assert_problem(problems, path, fragment)
    assert len(problems) == len(expected)


def test_type_errors_are_reported_together() -> None:
    raw = reference()
    raw["stages"][1]["actions"][0]["runOrder"] = "first"
    raw["stages"][2]["actions"][0]["configuration"]["Extract"] = False
    raw["executionMode"] = "SOMETIMES"
    problems = problems_of(raw)
    assert {p.path for p in problems} == {
        "stages[1].actions[0].runOrder",
        "stages[2].actions[0].configuration.Extract",
        "executionMode",
    }


def test_definition_error_carries_paths_and_lists_them_all() -> None:
    raw = reference()
    raw["name"] = ""
    raw["stages"][3]["actions"] = []
    with pytest.raises(DefinitionError) as info:
        validate(raw, REGISTRY)
    err = info.value
    assert err.aws_code == "InvalidStructureException"
    assert all(isinstance(p, Problem) and p.path and p.message for p in err.problems)
    for problem in err.problems:
        assert f"{problem.path}: {problem.message}" in str(err)
    assert "name: must be 1-100 characters" in str(err)
    assert "stages[3].actions: a stage must contain at least one action" in str(err)


def test_check_is_pure_and_returns_problems() -> None:
    decl = PipelineDeclaration.model_validate(reference())
    assert check(decl, REGISTRY) == []
    broken = copy.deepcopy(reference())
    broken["stages"][2]["actions"][0]["inputArtifacts"][0]["name"] = "Gone"
    problems = check(PipelineDeclaration.model_validate(broken), REGISTRY)
    assert [p.path for p in problems] == ["stages[2].actions[0].inputArtifacts[0].name"]


# --------------------------------------------------------------------------- properties


@st.composite
def valid_pipelines(draw: st.DrawFn) -> dict[str, Any]:
    """2-6 stages of 1-4 actions, inputs wired only to artifacts visible where they're used."""
    n_stages = draw(st.integers(2, 6))
    made: list[tuple[str, int, int]] = []  # artifact, stage, runOrder
    counter = iter(range(10_000))
    stages: list[dict[str, Any]] = []
    for si in range(n_stages):
        run_orders = sorted(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
        actions = []
        for ai, ro in enumerate(run_orders):
            name = f"S{si}A{ai}"
            if si == 0:
                out = f"Art{next(counter)}"
                actions.append(source(name, out, ro))
                made.append((out, si, ro))
                continue
            visible = [a for a, s, r in made if s < si or (s == si and r < ro)]
            kind = draw(st.sampled_from(["Build", "Test", "Deploy", "Approval"]))
            if kind == "Deploy":
                actions.append(deploy(name, draw(st.sampled_from(visible)), ro))
            elif kind == "Approval":
                actions.append(manual(name, ro))
            else:
                ins = draw(
                    st.lists(
                        st.sampled_from(visible),
                        min_size=1,
                        max_size=min(5, len(visible)),
                        unique=True,
                    )
                )
                outs = [f"Art{next(counter)}" for _ in range(draw(st.integers(0, 2)))]
                actions.append(codebuild(name, ins, outs, ro, kind))
                made.extend((o, si, ro) for o in outs)
        # Declaration order within a stage doesn't matter; runOrder does.
        stages.append({"name": f"Stage{si}", "actions": draw(st.permutations(actions))})
    return {
        "name": "generated",
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": stages,
    }


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(valid_pipelines())
def test_generated_pipelines_validate_and_round_trip(raw: dict[str, Any]) -> None:
    decl = validate(raw, REGISTRY)
    assert validate(decl.to_aws(), REGISTRY) == decl


@PROPERTY_SETTINGS
@given(valid_pipelines(), st.data())
def test_breaking_one_input_reports_exactly_that_input(
    raw: dict[str, Any], data: st.DataObject
) -> None:
    decl = validate(raw, REGISTRY)
    refs = [
        (si, ai, ii)
        for si, stage in enumerate(decl.stages)
        for ai, action in enumerate(stage.actions)
        for ii in range(len(action.input_artifacts))
    ]
    assume(refs)
    si, ai, ii = data.draw(st.sampled_from(refs), label="input")
    action = raw["stages"][si]["actions"][ai]
    current = {a["name"] for a in action["inputArtifacts"]}
    ro = action["runOrder"]
    # An artifact that exists but is not visible here: later stage, or same stage not earlier.
    invisible = sorted(
        o.name
        for sj, stage in enumerate(decl.stages)
        for a in stage.actions
        for o in a.output_artifacts
        if (sj > si or (sj == si and a.run_order >= ro)) and o.name not in current
    )
    replacement = data.draw(st.sampled_from(["NeverProduced", *invisible]), label="replacement")
    action["inputArtifacts"][ii]["name"] = replacement
    problems = problems_of(raw)
    assert [p.path for p in problems] == [f"stages[{si}].actions[{ai}].inputArtifacts[{ii}].name"]
    assert f"artifact '{replacement}'" in problems[0].message


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Ref", "Fn::If", "Type", "name", "Name", "x"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def _node_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _node_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _node_paths(v, (*prefix, i))
    return found


@PROPERTY_SETTINGS
@given(st.data(), JSON_VALUES, st.booleans())
def test_any_damage_is_a_definition_error_never_a_crash(
    data: st.DataObject, junk: Any, as_cloudformation: bool
) -> None:
    raw: Any = pascal(reference()) if as_cloudformation else reference()
    where = data.draw(st.sampled_from(_node_paths(raw)), label="where")
    if where:
        node = raw
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = junk
    else:
        raw = junk
    try:
        validate(parse_document(json.dumps(raw)), REGISTRY)
    except DefinitionError as err:
        assert err.problems
        assert all(isinstance(p.path, str) and p.message for p in err.problems)


def test_unknown_keys_are_errors_not_silently_dropped() -> None:
    raw = reference()
    raw["stages"][1]["actions"][0]["runorder"] = 2
    raw["stages"][2]["blockers"] = [{"name": "b", "type": "Schedule"}]
    problems = problems_of(raw)
    assert_problem(problems, "stages[1].actions[0].runorder", "unknown key")
    assert_problem(problems, "stages[2].blockers", "not supported by Conveyor yet")


def test_harmless_top_level_fields_are_accepted() -> None:
    raw = {**reference(), "tags": [{"key": "team", "value": "x"}], "restartExecutionOnUpdate": True}
    assert validate(normalize(raw), REGISTRY).name == raw["name"]


def test_a_parallel_pipeline_cannot_roll_back() -> None:
    """AWS: "For pipelines in PARALLEL mode, stage rollback is not available. Similarly,
    failure conditions with a rollback result type cannot be added"."""
    raw = reference()
    raw["executionMode"] = "PARALLEL"
    raw["stages"][2]["onFailure"] = {"result": "ROLLBACK"}
    assert_problem(problems_of(raw), "stages[2].onFailure", "PARALLEL pipeline cannot roll back")
    raw["executionMode"] = "QUEUED"
    assert validate(normalize(raw), REGISTRY).stages[2].on_failure is not None
