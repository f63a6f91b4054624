"""A CodeCommit-sourced pipeline on real worker processes, beat and the HTTP API, against
``git http-backend`` with basic auth: the revision recorded is the commit, the build gets a
clone with history, a push starts exactly one polled execution, and the password is found
nowhere Conveyor stores or answers."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from botocore.exceptions import ClientError

from engine import keys
from tests.auth_support import codepipeline
from tests.conftest import Spawn
from tests.gitserve import GitHttpServer, Repo, make_repo
from tests.helpers import wait_for, wait_worker_ready
from tests.stack import action, unique
from workers import devstack

pytestmark = pytest.mark.integration

USER = "builder"
PASSWORD = "pw-4f2b9c7e-never-shown"
WRONG = "pw-wrong-0a9d3e51-never-shown"
SECRETS = (PASSWORD, WRONG)

BUILDSPEC = """version: 0.2
phases:
  build:
    commands:
      - test "$(git rev-parse HEAD)" = "$COMMIT"
      - test "$(git log --oneline | wc -l)" -ge 2
      - git log --oneline
"""


@pytest.fixture
def served(tmp_path: Path) -> Path:
    d = tmp_path / "served"
    d.mkdir()
    return d


@pytest.fixture
def repo(served: Path) -> Repo:
    repo = make_repo(served, "app.git", {"buildspec.yml": BUILDSPEC, "README": "one\n"})
    repo.commit({"README": "two\n"}, "second commit")
    repo.commit({"README": "three\n"}, "third commit")
    return repo


@pytest.fixture
def http(served: Path, repo: Repo) -> Iterator[GitHttpServer]:
    with GitHttpServer(served, USER, PASSWORD) as server:
        yield server


@pytest.fixture
def cp(
    spawn: Spawn, settings_env: dict[str, str], http: GitHttpServer, tmp_path: Path
) -> Iterator[Any]:
    """Engine pool, a provider pool and beat that know the git server; the API."""
    secret = tmp_path / "git-password"
    secret.write_text(PASSWORD + "\n")
    git_env = {
        "CONVEYOR_GIT_BASE_URL": http.url,
        "CONVEYOR_GIT_USERNAME": USER,
        "CONVEYOR_GIT_PASSWORD_FILE": str(secret),
        "CONVEYOR_GIT_REPOSITORIES": json.dumps(
            # Credentials written into a URL are moved out of it, never shown.
            {"badauth": http.url.replace("//", f"//{USER}:{WRONG}@") + "/app.git"}
        ),
        "CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS": "1",
    }
    port = devstack.free_port()
    engine = spawn("worker", "--pool", "engine", "--concurrency", "1", "-n", "engine@%h")
    workers = spawn(
        "worker", "--pool", "all", "--concurrency", "2", "-n", "providers@%h", env=git_env
    )
    spawn("beat", name="beat", env=git_env)
    spawn("api", "--port", str(port), name="api")
    for w in (engine, workers):
        wait_worker_ready(w)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: devstack.http_answers(url + "/health"), 30, message="the API did not answer")
    yield codepipeline(url)


def pipeline(name: str, repository: str, branch: str = "main") -> dict[str, Any]:
    source = action(
        "Fetch",
        "Source",
        "CodeCommit",
        config={
            "RepositoryName": repository,
            "BranchName": branch,
            "OutputArtifactFormat": "CODEBUILD_CLONE_REF",
        },
        outs=("Src",),
    )
    source["namespace"] = "SourceVariables"
    env = json.dumps([{"name": "COMMIT", "value": "#{SourceVariables.CommitId}"}])
    build = action(
        "Build",
        "Build",
        "CodeBuild",
        config={"ProjectName": "app", "EnvironmentVariables": env},
        ins=("Src",),
    )
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Build", "actions": [build]},
        ],
    }


def finished(cp: Any, name: str, eid: str) -> dict[str, Any] | None:
    ex = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    ex = ex["pipelineExecution"]
    return ex if ex["status"] in ("Succeeded", "Failed", "Stopped") else None


def run(cp: Any, name: str) -> dict[str, Any]:
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    return wait_for(lambda: finished(cp, name, eid), 120, 0.5, f"{name} {eid} did not finish")


def source_error(cp: Any, name: str) -> str:
    state = cp.get_pipeline_state(name=name)
    latest = state["stageStates"][0]["actionStates"][0]["latestExecution"]
    return str(latest["errorDetails"]["message"])


def test_a_git_sourced_pipeline_end_to_end(
    cp: Any,
    repo: Repo,
    http: GitHttpServer,
    redis_client: redis.Redis,
    redis_service: devstack.Service,
    settings_env: dict[str, str],
    tmp_path: Path,
) -> None:
    name = unique("gitpipe")
    cp.create_pipeline(pipeline=pipeline(name, "app"))
    ex = run(cp, name)
    head = repo.commits[-1]
    assert ex["status"] == "Succeeded", ex
    (rev,) = ex["artifactRevisions"]
    assert rev["revisionId"] == head
    assert rev["revisionSummary"] == "third commit"
    runs = cp.list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": ex["pipelineExecutionId"]}
    )["actionExecutionDetails"]
    fetch = next(r for r in runs if r["actionName"] == "Fetch")
    assert fetch["output"]["outputVariables"]["CommitId"] == head
    assert fetch["output"]["outputVariables"]["RepositoryName"] == "app"

    # StartPipelineExecution's sourceRevisions override pins the source to a commit.
    second = repo.commits[1]
    pin = [{"actionName": "Fetch", "revisionType": "COMMIT_ID", "revisionValue": second}]
    eid = cp.start_pipeline_execution(name=name, sourceRevisions=pin)["pipelineExecutionId"]
    ex = wait_for(lambda: finished(cp, name, eid), 120, 0.5, "the pinned run did not finish")
    assert ex["status"] == "Succeeded", ex  # the build checked HEAD is the pinned commit
    assert ex["artifactRevisions"][0]["revisionId"] == second
    assert ex["artifactRevisions"][0]["revisionSummary"] == "second commit"
    with pytest.raises(ClientError, match=r"sourceRevisions\[0\].actionName: 'Nope'"):
        cp.start_pipeline_execution(name=name, sourceRevisions=[{**pin[0], "actionName": "Nope"}])

    # Polling: beat records the branch's head as its baseline, then a push starts one run.
    ledger = keys.source_revisions(name)
    wait_for(lambda: redis_client.hget(ledger, "Source/Fetch"), 30, message="no baseline")
    time.sleep(3)  # three poll rounds with no new commit
    assert len(cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]) == 2
    pushed = repo.commit({"README": "four\n"}, "fourth commit")

    def polled() -> list[dict[str, Any]]:
        rows = cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
        return [r for r in rows if r["trigger"]["triggerType"] == "PollForSourceChanges"]

    (summary,) = wait_for(polled, 60, 0.5, "the push started no execution")
    eid = summary["pipelineExecutionId"]
    ex = wait_for(lambda: finished(cp, name, eid), 120, 0.5, "the polled run did not finish")
    assert ex["status"] == "Succeeded", ex
    assert ex["artifactRevisions"][0]["revisionId"] == pushed
    time.sleep(3)
    assert len(polled()) == 1

    # Failures a person can act on: a missing branch, refused credentials.
    nobranch = unique("nobranch")
    cp.create_pipeline(pipeline=pipeline(nobranch, "app", "no-such-branch"))
    assert run(cp, nobranch)["status"] == "Failed"
    assert source_error(cp, nobranch) == (
        f"branch 'no-such-branch' does not exist in app ({http.url}/app)"
    )
    badauth = unique("badauth")
    cp.create_pipeline(pipeline=pipeline(badauth, "badauth"))
    assert run(cp, badauth)["status"] == "Failed"
    message = source_error(cp, badauth)
    assert f"authentication to badauth ({http.url}/app.git) failed" in message

    # The secrets: in no API answer, Redis value (state, events) or stored object.
    answers = (
        [cp.get_pipeline_state(name=n) for n in (name, nobranch, badauth)]
        + [cp.list_action_executions(pipelineName=n) for n in (name, nobranch, badauth)]
        + [cp.get_pipeline(name=name), cp.list_pipeline_executions(pipelineName=badauth)]
    )
    text = json.dumps(answers, default=str)
    assert head in text  # the search reads real answers
    assert_no_secret(text, "API answers")
    dump = redis_dump(redis_service.url)
    assert keys.EVENTS in dump and "FAILED" in dump
    assert_no_secret(dump, "Redis (state, events)")
    objects = s3_dump(settings_env)
    assert b"git log" in objects  # the build log is among them
    assert_no_secret(objects.decode("utf-8", "replace"), "stored logs and artifacts")
    # Nor in what the processes logged (beat's polling, the workers' failures).
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "beat" in " ".join(p.name for p in (tmp_path / "logs").glob("*.log"))
    assert_no_secret(logs, "process logs")


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a git password appears in {where}"


def redis_dump(url: str) -> str:
    """Every key and value in the state database, as text to search (values by type; a
    DUMP could hold them compressed)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    parts: list[Any] = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        value: Any = None
        if kind == "string":
            value = r.get(key)
        elif kind == "hash":
            value = r.hgetall(key)
        elif kind in ("list", "zset"):
            value = r.lrange(key, 0, -1) if kind == "list" else r.zrange(key, 0, -1)
        elif kind == "set":
            value = r.smembers(key)
        elif kind == "stream":
            value = r.xrange(key)
        parts.append((key, value))
    r.close()
    return "\n".join(repr(p) for p in parts)


def s3_dump(env: dict[str, str]) -> bytes:
    """Every object in every bucket, zips unpacked (a compressed secret would hide)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=env["CONVEYOR_S3_ENDPOINT_URL"],
        aws_access_key_id=env["CONVEYOR_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["CONVEYOR_S3_SECRET_ACCESS_KEY"],
        region_name=env["CONVEYOR_S3_REGION"],
    )
    out = io.BytesIO()
    for bucket in s3.list_buckets()["Buckets"]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
        for page in pages:
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket["Name"], Key=obj["Key"])["Body"].read()
                if zipfile.is_zipfile(io.BytesIO(body)):
                    with zipfile.ZipFile(io.BytesIO(body)) as zf:
                        for member in zf.namelist():
                            out.write(zf.read(member))
                else:
                    out.write(body)
    return out.getvalue()
