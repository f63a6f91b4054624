"""A build, a Commands action and a test action on real worker processes: two build outputs,
a JUnit report in the summary, source revisions, secrets, and output variables flowing on."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from tests.stack import ROLE_ARN, action, put_source, start_stack, unique, wait_status
from workers.cli_client import register

SECRET = "hunter2-very-secret-value"

BUILDSPEC = """\
version: 0.2
env:
  parameter-store:
    DB_PASS: /ci/db/password
  exported-variables: [IMAGE_TAG]
phases:
  build:
    commands:
      - mkdir -p dist docs reports
      - echo "$CODEBUILD_RESOLVED_SOURCE_VERSION" > dist/version.txt
      - cp verify.yml dist/buildspec.yml
      - echo "password is $DB_PASS"
      - echo "# docs" > docs/index.md
      - cp junit.xml reports/TEST-unit.xml
      - IMAGE_TAG=1.10
artifacts:
  base-directory: dist
  files: ['**/*']
  secondary-artifacts:
    Docs:
      base-directory: docs
      files: ['**/*']
reports:
  unit:
    files: ['reports/*.xml']
"""

VERIFY = """\
version: 0.2
phases:
  build:
    commands:
      - test "$BUNDLE" = "bundle-$(cat version.txt)"
      - test "$TAG" = 1.10
      - grep -q docs bundle.md
"""

JUNIT = (
    '<testsuite><testcase name="ok" time="0.1"/>'
    '<testcase name="bad"><failure message="x"/></testcase></testsuite>'
)


def _pipeline(name: str, src: str) -> dict[str, Any]:
    fetch = action(
        "Fetch",
        "Source",
        "S3",
        config={"S3Bucket": src, "S3ObjectKey": "app.zip", "PollForSourceChanges": "false"},
        outs=("SourceOutput",),
    )
    build = action(
        "Build",
        "Build",
        "CodeBuild",
        config={"ProjectName": "app"},
        ins=("SourceOutput",),
        outs=("BuildOutput", "Docs"),
    )
    build["namespace"] = "BuildVars"
    package = action("Package", "Compute", "Commands", run_order=2, ins=("BuildOutput", "Docs"))
    package.update(
        {
            "namespace": "CmdVars",
            "commands": [
                "test -f version.txt",
                'cat "$CODEBUILD_SRC_DIR_Docs/index.md" > bundle.md',
                "export BUNDLE=bundle-$(cat version.txt)",
            ],
            "outputVariables": ["BUNDLE"],
            "outputArtifacts": [
                {"name": "Bundle", "files": ["bundle.md", "version.txt", "buildspec.yml"]}
            ],
        }
    )
    env = [
        {"name": "BUNDLE", "value": "#{CmdVars.BUNDLE}", "type": "PLAINTEXT"},
        {"name": "TAG", "value": "#{BuildVars.IMAGE_TAG}", "type": "PLAINTEXT"},
    ]
    verify = action(
        "Verify",
        "Test",
        "CodeBuild",
        config={"ProjectName": "verify", "EnvironmentVariables": json.dumps(env)},
        ins=("Bundle",),
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            {"name": "Source", "actions": [fetch]},
            {"name": "Build", "actions": [build, package]},
            {"name": "Test", "actions": [verify]},
        ],
    }


def _zip_files(s3: Any, loc: dict[str, str]) -> dict[str, str]:
    body = s3.get_object(Bucket=loc["bucket"], Key=loc["key"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {n: zf.read(n).decode() for n in zf.namelist()}


def test_build_commands_and_test_actions_on_real_workers(
    spawn: Any, settings_env: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"parameters": {"/ci/db/password": SECRET}}))
    stack = start_stack(
        spawn,
        settings_env,
        worker_env={
            "CONVEYOR_SECRETS_FILE": str(secrets),
            "CONVEYOR_BUILD_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    name, src = unique("bld"), unique("src")
    s3 = stack.s3()
    put_source(s3, src, {"buildspec.yml": BUILDSPEC, "verify.yml": VERIFY, "junit.xml": JUNIT})
    version_id = s3.head_object(Bucket=src, Key="app.zip")["VersionId"]
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=_pipeline(name, src))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    status = wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=120)
    rows = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    details = {d["actionName"]: d for d in rows}
    assert status == "Succeeded", json.dumps(rows, default=str)[:4000]

    build = details["Build"]["output"]
    assert build["executionResult"]["externalExecutionSummary"] == (
        "Build succeeded; tests: 1 passed, 1 failed (report group unit)"
    )
    assert build["outputVariables"] == {"IMAGE_TAG": "1.10"}
    outputs = {a["name"]: a["s3location"] for a in build["outputArtifacts"]}
    assert sorted(outputs) == ["BuildOutput", "Docs"]
    built = _zip_files(s3, outputs["BuildOutput"])
    # CODEBUILD_RESOLVED_SOURCE_VERSION is the source object's version, not the execution id.
    assert built["version.txt"].strip() == version_id
    assert _zip_files(s3, outputs["Docs"]) == {"index.md": "# docs\n"}

    package = details["Package"]["output"]
    assert package["outputVariables"] == {"BUNDLE": f"bundle-{version_id}"}
    [bundle] = package["outputArtifacts"]
    assert sorted(_zip_files(s3, bundle["s3location"])) == [
        "buildspec.yml",
        "bundle.md",
        "version.txt",
    ]
    assert details["Verify"]["status"] == "Succeeded"

    # The secret reached the build, and nothing stored or answered holds it.
    bucket = outputs["BuildOutput"]["bucket"]
    logs = [
        s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
        for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].endswith(".log")
    ]
    assert any("password is ***" in text for text in logs)
    assert not any(SECRET in text for text in logs)
    answered = json.dumps(
        [rows, cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)],
        default=str,
    )
    assert SECRET not in answered

    # The CLI shows each action's summary, the test totals among them.
    root = click.Group("conveyor")
    register(root)
    out = CliRunner().invoke(
        root,
        ["--endpoint", stack.api_url, "executions", "actions", name, eid],
        env={"COLUMNS": "250"},
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert "tests: 1 passed, 1 failed (report group unit)" in out.output
    assert "Commands succeeded" in out.output


CACHED = """\
version: 0.2
phases:
  install:
    commands:
      - if [ -f deps/lib.txt ]; then echo hit > state.txt; else echo miss > state.txt; fi
      - mkdir -p deps && echo lib > deps/lib.txt
artifacts:
  files: [state.txt]
cache:
  paths: ['deps/**/*']
"""


def test_cache_paths_survive_between_executions_on_a_worker(
    spawn: Any, settings_env: dict[str, str], tmp_path: Path
) -> None:
    stack = start_stack(
        spawn, settings_env, worker_env={"CONVEYOR_BUILD_CACHE_DIR": str(tmp_path / "cache")}
    )
    name, src = unique("cache"), unique("src")
    s3 = stack.s3()
    put_source(s3, src, {"buildspec.yml": CACHED})
    build = action(
        "Build",
        "Build",
        "CodeBuild",
        config={"ProjectName": f"cached-{name}"},
        ins=("SourceOutput",),
        outs=("BuildOutput",),
    )
    fetch = action(
        "Fetch",
        "Source",
        "S3",
        config={"S3Bucket": src, "S3ObjectKey": "app.zip", "PollForSourceChanges": "false"},
        outs=("SourceOutput",),
    )
    cp = stack.codepipeline()
    cp.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": ROLE_ARN,
            "artifactStore": {"type": "S3", "location": unique("artifacts")},
            "stages": [
                {"name": "Source", "actions": [fetch]},
                {"name": "Build", "actions": [build]},
            ],
        }
    )
    states = []
    for _ in range(2):
        eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
        assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"
        rows = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
            "actionExecutionDetails"
        ]
        [out] = next(d for d in rows if d["actionName"] == "Build")["output"]["outputArtifacts"]
        states.append(_zip_files(s3, out["s3location"])["state.txt"].strip())
    assert states == ["miss", "hit"]
    assert any((tmp_path / "cache").iterdir())
