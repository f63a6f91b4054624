"""Executions against real workers: parallel groups, failures with logs, a killed worker."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

from tests.helpers import wait_for, wait_worker_ready
from tests.stack import (
    Stack,
    action,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
)

PARALLEL_BUILDSPEC = """\
version: 0.2
phases:
  build:
    commands:
      - mkdir -p out
      - date +%s.%N > out/start
      - echo $PPID > out/pid
      - sleep 3
      - date +%s.%N > out/end
artifacts:
  base-directory: out
  files:
    - '*'
"""


def _artifact_files(stack: Stack, loc: dict[str, str]) -> dict[str, str]:
    body = stack.s3().get_object(Bucket=loc["bucket"], Key=loc["key"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        return {n: zf.read(n).decode().strip() for n in zf.namelist()}


def _details(stack: Stack, name: str, eid: str) -> dict[tuple[str, str], Any]:
    rows = stack.codepipeline().list_action_executions(
        pipelineName=name, filter={"pipelineExecutionId": eid}
    )["actionExecutionDetails"]
    return {(d["stageName"], d["actionName"]): d for d in rows}


def _pipeline(name: str, src: str, build_actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [s3_source_stage(src), {"name": "Build", "actions": build_actions}],
    }


def test_same_run_order_actions_overlap_on_two_worker_processes(
    spawn: Any, settings_env: dict[str, str]
) -> None:
    stack = start_stack(
        spawn,
        settings_env,
        workers={"source": ("source", 1), "build-1": ("build", 1), "build-2": ("build", 1)},
    )
    name, src = unique("par"), unique("src")
    put_source(stack.s3(), src, {"buildspec.yml": PARALLEL_BUILDSPEC})
    cp = stack.codepipeline()
    cp.create_pipeline(
        pipeline=_pipeline(
            name,
            src,
            [
                action(
                    "Left",
                    "Build",
                    "CodeBuild",
                    config={"ProjectName": "l"},
                    ins=("SourceOutput",),
                    outs=("LeftOut",),
                ),
                action(
                    "Right",
                    "Build",
                    "CodeBuild",
                    config={"ProjectName": "r"},
                    ins=("SourceOutput",),
                    outs=("RightOut",),
                ),
            ],
        )
    )
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"
    details = _details(stack, name, eid)
    runs = [
        _artifact_files(stack, details[("Build", a)]["output"]["outputArtifacts"][0]["s3location"])
        for a in ("Left", "Right")
    ]
    (s1, e1), (s2, e2) = [(float(r["start"]), float(r["end"])) for r in runs]
    assert s1 < e2 and s2 < e1, f"no overlap: {runs}"
    assert runs[0]["pid"] != runs[1]["pid"], "both ran in one worker process"


def test_failed_action_fails_the_execution_with_its_error_and_keeps_the_log(
    spawn: Any, settings_env: dict[str, str]
) -> None:
    stack = start_stack(spawn, settings_env)
    name, src = unique("fail"), unique("src")
    failing = (
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        "      - echo compiling the thing\n      - exit 3\n"
        "  post_build:\n    commands:\n      - echo post build ran\n"
    )
    put_source(stack.s3(), src, {"buildspec.yml": failing})
    cp = stack.codepipeline()
    cp.create_pipeline(
        pipeline=_pipeline(
            name,
            src,
            [
                action(
                    "Compile",
                    "Build",
                    "CodeBuild",
                    config={"ProjectName": "c"},
                    ins=("SourceOutput",),
                    outs=("Bin",),
                ),
                action(
                    "Lint", "Test", "CodeBuild", config={"ProjectName": "t"}, ins=("SourceOutput",)
                ),
                action(
                    "Package",
                    "Build",
                    "CodeBuild",
                    run_order=2,
                    config={"ProjectName": "p"},
                    ins=("Bin",),
                ),
            ],
        )
    )
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == "Failed"
    execution = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    summary = execution["pipelineExecution"].get("statusSummary", "")
    assert "Compile" in summary and "exit" in summary.lower()
    details = _details(stack, name, eid)
    assert ("Build", "Package") not in details  # nothing later started
    compile_ = details[("Build", "Compile")]
    assert compile_["status"] == "Failed"
    url = compile_["output"]["executionResult"]["externalExecutionUrl"]
    assert url.startswith("s3://")
    bucket, key = url[len("s3://") :].split("/", 1)
    log = stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert "compiling the thing" in log and "post build ran" in log


def test_killed_build_worker_is_recovered_within_a_minute(
    spawn: Any, settings_env: dict[str, str], build_writable: Path
) -> None:
    stack = start_stack(
        spawn, settings_env, workers={"source": ("source", 1), "build": ("build", 1)}
    )
    marks = build_writable
    buildspec = (
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        f"      - touch {marks}/started-$$\n"
        "      - sleep 6\n"
        "      - mkdir -p out && echo built > out/result.txt\n"
        "artifacts:\n  base-directory: out\n  files:\n    - result.txt\n"
    )
    name, src = unique("kill"), unique("src")
    put_source(stack.s3(), src, {"buildspec.yml": buildspec})
    cp = stack.codepipeline()
    pipeline = _pipeline(
        name,
        src,
        [
            action(
                "Compile",
                "Build",
                "CodeBuild",
                config={"ProjectName": "c"},
                ins=("SourceOutput",),
                outs=("Bin",),
            )
        ],
    )
    cp.create_pipeline(pipeline=pipeline)
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: any(marks.iterdir()), 60, message="the build never started")
    stack.processes["build"].kill()  # SIGKILL to the worker's whole process group
    killed_at = time.monotonic()
    replacement = spawn(
        "worker", "--pool", "build", "--concurrency", "1", "--hostname", "build2@%h", name="build-2"
    )
    wait_worker_ready(replacement)
    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=60) == "Succeeded"
    assert time.monotonic() - killed_at < 60
    compile_ = _details(stack, name, eid)[("Build", "Compile")]
    [out] = compile_["output"]["outputArtifacts"]
    assert _artifact_files(stack, out["s3location"]) == {"result.txt": "built"}
    bucket = pipeline["artifactStore"]["location"]
    listed = stack.s3().list_objects_v2(Bucket=bucket, Prefix=f"{name[:20]}/Bin/")
    assert listed.get("KeyCount", 0) == 1, listed.get("Contents")
