"""The registry and pipeline definitions the API and CLI client tests use."""

from __future__ import annotations

from typing import Any

from providers import default_registry
from providers.registry import Registry

BUCKET = "conveyor-e2e-artifacts"


def registry() -> Registry:
    """The real built-ins: definitions are validated against their configuration models.

    No provider runs here (no workers), so entry-point providers are left out.
    """
    return default_registry(entry_points=False)


def definition(name: str = "demo", *, approval: bool = True) -> dict[str, Any]:
    """Source (S3) -> Build (CodeBuild) [-> Approve (Manual)] -> Release (CodeBuild)."""
    source = {
        "name": "Source",
        "actions": [
            {
                "name": "Fetch",
                "actionTypeId": {
                    "category": "Source",
                    "owner": "AWS",
                    "provider": "S3",
                    "version": "1",
                },
                "configuration": {"S3Bucket": "src", "S3ObjectKey": "app.zip"},
                "outputArtifacts": [{"name": "SourceOut"}],
            }
        ],
    }

    def build(stage: str, action: str, out: str | None) -> dict[str, Any]:
        act: dict[str, Any] = {
            "name": action,
            "actionTypeId": {
                "category": "Build",
                "owner": "AWS",
                "provider": "CodeBuild",
                "version": "1",
            },
            "configuration": {"ProjectName": f"{action}-#{{variables.Env}}"},
            "inputArtifacts": [{"name": "SourceOut"}],
        }
        if out:
            act["outputArtifacts"] = [{"name": out}]
        return {"name": stage, "actions": [act]}

    stages = [source, build("Build", "Compile", "BuildOut")]
    if approval:
        stages.append(
            {
                "name": "Approve",
                "actions": [
                    {
                        "name": "Gate",
                        "actionTypeId": {
                            "category": "Approval",
                            "owner": "AWS",
                            "provider": "Manual",
                            "version": "1",
                        },
                        "configuration": {"CustomData": "ship it?"},
                    }
                ],
            }
        )
    stages.append(build("Release", "Publish", None))
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": BUCKET},
        "variables": [{"name": "Env", "defaultValue": "dev"}],
        "stages": stages,
    }


def shape_problems(operation: str, body: Any) -> list[str]:
    """Where ``body`` strays from botocore's output shape of ``operation``: members the model
    does not have, required members missing, enum values it does not allow, wrong JSON types.

    boto3 silently drops unknown members, so only a raw response shows them.
    """
    from engine.api.validation import service_model

    shape = service_model().operation_model(operation).output_shape
    problems: list[str] = []
    _walk(shape, body, operation, problems)
    return problems


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "timestamp": (int, float),
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
}


def _walk(shape: Any, value: Any, path: str, problems: list[str]) -> None:
    allowed = _TYPES.get(shape.type_name)
    if allowed and not isinstance(value, allowed):
        problems.append(f"{path}: {value!r} is not a {shape.type_name}")
        return
    if shape.type_name == "structure":
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{path}.{name}: required but missing")
        for name, item in value.items():
            if name not in shape.members:
                problems.append(f"{path}.{name}: not in the {shape.name} shape")
            else:
                _walk(shape.members[name], item, f"{path}.{name}", problems)
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", problems)
    elif shape.type_name == "map":
        for key, item in value.items():
            _walk(shape.value, item, f"{path}.{key}", problems)
    elif shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        problems.append(f"{path}: {value!r} is not one of {shape.enum}")
