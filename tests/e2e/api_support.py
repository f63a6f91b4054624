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
