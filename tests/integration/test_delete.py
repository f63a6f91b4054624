"""DeletePipeline abandons what is in flight and leaves nothing behind, as on AWS."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis
from botocore.exceptions import ClientError

from engine import keys
from tests.conftest import Spawn
from tests.helpers import wait_for
from tests.stack import action, put_source, s3_source_stage, start_stack, unique


def test_deleting_a_pipeline_mid_build_leaves_no_process_lease_outbox_entry_or_timer(
    spawn: Spawn, settings_env: dict[str, str], redis_client: redis.Redis, build_writable: Path
) -> None:
    stack = start_stack(spawn, settings_env)
    cp, s3 = stack.codepipeline(), stack.s3()
    pid_file = build_writable / "build.pid"
    buildspec = (
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        f"      - sleep 120 & echo $! > {pid_file}; wait\n"
    )
    name, src = unique("doomed"), unique("src")
    put_source(s3, src, {"buildspec.yml": buildspec})
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    build = action(
        "Build", "Build", "CodeBuild", config={"ProjectName": "p"}, ins=("SourceOutput",)
    )
    cp.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": "arn:aws:iam::000000000000:role/conveyor",
            "artifactStore": {"type": "S3", "location": unique("artifacts")},
            "stages": [source, {"name": "Build", "actions": [build]}],
        }
    )
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, message="no build")
    sleeper = psutil.Process(int(pid_file.read_text()))
    assert sleeper.is_running()
    assert redis_client.zcard(keys.LEASES) == 1 and redis_client.zcard(keys.TIMERS) == 1

    cp.delete_pipeline(name=name)

    # The worker's heartbeat sees the execution gone and stops the build's processes.
    wait_for(
        lambda: not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE,
        15,
        message="the build's processes outlived the pipeline",
    )
    # Nothing of the pipeline or its execution is left in Redis.
    leftovers = [k for k in redis_client.scan_iter("*") if name in k or eid in k]
    assert leftovers == []
    for index in (keys.LEASES, keys.CLAIMS, keys.TIMERS, keys.OUTBOX_DUE):
        members = redis_client.zrange(index, 0, -1)
        assert not [m for m in members if name in m or eid in m], (index, members)
    assert not [f for f in redis_client.hkeys(keys.LEASE_HOLDERS) if eid in f]
    assert not [f for f in redis_client.hkeys(keys.OUTBOX) if name in f]
    with pytest.raises(ClientError) as exc:
        cp.list_pipeline_executions(pipelineName=name)
    assert exc.value.response["Error"]["Code"] == "PipelineNotFoundException"
    # A pipeline created again under the name starts with no history.
    cp.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": "arn:aws:iam::000000000000:role/conveyor",
            "artifactStore": {"type": "S3", "location": unique("artifacts")},
            "stages": [source, {"name": "Build", "actions": [build]}],
        }
    )
    assert cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"] == []
