"""A pipeline whose build is a Jenkins job, on real worker processes, through boto3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jenkins_fake import FakeJenkins, FakeJob, fake_jenkins
from tests.stack import (
    ROLE_ARN,
    Stack,
    action,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
)


@pytest.fixture
def jenkins() -> Iterator[FakeJenkins]:
    with fake_jenkins() as server:
        yield server


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str], jenkins: FakeJenkins, tmp_path: Path) -> Stack:
    token_file = tmp_path / "jenkins-token"
    token_file.write_text(jenkins.token)
    worker_env = {
        "CONVEYOR_JENKINS_URL": jenkins.url,
        "CONVEYOR_JENKINS_USER": jenkins.user,
        "CONVEYOR_JENKINS_API_TOKEN_FILE": str(token_file),
        "CONVEYOR_JENKINS_POLL_SECONDS": "0.1",
    }
    return start_stack(spawn, settings_env, worker_env=worker_env)


def jenkins_pipeline(name: str, src: str, target: str, artifacts: str, job: str) -> dict[str, Any]:
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    build = action(
        "Jenkins",
        "Build",
        "Jenkins",
        config={"ProjectName": job},
        ins=("SourceOutput",),
        outs=("JenkinsOutput",),
    )
    build["actionTypeId"]["owner"] = "Custom"
    deploy = action(
        "Deploy",
        "Deploy",
        "S3",
        config={"BucketName": target, "Extract": "true"},
        ins=("JenkinsOutput",),
    )
    return {
        "name": name,
        "roleArn": ROLE_ARN,
        "artifactStore": {"type": "S3", "location": artifacts},
        "stages": [
            source,
            {"name": "Build", "actions": [build]},
            {"name": "Deploy", "actions": [deploy]},
        ],
    }


def build_state(cp: Any, name: str) -> dict[str, Any]:
    state = cp.get_pipeline_state(name=name)
    stage = next(s for s in state["stageStates"] if s["stageName"] == "Build")
    latest: dict[str, Any] = stage["actionStates"][0]["latestExecution"]
    return latest


def test_jenkins_build_feeds_a_deploy_and_a_failing_job_fails_the_pipeline(
    stack: Stack, jenkins: FakeJenkins
) -> None:
    cp, s3 = stack.codepipeline(), stack.s3()
    src, target = unique("src"), unique("site")
    s3.create_bucket(Bucket=target)
    put_source(s3, src, {"README": "sources Jenkins fetches itself\n"})
    jenkins.jobs["web/site"] = FakeJob(
        log_chunks=["Started by remote host\n", "npm run build\n", "Finished: SUCCESS\n"],
        artifacts={"public/index.html": b"<h1>built by Jenkins</h1>\n"},
    )
    jenkins.jobs["web/broken"] = FakeJob(
        log_chunks=["npm test\n", "1 failing: cart total\n", "Finished: FAILURE\n"],
        result="FAILURE",
    )
    good, bad = unique("jenkins-ok"), unique("jenkins-bad")
    cp.create_pipeline(pipeline=jenkins_pipeline(good, src, target, unique("art"), "web/site"))
    cp.create_pipeline(pipeline=jenkins_pipeline(bad, src, target, unique("art"), "web/broken"))

    ok_id = cp.start_pipeline_execution(name=good)["pipelineExecutionId"]
    assert wait_status(cp, good, ok_id, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"
    page = s3.get_object(Bucket=target, Key="public/index.html")["Body"].read()
    assert page == b"<h1>built by Jenkins</h1>\n"
    latest = build_state(cp, good)
    number = jenkins.build("web/site").number
    assert latest["externalExecutionId"] == str(number)
    assert latest["externalExecutionUrl"] == f"{jenkins.url}/job/web/job/site/{number}/"
    (item,) = jenkins.triggered("web/site")
    assert item.params["CODEPIPELINE_EXECUTION_ID"] == ok_id
    assert item.params["CODEPIPELINE_PIPELINE_NAME"] == good

    bad_id = cp.start_pipeline_execution(name=bad)["pipelineExecutionId"]
    assert wait_status(cp, bad, bad_id, {"Succeeded", "Failed"}, timeout=90) == "Failed"
    latest = build_state(cp, bad)
    message = latest["errorDetails"]["message"]
    assert message.startswith("Jenkins job 'web/broken' build #")
    assert "finished FAILURE" in message and "1 failing: cart total" in message
    # The token lives in a file on the workers; nothing the API answers holds it.
    for name in (good, bad):
        answers = [
            cp.get_pipeline(name=name),
            cp.get_pipeline_state(name=name),
            cp.list_action_executions(pipelineName=name),
        ]
        assert jenkins.token not in json.dumps(answers, default=str)
