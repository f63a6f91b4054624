"""Custom actions on real workers, completed by job workers written as AWS's sample is: a
continuation, output variables and an output artifact uploaded in parts through the S3
gateway; competing workers that never share a job; and job credentials that can do nothing
but their own job's reads and writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.auth_support import Principals, codepipeline
from tests.handlers import sample_job_worker as worker
from tests.helpers import wait_for
from tests.stack import Stack, action, put_source, s3_source_stage, start_stack, unique, wait_status

TYPE = {"category": "Build", "owner": "Custom", "provider": "SampleBuilder", "version": "1"}
# Big enough that boto3 uploads the output artifact in parts (over 5 MiB).
PADDING = 6 * 1024 * 1024


@pytest.fixture
def stack(spawn: Any, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Stack:
    # Four custom actions wait at once (plus the source and the deploy).
    running = start_stack(spawn, settings_env, workers={"providers": ("all", 6)})
    # What a job worker's environment says, on AWS or here: where the services are.
    monkeypatch.setenv("AWS_ENDPOINT_URL_CODEPIPELINE", running.api_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.api_url + "/s3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return running


def _create_type(cp: Any) -> None:
    cp.create_custom_action_type(
        category="Build",
        provider="SampleBuilder",
        version="1",
        settings={"executionUrlTemplate": "https://builds.example.com/{ExternalExecutionId}"},
        configurationProperties=[
            {
                "name": "ProjectName",
                "required": True,
                "key": True,
                "secret": False,
                "queryable": True,
                "description": "the project to build",
                "type": "String",
            },
            {"name": "ApiToken", "required": False, "key": False, "secret": True},
        ],
        inputArtifactDetails={"minimumCount": 1, "maximumCount": 1},
        outputArtifactDetails={"minimumCount": 1, "maximumCount": 1},
    )


def _custom(name: str, project: str, out: str) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": TYPE,
        "configuration": {"ProjectName": project, "ApiToken": "s3cr3t"},
        "inputArtifacts": [{"name": "SourceOutput"}],
        "outputArtifacts": [{"name": out}],
    }


def _pipeline(name: str, src: str, target: str, builds: list[dict[str, Any]]) -> dict[str, Any]:
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    deploy = action(
        "Publish",
        "Deploy",
        "S3",
        config={"BucketName": target, "Extract": "false", "ObjectKey": "built.zip"},
        ins=(builds[0]["outputArtifacts"][0]["name"],),
    )
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            source,
            {"name": "Build", "actions": builds},
            {"name": "Deploy", "actions": [deploy]},
        ],
    }


def _work_until(done: threading.Event, poll: Any) -> None:
    while not done.is_set():
        if not poll():
            time.sleep(0.2)


@pytest.fixture
def job_worker(principals: Principals) -> Callable[[Stack], Any]:
    """A codepipeline client for a job worker: a principal that may answer jobs and read
    pipeline state, nothing else (the admin's ``cp`` declares types and pipelines)."""
    key = principals.add(["job-worker", "viewer"], name="sample-job-worker")
    return lambda stack: codepipeline(stack.api_url, key)


def test_a_sample_job_worker_completes_a_custom_action_with_a_continuation(
    stack: Stack, job_worker: Callable[[Stack], Any]
) -> None:
    cp = boto3.client("codepipeline")  # from the environment: the admin's
    wcp = job_worker(stack)
    name, src, target = unique("custom"), unique("src"), unique("target")
    s3 = stack.s3()
    put_source(s3, src, {"version.txt": "2.0.1\n", "main.c": "int main() {}\n"})
    s3.create_bucket(Bucket=target)
    _create_type(cp)
    cp.create_pipeline(pipeline=_pipeline(name, src, target, [_custom("Make", "web", "Built")]))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    handled: list[tuple[dict[str, Any], str]] = []
    denied: dict[str, str] = {}

    progress: list[dict[str, Any]] = []

    def handle(codepipeline: Any, job: dict[str, Any]) -> str:
        if not denied:
            denied.update(_forbidden(job["data"], src))
        outcome = worker.process(codepipeline, job, padding=PADDING)
        if outcome == "continued":  # the action runs on, showing what the worker reported
            state = codepipeline.get_pipeline_state(name=name)
            progress.append(state["stageStates"][1]["actionStates"][0]["latestExecution"])
        return outcome

    def poll() -> bool:
        found = worker.poll_once(wcp, TYPE, "web", handle)
        handled.extend(found)
        return bool(found)

    done = threading.Event()
    thread = threading.Thread(target=_work_until, args=(done, poll))
    thread.start()
    try:
        assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=120) == "Succeeded"
    finally:
        done.set()
        thread.join(30)

    assert [outcome for _, outcome in handled] == ["continued", "finished"]
    [running] = progress
    assert running["status"] == "InProgress"
    assert (running["percentComplete"], running["summary"]) == (50, "building web")
    assert running["externalExecutionId"] == "web-build"
    first, second = (job["data"] for job, _ in handled)
    assert "continuationToken" not in first
    assert second["continuationToken"] == '{"version": "2.0.1"}'
    assert first["actionTypeId"] == TYPE
    # Secret properties are the job worker's to read.
    assert first["actionConfiguration"]["configuration"] == {
        "ProjectName": "web",
        "ApiToken": "s3cr3t",
    }
    context = first["pipelineContext"]
    assert (context["pipelineName"], context["stage"]["name"], context["action"]["name"]) == (
        name,
        "Build",
        "Make",
    )
    assert context["pipelineExecutionId"] == eid
    assert context["pipelineArn"].endswith(f":{name}")
    assert "encryptionKey" not in first
    creds = first["artifactCredentials"]
    assert creds["accessKeyId"].startswith("ASIA")
    assert creds["accessKeyId"] != stack.env["CONVEYOR_S3_ACCESS_KEY_ID"]

    # The job credentials could do nothing but the job's own reads and writes.
    assert denied == {
        "list": "AccessDenied",
        "read source": "AccessDenied",
        "write input": "AccessDenied",
        "write elsewhere": "AccessDenied",
        "no token": "InvalidToken",
    }

    [make] = [
        a
        for a in cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
            "actionExecutionDetails"
        ]
        if a["actionName"] == "Make"
    ]
    assert make["status"] == "Succeeded"
    assert make["output"]["outputVariables"] == {"Version": "2.0.1", "Project": "web"}
    assert make["output"]["executionResult"]["externalExecutionSummary"] == "built web 2.0.1"
    assert make["output"]["executionResult"]["externalExecutionId"] == "web-build"
    # The artifact the worker uploaded (in parts) went on byte for byte.
    published = s3.get_object(Bucket=target, Key="built.zip")["Body"].read()
    assert len(published) > PADDING


def _forbidden(data: dict[str, Any], source_bucket: str) -> dict[str, str]:
    """What the job's credentials are refused, by S3 error code."""
    s3 = worker.artifact_s3_client(data)
    bucket, in_key = worker.location(data["inputArtifacts"][0])
    _, out_key = worker.location(data["outputArtifacts"][0])
    creds = data["artifactCredentials"]
    tokenless: Any = boto3.client(
        "s3",
        aws_access_key_id=creds["accessKeyId"],
        aws_secret_access_key=creds["secretAccessKey"],
    )
    attempts: dict[str, Callable[[], Any]] = {
        "list": lambda: s3.list_objects_v2(Bucket=bucket),
        "read source": lambda: s3.get_object(Bucket=source_bucket, Key="app.zip"),
        "write input": lambda: s3.put_object(Bucket=bucket, Key=in_key, Body=b"x"),
        "write elsewhere": lambda: s3.put_object(Bucket=bucket, Key=out_key + "x", Body=b"x"),
        "no token": lambda: tokenless.get_object(Bucket=bucket, Key=in_key),
    }
    out: dict[str, str] = {}
    for what, attempt in attempts.items():
        try:
            attempt()
            out[what] = "allowed"
        except ClientError as exc:
            out[what] = exc.response["Error"]["Code"]
    return out


def test_competing_workers_never_process_one_job_twice(
    stack: Stack, job_worker: Callable[[Stack], Any]
) -> None:
    cp = boto3.client("codepipeline")
    name, src, target = unique("compete"), unique("src"), unique("target")
    s3 = stack.s3()
    put_source(s3, src, {"version.txt": "1.0\n"})
    s3.create_bucket(Bucket=target)
    _create_type(cp)
    builds = [_custom(f"Make{i}", "shared", f"Built{i}") for i in range(4)]
    cp.create_pipeline(pipeline=_pipeline(name, src, target, builds))
    eids = [cp.start_pipeline_execution(name=name)["pipelineExecutionId"]]

    processed: list[tuple[str, str, str]] = []  # (worker, job id, action)
    lock = threading.Lock()
    done = threading.Event()

    def competing(worker_name: str) -> None:
        client = job_worker(stack)

        def handle(codepipeline: Any, job: dict[str, Any]) -> str:
            with lock:
                processed.append(
                    (worker_name, job["id"], job["data"]["pipelineContext"]["action"]["name"])
                )
            return worker.process(codepipeline, job)

        _work_until(done, lambda: worker.poll_once(client, TYPE, "shared", handle))

    threads = [threading.Thread(target=competing, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    try:
        for eid in eids:
            assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=180) == "Succeeded"
    finally:
        done.set()
        for t in threads:
            t.join(30)
    job_ids = [job_id for _, job_id, _ in processed]
    assert len(job_ids) == len(set(job_ids)) == 8  # 4 actions x (first call + continuation)
    per_action = {a: sum(1 for _, _, b in processed if b == a) for _, _, a in processed}
    assert per_action == {f"Make{i}": 2 for i in range(4)}


@pytest.fixture
def fast_stack(spawn: Any, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A stack whose "minute" of action timeouts is a second."""
    running = start_stack(spawn, settings_env, env={"CONVEYOR_MINUTE_SECONDS": "1"})
    monkeypatch.setenv("AWS_ENDPOINT_URL_CODEPIPELINE", running.api_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return running


def test_an_action_no_worker_takes_times_out_and_its_job_leaves_the_queue(
    fast_stack: Stack,
) -> None:
    cp = boto3.client("codepipeline")
    name, src, target = unique("unpolled"), unique("src"), unique("target")
    s3 = fast_stack.s3()
    put_source(s3, src, {"version.txt": "1.0\n"})
    s3.create_bucket(Bucket=target)
    _create_type(cp)
    make = {**_custom("Make", "lonely", "Built"), "timeoutInMinutes": 5}
    cp.create_pipeline(pipeline=_pipeline(name, src, target, [make]))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=60) == "Failed"
    state = cp.get_pipeline_state(name=name)["stageStates"][1]["actionStates"][0]
    assert state["latestExecution"]["status"] == "Failed"
    # The job the action queued was withdrawn when the action gave up waiting (the worker's
    # wait ends at the same deadline): a job worker that comes late is handed nothing.
    time.sleep(3)
    assert cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"ProjectName": "lonely"})["jobs"] == []


def test_stopping_an_execution_withdraws_its_waiting_job(fast_stack: Stack) -> None:
    cp = boto3.client("codepipeline")
    name, src, target = unique("stopped"), unique("src"), unique("target")
    s3 = fast_stack.s3()
    put_source(s3, src, {"version.txt": "1.0\n"})
    s3.create_bucket(Bucket=target)
    _create_type(cp)
    cp.create_pipeline(pipeline=_pipeline(name, src, target, [_custom("Make", "held", "Built")]))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    def waiting() -> bool:
        states = cp.get_pipeline_state(name=name)["stageStates"]
        latest = states[1]["actionStates"][0].get("latestExecution") or {}
        return latest.get("status") == "InProgress"

    wait_for(waiting, timeout=60, message="the custom action never started")
    cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=eid, abandon=True)
    assert wait_status(cp, name, eid, {"Stopped", "Failed", "Succeeded"}, timeout=60) == "Stopped"
    time.sleep(3)  # the waiting task notices within a heartbeat and withdraws its job
    assert cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"ProjectName": "held"})["jobs"] == []
