"""Rules decided atomically: requests racing each other on a real Redis, 100 times each.

Every precondition is judged inside the compare-and-set, so whichever request commits first
decides the other's fate, and the outcome is always one a serial order could produce.
Both requests are released at once by a barrier from two threads with stores of their own
(two API processes, in effect).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from engine.errors import ConveyorError, StageNotRetryableError, UnableToRollbackStageError
from engine.execution import ActionResult, ArtifactLocation, ExecutionStatus, StageStatus
from engine.messages import ActionCompleted
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from providers import default_registry
from tests.stack import action, s3_source_stage, unique

REPETITIONS = 100


@pytest.fixture
def services(settings: Settings, redis_client: object) -> Iterator[tuple[Service, Service]]:
    stores = [Store.from_url(settings.redis_url) for _ in range(2)]
    yield tuple(Service(s, default_registry(), default_bucket="b") for s in stores)  # type: ignore[misc]
    for s in stores:
        s.r.close()


def _definition(name: str, deploy_config: str = "a") -> dict[str, Any]:
    source = s3_source_stage("src")
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    deploy = action(
        "Deploy",
        "Deploy",
        "S3",
        config={"BucketName": f"target-{deploy_config}", "Extract": "true"},
        ins=("SourceOutput",),
    )
    return {"name": name, "stages": [source, {"name": "Deploy", "actions": [deploy]}]}


def _complete(svc: Service, name: str, eid: str, stage: str, act: str, *, ok: bool) -> None:
    outputs = [ArtifactLocation(name="SourceOutput", bucket="b", key=eid)] if ok else []
    result = ActionResult(
        succeeded=ok, error_message=None if ok else "broke", output_artifacts=outputs
    )
    ex = svc.get_execution(name, eid)
    attempt = ex.action(stage, act).attempt  # type: ignore[union-attr]
    svc.store.apply(
        name,
        ActionCompleted(execution_id=eid, stage=stage, action=act, attempt=attempt, result=result),
    )


def _race(first: Callable[[], object], second: Callable[[], object]) -> list[object]:
    """Run both at the same moment; each outcome is its return value or its exception."""
    barrier = threading.Barrier(2)
    out: list[object] = [None, None]

    def run(i: int, fn: Callable[[], object]) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except ConveyorError as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_retry_against_a_concurrent_pipeline_update(services: tuple[Service, Service]) -> None:
    a, b = services
    seen: Counter[str] = Counter()
    for _ in range(REPETITIONS):
        name = unique("retry-race")
        a.create_pipeline(_definition(name))
        eid = a.start_execution(name).execution_id
        _complete(a, name, eid, "Source", "Fetch", ok=True)
        _complete(a, name, eid, "Deploy", "Deploy", ok=False)
        assert a.get_execution(name, eid).status is ExecutionStatus.FAILED

        retried, updated = _race(
            partial(a.retry_stage, name, "Deploy", eid, "FAILED_ACTIONS"),
            partial(b.update_pipeline, _definition(name, "b")),
        )
        assert not isinstance(updated, Exception), updated
        ex = a.get_execution(name, eid)
        if isinstance(retried, Exception):
            # The update committed first: the retry saw version 2 and was refused.
            assert isinstance(retried, StageNotRetryableError), retried
            assert "version 1 -> 2" in retried.message
            assert ex.status is ExecutionStatus.FAILED
            seen["update first"] += 1
        else:
            # The retry committed first, on version 1; the update came after it.
            assert ex.status is ExecutionStatus.IN_PROGRESS and ex.pipeline_version == 1
            assert ex.stage("Deploy").status is StageStatus.IN_PROGRESS  # type: ignore[union-attr]
            seen["retry first"] += 1
        assert a.get_pipeline(name).version == 2
    assert sum(seen.values()) == REPETITIONS
    print(f"retry vs update: {dict(seen)}")


def test_rollback_against_a_concurrent_stage_start(services: tuple[Service, Service]) -> None:
    a, b = services
    seen: Counter[str] = Counter()
    for _ in range(REPETITIONS):
        name = unique("rollback-race")
        a.create_pipeline(_definition(name))
        good = a.start_execution(name).execution_id
        _complete(a, name, good, "Source", "Fetch", ok=True)
        _complete(a, name, good, "Deploy", "Deploy", ok=True)
        newer = a.start_execution(name).execution_id

        rolled, _ = _race(
            partial(a.rollback_stage, name, "Deploy", good),
            # Its source finishing moves the newer execution into Deploy.
            partial(_complete, b, name, newer, "Source", "Fetch", ok=True),
        )
        ex = a.get_execution(name, newer)
        lane = a.run_state(name).lane("Deploy")
        assert len(lane.occupants) == 1, lane
        if isinstance(rolled, Exception):
            # The newer execution entered Deploy first: the stage was not idle.
            assert isinstance(rolled, UnableToRollbackStageError), rolled
            assert lane.occupants == [newer]
            assert ex.stage("Deploy").status is StageStatus.IN_PROGRESS  # type: ignore[union-attr]
            seen["stage start first"] += 1
        else:
            # The rollback took the stage first: the newer execution waits its turn.
            assert lane.occupants == [rolled.execution_id]  # type: ignore[attr-defined]
            assert ex.waiting_for == "Deploy" and lane.waiting == [newer]
            seen["rollback first"] += 1
    assert sum(seen.values()) == REPETITIONS
    print(f"rollback vs stage start: {dict(seen)}")
