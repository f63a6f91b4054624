"""A running Conveyor stack for integration and e2e tests: engine and provider workers,
beat and the HTTP API as real processes against the session's Redis and S3."""

from __future__ import annotations

import contextlib
import io
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.auth_support import ADMIN, TestKey, codepipeline
from tests.helpers import wait_for, wait_worker_ready
from workers import devstack
from workers.devstack import Service


@dataclass
class Stack:
    api_url: str
    s3_url: str
    env: dict[str, str]
    processes: dict[str, Service] = field(default_factory=dict)

    def codepipeline(self, key: TestKey = ADMIN) -> Any:
        """boto3's codepipeline client at the stack's API, signing as ``key``."""
        return codepipeline(self.api_url, key)

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name=self.env["CONVEYOR_S3_REGION"],
            aws_access_key_id=self.env["CONVEYOR_S3_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["CONVEYOR_S3_SECRET_ACCESS_KEY"],
        )


def start_stack(
    spawn: Any,
    settings_env: dict[str, str],
    *,
    workers: dict[str, tuple[str, int]] | None = None,
    worker_env: dict[str, str] | None = None,
    beat_env: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> Stack:
    """Start the engine pool, the given provider pools (name -> (pool, concurrency)), beat,
    api. ``worker_env`` is added to the provider pools' environment only, ``beat_env`` to
    beat's, ``env`` to every process's. Workers reach the API at its URL
    (``CONVEYOR_API_URL``)."""
    port = devstack.free_port()
    stack = Stack(
        f"http://127.0.0.1:{port}", settings_env["CONVEYOR_S3_ENDPOINT_URL"], settings_env
    )
    common = {"CONVEYOR_API_URL": stack.api_url, **(env or {})}
    pools = {"engine": ("engine", 1), **(workers or {"providers": ("all", 2)})}
    for name, (pool, conc) in pools.items():
        stack.processes[name] = spawn(
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(conc),
            "--hostname",
            f"{name}@%h",
            name=name,
            env={**common, **(worker_env or {})} if name != "engine" else common,
        )
    stack.processes["beat"] = spawn("beat", name="beat", env={**common, **(beat_env or {})})
    stack.processes["api"] = spawn("api", "--port", str(port), name="api", env=common)
    for name in pools:
        wait_worker_ready(stack.processes[name])
    wait_for(
        lambda: devstack.http_answers(stack.api_url + "/health"),
        30,
        message="the API did not answer",
    )
    return stack


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def action(
    name: str,
    category: str,
    provider: str,
    *,
    run_order: int = 1,
    config: dict[str, str] | None = None,
    ins: tuple[str, ...] = (),
    outs: tuple[str, ...] = (),
    timeout: int | None = None,
) -> dict[str, Any]:
    a: dict[str, Any] = {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": provider,
            "version": "1",
        },
        "runOrder": run_order,
        "configuration": config or {},
        "inputArtifacts": [{"name": n} for n in ins],
        "outputArtifacts": [{"name": n} for n in outs],
    }
    if timeout:
        a["timeoutInMinutes"] = timeout
    return a


def s3_source_stage(bucket: str, key: str = "app.zip") -> dict[str, Any]:
    return {
        "name": "Source",
        "actions": [
            action(
                "Fetch",
                "Source",
                "S3",
                config={"S3Bucket": bucket, "S3ObjectKey": key},
                outs=("SourceOutput",),
            )
        ],
    }


ROLE_ARN = "arn:aws:iam::000000000000:role/conveyor"


def build_and_deploy(
    name: str, src: str, artifacts: str, target: str, *, project: str = "project"
) -> dict[str, Any]:
    """Source (S3, not polled) -> Build (CodeBuild, ``BuildOutput``) -> Deploy (S3 to
    ``target``, extracted): the smallest pipeline that moves an artifact through a build."""
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    build = action(
        "Build",
        "Build",
        "CodeBuild",
        config={"ProjectName": project},
        ins=("SourceOutput",),
        outs=("BuildOutput",),
    )
    deploy = action(
        "Deploy",
        "Deploy",
        "S3",
        config={"BucketName": target, "Extract": "true"},
        ins=("BuildOutput",),
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


def put_source(s3: Any, bucket: str, files: dict[str, str], key: str = "app.zip") -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=key, Body=zip_bytes(files))


def wait_status(cp: Any, name: str, execution_id: str, statuses: set[str], timeout: float) -> str:
    def status() -> str | None:
        s = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)
        st: str = s["pipelineExecution"]["status"]
        return st if st in statuses else None

    return wait_for(
        status, timeout, interval=0.3, message=f"execution {execution_id} never reached {statuses}"
    )


def approval_token(cp: Any, name: str, stage: str, action_name: str, timeout: float) -> str:
    def token() -> str | None:
        state = cp.get_pipeline_state(name=name)
        for s in state["stageStates"]:
            if s["stageName"] != stage:
                continue
            for a in s.get("actionStates", []):
                if a["actionName"] == action_name:
                    tok: str | None = a.get("latestExecution", {}).get("token")
                    return tok
        return None

    return wait_for(token, timeout, interval=0.3, message=f"no approval token for {stage}")
