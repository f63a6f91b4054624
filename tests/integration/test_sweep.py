"""The sweep against a real Redis: each item on its own, bounded work per pass.

No workers here: a list stands in for the broker (the dispatcher), and tests play the worker
by claiming leases and applying results through the store, as workers do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from engine import keys
from engine.execution import ActionResult, ArtifactLocation, ExecutionStatus
from engine.messages import ActionCompleted, Dispatch, Revoke, WorkItem
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from engine.store.leases import Claim
from providers import default_registry
from tests.stack import action, s3_source_stage, unique
from workers.sweep import CLAIM_PATIENCE, sweep

MINUTE = 0.02  # seconds per "minute" of timeouts: a 5-minute approval times out in 0.1 s


class Broker:
    """Records what was dispatched; fails on demand for one queue."""

    def __init__(self) -> None:
        self.sent: list[Dispatch | Revoke] = []
        self.broken_queue: str | None = None

    def __call__(self, effect: Dispatch | Revoke) -> None:
        if isinstance(effect, Dispatch) and effect.queue == self.broken_queue:
            raise ConnectionError(f"queue {effect.queue} is unreachable")
        self.sent.append(effect)


@pytest.fixture
def broker() -> Broker:
    return Broker()


@pytest.fixture
def service(settings: Settings, redis_client: redis.Redis, broker: Broker) -> Iterator[Service]:
    store = Store.from_url(settings.redis_url, dispatcher=broker, claim_seconds=60)
    yield Service(store, default_registry(), default_bucket="b", minute_seconds=MINUTE)
    store.r.close()


def _pipeline(name: str, *stages: dict[str, Any]) -> dict[str, Any]:
    source = s3_source_stage(unique("src"))
    source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    return {"name": name, "stages": [source, *stages]}


def _approval_stage() -> dict[str, Any]:
    return {"name": "Approve", "actions": [action("Gate", "Approval", "Manual", timeout=5)]}


def _source_done(service: Service, name: str, eid: str) -> None:
    result = ActionResult(
        succeeded=True,
        output_artifacts=[ArtifactLocation(name="SourceOutput", bucket="b", key="k")],
    )
    service.store.apply(
        name,
        ActionCompleted(execution_id=eid, stage="Source", action="Fetch", attempt=1, result=result),
    )


def test_a_poisoned_outbox_entry_does_not_stop_leases_or_timers(
    service: Service, broker: Broker, redis_client: redis.Redis
) -> None:
    store = service.store
    # A pipeline waiting at an approval that times out after 5 "minutes" (0.1 s).
    gated = unique("gated")
    service.create_pipeline(_pipeline(gated, _approval_stage()))
    waiting = service.start_execution(gated)
    _source_done(service, gated, waiting.execution_id)
    # A pipeline whose source action's worker took the lease and died.
    orphaned = unique("orphaned")
    service.create_pipeline(_pipeline(orphaned, _approval_stage()))
    running = service.start_execution(orphaned)
    item = WorkItem(orphaned, running.execution_id, "Source", "Fetch", 1)
    assert store.leases.claim(item, "dead-worker", ttl=0.05) is Claim.TAKEN
    # Poison: an entry nobody can read, and one whose broker queue fails every time.
    redis_client.hset(keys.OUTBOX, "poison:1", "{not json")
    redis_client.zadd(keys.OUTBOX_DUE, {"poison:1": 0})
    broker.broken_queue = "conveyor.broken.queue"
    stuck = Dispatch(
        execution_id="e-x", stage="S", action="A", attempt=1, queue="conveyor.broken.queue"
    )
    redis_client.hset(keys.OUTBOX, "poison:2", stuck.model_dump_json())
    redis_client.zadd(keys.OUTBOX_DUE, {"poison:2": 1})
    time.sleep(0.2)  # past the lease and the approval's deadline

    report = sweep(store, outbox_grace=0, claim_seconds=60)

    assert report.buried == 1 and report.failures == 1  # each poison handled on its own
    assert report.leases_expired == 1
    assert report.timers_fired >= 1
    # The expired lease was re-dispatched as a new attempt ...
    act = store.runs.load(running.execution_id).action("Source", "Fetch")  # type: ignore[union-attr]
    assert act is not None and act.attempt == 2
    assert any(isinstance(d, Dispatch) and d.attempt == 2 for d in broker.sent)
    # ... and the approval timed out, in the same sweep.
    gate = store.runs.load(waiting.execution_id)
    assert gate is not None and gate.status is ExecutionStatus.FAILED
    # The unreadable entry went to the dead letters; the failing one waits for a retry.
    assert json.loads(redis_client.hget(keys.OUTBOX_DEAD, "poison:1"))["entry"] == "{not json"  # type: ignore[arg-type]
    assert redis_client.hexists(keys.OUTBOX, "poison:2")
    broker.broken_queue = None
    assert sweep(store, outbox_grace=0, claim_seconds=60).redispatched == 1
    assert not redis_client.hexists(keys.OUTBOX, "poison:2")


def test_a_backlog_is_worked_off_in_bounded_passes(
    service: Service, broker: Broker, redis_client: redis.Redis
) -> None:
    pending = {f"backlog:{i}": i for i in range(25)}
    for eid in pending:
        d = Dispatch(execution_id=eid, stage="S", action="A", attempt=1, queue="q")
        redis_client.hset(keys.OUTBOX, eid, d.model_dump_json())
    redis_client.zadd(keys.OUTBOX_DUE, pending)
    passes = 0
    while redis_client.zcard(keys.OUTBOX_DUE):
        report = sweep(service.store, outbox_grace=0, claim_seconds=60, limit=10)
        assert report.redispatched <= 10
        passes += 1
    assert passes == 3
    assert len(broker.sent) == 25


def test_an_unclaimed_task_is_sent_again_at_once_or_after_patience_in_a_busy_queue(
    settings: Settings, redis_client: redis.Redis, broker: Broker
) -> None:
    """A worker that died after receiving a task, before claiming it, leaves the task's
    claim deadline behind. With its queue empty the task is sent again at the first sweep
    past the deadline; with other tasks waiting there it may just be waiting its turn, so
    it is sent again only after a few claim periods."""
    claim = 0.05
    store = Store.from_url(settings.redis_url, dispatcher=broker, claim_seconds=claim)
    service = Service(store, default_registry(), default_bucket="b")
    name = unique("unclaimed")
    service.create_pipeline(_pipeline(name, _approval_stage()))
    first = service.start_execution(name)
    assert [d.attempt for d in broker.sent if isinstance(d, Dispatch)] == [1]

    def sweep_after_deadline(depth: int) -> int:
        time.sleep(claim * 2)
        report = sweep(store, outbox_grace=60, claim_seconds=claim, queue_depth=lambda q: depth)
        return report.claims_resent

    assert sweep_after_deadline(0) == 1  # lost: nothing waits in its queue
    assert [d.execution_id for d in broker.sent] == [first.execution_id] * 2
    resent = [sweep_after_deadline(3) for _ in range(CLAIM_PATIENCE)]
    assert resent == [0] * (CLAIM_PATIENCE - 1) + [1]  # busy queue: after a few periods
    # Claimed at last: the deadline is gone and nothing is sent any more.
    item = WorkItem(name, first.execution_id, "Source", "Fetch", 1)
    assert store.leases.claim(item, "worker", ttl=60) is Claim.TAKEN
    assert redis_client.zscore(keys.CLAIMS, item.member()) is None
    assert sweep_after_deadline(0) == 0
    store.r.close()
