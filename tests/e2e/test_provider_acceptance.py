"""Issue 7's acceptance pipeline on real worker processes, beat and the API:

a CodeCommit-style git source (served by ``git daemon``) -> a CodeBuild build with two output
artifacts and a JUnit report -> a CodeBuild test action consuming both -> a Lambda-style
invoke that asks to be called again twice -> an S3 deploy; output variables of the source,
the build and the invoke flow into later actions' configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, Spawn
from tests.gitserve import Repo, git_daemon, make_repo
from tests.stack import ROLE_ARN, Stack, action, start_stack, unique, wait_status

BUILDSPEC = """\
version: 0.2
env:
  exported-variables: [BUILD_VERSION]
phases:
  build:
    commands:
      - test "$CODEBUILD_RESOLVED_SOURCE_VERSION" = "$COMMIT"
      - mkdir -p dist docs reports
      - cp VERSION dist/version.txt
      - cp verify.yml dist/buildspec.yml
      - echo "# notes for $(cat VERSION)" > docs/notes.md
      - cp junit.xml reports/TEST-unit.xml
      - export BUILD_VERSION="$(cat VERSION)"
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
      - test "$(cat version.txt)" = "$EXPECTED"
      - grep -q "notes for $EXPECTED" "$CODEBUILD_SRC_DIR_Docs/notes.md"
      - test "$MESSAGE" = "Release 2.5.0"
"""

JUNIT = (
    '<testsuite name="unit"><testcase name="adds" time="0.1"/>'
    '<testcase name="subtracts" time="0.2"/>'
    '<testcase name="divides"><failure message="by zero"/></testcase></testsuite>'
)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    served = tmp_path / "served"
    served.mkdir()
    repo = make_repo(served, "app", {"README": "app\n"})
    repo.commit(
        {"buildspec.yml": BUILDSPEC, "verify.yml": VERIFY, "junit.xml": JUNIT, "VERSION": "2.5.0"},
        "Release 2.5.0",
    )
    return repo


@pytest.fixture
def stack(spawn: Spawn, settings_env: dict[str, str], repo: Repo) -> Iterator[Stack]:
    with git_daemon(repo.bare.parent) as url:
        worker_env = {
            "CONVEYOR_GIT_BASE_URL": url,
            "CONVEYOR_LAMBDA_FUNCTIONS": json.dumps(
                {"release": "tests.handlers.continuing:lambda_handler"}
            ),
            "CONVEYOR_LAMBDA_PATH": str(REPO_ROOT),
        }
        yield start_stack(spawn, settings_env, worker_env=worker_env)


def pipeline(name: str, target: str) -> dict[str, Any]:
    source = action(
        "Fetch",
        "Source",
        "CodeCommit",
        config={"RepositoryName": "app", "BranchName": "main", "PollForSourceChanges": "false"},
        outs=("Src",),
    )
    source["namespace"] = "SourceVariables"
    build_env = [{"name": "COMMIT", "value": "#{SourceVariables.CommitId}", "type": "PLAINTEXT"}]
    build = action(
        "Build",
        "Build",
        "CodeBuild",
        config={"ProjectName": "app", "EnvironmentVariables": json.dumps(build_env)},
        ins=("Src",),
        outs=("BuildOutput", "Docs"),
    )
    build["namespace"] = "BuildVariables"
    test_env = [
        {"name": "EXPECTED", "value": "#{BuildVariables.BUILD_VERSION}", "type": "PLAINTEXT"},
        {"name": "MESSAGE", "value": "#{SourceVariables.CommitMessage}", "type": "PLAINTEXT"},
    ]
    verify = action(
        "Verify",
        "Test",
        "CodeBuild",
        config={
            "ProjectName": "verify",
            "PrimarySource": "BuildOutput",
            "EnvironmentVariables": json.dumps(test_env),
        },
        ins=("BuildOutput", "Docs"),
    )
    release = action(
        "Release",
        "Invoke",
        "Lambda",
        config={"FunctionName": "release", "UserParameters": "#{BuildVariables.BUILD_VERSION}"},
        ins=("BuildOutput",),
        outs=("ReleaseOutput",),
    )
    release["namespace"] = "ReleaseVariables"
    publish = action(
        "Publish",
        "Deploy",
        "S3",
        config={
            "BucketName": target,
            "Extract": "false",
            "ObjectKey": "release-#{ReleaseVariables.Version}-#{SourceVariables.CommitId}.zip",
        },
        ins=("ReleaseOutput",),
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Build", "actions": [build]},
            {"name": "Test", "actions": [verify]},
            {"name": "Release", "actions": [release]},
            {"name": "Deploy", "actions": [publish]},
        ],
    }


def test_git_build_test_invoke_deploy_end_to_end(stack: Stack, repo: Repo) -> None:
    name, target = unique("accept"), unique("target")
    commit = repo.commits[-1]
    stack.s3().create_bucket(Bucket=target)
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=pipeline(name, target))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    status = wait_status(cp, name, eid, {"Succeeded", "Failed", "Stopped"}, timeout=180)
    details = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
    actions = {a["actionName"]: a for a in details["actionExecutionDetails"]}
    assert status == "Succeeded", {k: a.get("output") for k, a in actions.items()}

    execution = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["artifactRevisions"][0]["revisionId"] == commit

    fetch = actions["Fetch"]["output"]
    assert fetch["outputVariables"]["CommitId"] == commit
    assert fetch["outputVariables"]["CommitMessage"] == "Release 2.5.0"

    build = actions["Build"]["output"]
    assert [a["name"] for a in build["outputArtifacts"]] == ["BuildOutput", "Docs"]
    assert build["outputVariables"] == {"BUILD_VERSION": "2.5.0"}
    summary = build["executionResult"]["externalExecutionSummary"]
    assert "2 passed, 1 failed" in summary and "unit" in summary
    resolved_build_env = json.loads(
        actions["Build"]["input"]["resolvedConfiguration"]["EnvironmentVariables"]
    )
    assert resolved_build_env[0]["value"] == commit

    verify = actions["Verify"]
    assert verify["status"] == "Succeeded"
    test_env = json.loads(verify["input"]["resolvedConfiguration"]["EnvironmentVariables"])
    assert {e["name"]: e["value"] for e in test_env} == {
        "EXPECTED": "2.5.0",
        "MESSAGE": "Release 2.5.0",
    }

    release = actions["Release"]
    assert release["input"]["resolvedConfiguration"]["UserParameters"] == "2.5.0"
    # Two continuation tokens, then success with the output variables on the third call.
    assert release["output"]["outputVariables"] == {"Version": "2.5.0", "Calls": "3"}
    assert release["output"]["executionResult"]["externalExecutionSummary"] == (
        "released 2.5.0 after 3 calls"
    )

    key = f"release-2.5.0-{commit}.zip"
    assert actions["Publish"]["input"]["resolvedConfiguration"]["ObjectKey"] == key
    assert stack.s3().head_object(Bucket=target, Key=key)["ContentLength"] > 0
