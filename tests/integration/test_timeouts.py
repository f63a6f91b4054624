"""Every action has a timeout, even one no worker ever picks up.

Time is shortened for the test: ``CONVEYOR_MINUTE_SECONDS`` makes a "minute" of timeouts
last a fraction of a second, so the S3 deploy's AWS default of 90 minutes passes in seconds.
"""

from __future__ import annotations

import time

import boto3
import redis

from engine import keys
from tests.auth_support import codepipeline
from tests.conftest import Spawn
from tests.helpers import wait_for, wait_worker_ready
from tests.stack import action, put_source, s3_source_stage, unique, wait_status
from workers import devstack

MINUTE_SECONDS = 0.05  # the S3 deploy's default 90 minutes: 4.5 s


def test_an_action_no_worker_serves_times_out(
    spawn: Spawn, settings_env: dict[str, str], redis_client: redis.Redis
) -> None:
    env = {"CONVEYOR_MINUTE_SECONDS": str(MINUTE_SECONDS)}
    port = devstack.free_port()
    engine = spawn("worker", "--pool", "engine", "--hostname", "engine@%h", env=env)
    # Sources only: nothing consumes the deploy queue.
    sources = spawn("worker", "--pool", "source", "--hostname", "source@%h", env=env)
    spawn("beat", env=env)
    spawn("api", "--port", str(port), env=env)
    for w in (engine, sources):
        wait_worker_ready(w)
    api_url = f"http://127.0.0.1:{port}"
    wait_for(lambda: devstack.http_answers(api_url + "/health"), 30, message="no API")
    cp = codepipeline(api_url)
    s3 = boto3.client(
        "s3",
        endpoint_url=settings_env["CONVEYOR_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=settings_env["CONVEYOR_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=settings_env["CONVEYOR_S3_SECRET_ACCESS_KEY"],
    )
    name, src, target = unique("unserved"), unique("src"), unique("target")
    put_source(s3, src, {"index.html": "hi"})
    s3.create_bucket(Bucket=target)
    source = s3_source_stage(src)
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    cp.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": "arn:aws:iam::000000000000:role/conveyor",
            "artifactStore": {"type": "S3", "location": unique("artifacts")},
            "stages": [
                source,
                {
                    "name": "Deploy",
                    "actions": [
                        action(
                            "Deploy",
                            "Deploy",
                            "S3",
                            config={"BucketName": target, "Extract": "true"},
                            ins=("SourceOutput",),
                        )
                    ],
                },
            ],
        }
    )
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    begun = time.monotonic()
    assert wait_status(cp, name, eid, {"Failed", "Succeeded"}, 60) == "Failed"
    took = time.monotonic() - begun
    deploy = next(
        d
        for d in cp.list_action_executions(pipelineName=name)["actionExecutionDetails"]
        if d["actionName"] == "Deploy"
    )
    assert deploy["status"] == "Failed"
    assert deploy["output"]["executionResult"]["errorDetails"]["code"] == "TimedOut"
    timeout = 90 * MINUTE_SECONDS  # AWS's default for an S3 deploy action
    assert timeout <= took <= timeout + 10
    # While it waited, the task sat in its queue: the sweep saw that and did not pile up
    # copies of it (a lost task would have been sent again).
    broker = redis.Redis.from_url(settings_env["CONVEYOR_BROKER_URL"])
    assert broker.llen("conveyor.deploy.s3") == 1
    # Nothing of the attempt is left to expire later.
    assert redis_client.zcard(keys.CLAIMS) == 0
    assert redis_client.zcard(keys.LEASES) == 0
    assert redis_client.zcard(keys.TIMERS) == 0
