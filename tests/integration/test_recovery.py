"""Crash recovery through the sweep: nothing committed is ever lost."""

from __future__ import annotations

from typing import Any

import redis

from engine import keys
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from providers import default_registry
from tests.helpers import wait_for
from tests.stack import action, put_source, s3_source_stage, start_stack, unique
from workers.artifacts import ArtifactStore

BUILDSPEC = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\n"


def test_dispatch_lost_after_commit_is_redone_by_the_sweep(
    spawn: Any, settings_env: dict[str, str], settings: Settings, redis_client: redis.Redis
) -> None:
    stack = start_stack(spawn, settings_env)
    name, src = unique("outbox"), unique("src")
    put_source(stack.s3(), src, {"buildspec.yml": BUILDSPEC})
    # A front end that commits the start and then dies before dispatching: no dispatcher.
    crashed = Service(
        Store.from_url(settings.redis_url, dispatcher=None),
        default_registry(),
        default_bucket=unique("artifacts"),
        ensure_bucket=ArtifactStore(settings).ensure_bucket,
    )
    crashed.create_pipeline(
        {
            "name": name,
            "stages": [
                s3_source_stage(src),
                {
                    "name": "Build",
                    "actions": [
                        action(
                            "Build",
                            "Build",
                            "CodeBuild",
                            config={"ProjectName": "p"},
                            ins=("SourceOutput",),
                        )
                    ],
                },
            ],
        }
    )
    execution = crashed.start_execution(name)
    assert redis_client.hlen(keys.OUTBOX) == 1  # committed together with the state
    cp = stack.codepipeline()

    def status() -> str | None:
        st: str = cp.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution.execution_id
        )["pipelineExecution"]["status"]
        return st if st in ("Succeeded", "Failed") else None

    final = wait_for(status, 60, interval=0.3, message="the sweep never re-dispatched")
    assert final == "Succeeded"
    assert redis_client.hlen(keys.OUTBOX) == 0


def test_a_broker_outage_at_dispatch_does_not_fail_the_committed_start(
    settings: Settings, redis_client: redis.Redis
) -> None:
    def broker_down(effect: object) -> None:
        raise ConnectionError("broker unreachable")

    service = Service(
        Store.from_url(settings.redis_url, dispatcher=broker_down),
        default_registry(),
        default_bucket="unused",
    )
    name = unique("outage")
    service.create_pipeline(
        {
            "name": name,
            "stages": [
                s3_source_stage("some-bucket"),
                {
                    "name": "Build",
                    "actions": [
                        action(
                            "Build",
                            "Build",
                            "CodeBuild",
                            config={"ProjectName": "p"},
                            ins=("SourceOutput",),
                        )
                    ],
                },
            ],
        }
    )
    execution = service.start_execution(name)  # committed; the dispatch waits in the outbox
    assert service.get_execution(name, execution.execution_id).status.value == "InProgress"
    assert redis_client.hlen(keys.OUTBOX) == 1
