"""Artifacts move byte for byte, as on AWS (issue 8), on real workers: an S3 source's
artifact is the object exactly as stored, a Deploy/S3 without Extract writes it unchanged,
and actions that need the contents unpack it themselves, failing clearly when they cannot."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from tests.stack import (
    ROLE_ARN,
    action,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
    zip_bytes,
)

pytestmark = pytest.mark.integration

BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - test "$(cat app.txt)" = "hello from the zip"
"""


def _pipeline(name: str, src: str, target: str) -> dict[str, Any]:
    """Source (S3) -> one stage where a build reads the files and a Deploy/S3 without
    Extract publishes the artifact, side by side."""
    source = s3_source_stage(src, "release.bin")
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    build = action(
        "Build", "Build", "CodeBuild", config={"ProjectName": "p"}, ins=("SourceOutput",)
    )
    publish = action(
        "Publish",
        "Deploy",
        "S3",
        config={"BucketName": target, "Extract": "false", "ObjectKey": "out/release.bin"},
        ins=("SourceOutput",),
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [source, {"name": "Ship", "actions": [build, publish]}],
    }


def _run(stack: Any, body: bytes) -> tuple[str, dict[str, Any], bytes]:
    """Put ``body`` as the source object, run the pipeline once: (status, the Ship stage's
    action details by name, the bytes Deploy/S3 wrote)."""
    s3, cp = stack.s3(), stack.codepipeline()
    name, src, target = unique("bytes"), unique("src"), unique("target")
    s3.create_bucket(Bucket=src)
    s3.put_bucket_versioning(Bucket=src, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=src, Key="release.bin", Body=body)
    s3.create_bucket(Bucket=target)
    cp.create_pipeline(pipeline=_pipeline(name, src, target))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    status = wait_status(cp, name, eid, {"Succeeded", "Failed"}, 90)
    details = {
        d["actionName"]: d
        for d in cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
            "actionExecutionDetails"
        ]
    }
    # The source artifact in the artifact store is the object itself.
    loc = details["Fetch"]["output"]["outputArtifacts"][0]["s3location"]
    stored = s3.get_object(Bucket=loc["bucket"], Key=loc["key"])["Body"].read()
    assert stored == body
    written = s3.get_object(Bucket=target, Key="out/release.bin")["Body"].read()
    return status, details, written


def test_artifacts_move_byte_for_byte(spawn: Any, settings_env: dict[str, str]) -> None:
    stack = start_stack(spawn, settings_env)

    # A zip: published unchanged (not re-zipped), and the build still sees its files.
    zipped = zip_bytes({"app.txt": "hello from the zip", "buildspec.yml": BUILDSPEC})
    status, details, written = _run(stack, zipped)
    assert status == "Succeeded", details
    assert hashlib.sha256(written).hexdigest() == hashlib.sha256(zipped).hexdigest()
    assert details["Build"]["status"] == "Succeeded"

    # Not a zip (a gzip'd tarball, or any bytes): published unchanged; the build, which
    # needs the contents, fails naming the artifact.
    tarball = b"\x1f\x8b\x08\x00" + os.urandom(64 * 1024)
    status, details, written = _run(stack, tarball)
    assert status == "Failed"
    assert hashlib.sha256(written).hexdigest() == hashlib.sha256(tarball).hexdigest()
    assert details["Publish"]["status"] == "Succeeded"
    assert details["Build"]["status"] == "Failed"
    error = details["Build"]["output"]["executionResult"]["errorDetails"]["message"]
    assert "input artifact 'SourceOutput'" in error
    assert "is not a zip archive" in error
