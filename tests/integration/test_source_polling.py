"""PollForSourceChanges against real Redis and a real S3 endpoint, with the real Service."""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

import boto3
import pytest
import redis

from engine.execution import ExecutionState
from engine.service import Service
from engine.settings import Settings
from engine.store import Store
from providers import default_registry
from tests.helpers import wait_for
from tests.stack import action, s3_source_stage, unique, zip_bytes
from workers import devstack
from workers.triggers import (
    POLL_TRIGGER,
    S3_OBJECT_ETAG,
    S3_OBJECT_VERSION_ID,
    ChangeDetector,
    S3ObjectPoller,
    poll_once,
)

ACCEPTS_SOURCE_REVISIONS = (
    "source_revisions" in inspect.signature(Service.start_execution).parameters
)


class _Service(Service):
    """The real Service; until it takes ``source_revisions`` this drops them on the way in."""

    def start_execution(self, name: str, *args: Any, **kwargs: Any) -> ExecutionState:
        if not ACCEPTS_SOURCE_REVISIONS:
            kwargs.pop("source_revisions", None)
        return super().start_execution(name, *args, **kwargs)


def _service(client: redis.Redis) -> Service:
    return _Service(Store(client), default_registry(), default_bucket=unique("artifacts"))


@pytest.fixture
def service(redis_client: redis.Redis) -> Service:
    return _service(redis_client)


@pytest.fixture
def s3(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
    )


@pytest.fixture
def detectors(settings: Settings) -> list[ChangeDetector]:
    return [S3ObjectPoller.from_settings(settings)]


def _bucket(s3: Any, *, versioned: bool) -> str:
    name = unique("src")
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _put(s3: Any, bucket: str, text: str, key: str = "app.zip") -> str:
    """Upload a new revision; returns its version id (or ETag in an unversioned bucket)."""
    out = s3.put_object(Bucket=bucket, Key=key, Body=zip_bytes({"file.txt": text}))
    return str(out.get("VersionId") or out["ETag"].strip('"'))


def _create(service: Service, bucket: str, **config: str) -> str:
    name = unique("poll")
    stage = s3_source_stage(bucket)
    stage["actions"][0]["configuration"].update(config)
    approve = {"name": "Approve", "actions": [action("Gate", "Approval", "Manual")]}
    service.create_pipeline({"name": name, "stages": [stage, approve]})
    return name


def _polled(service: Service, name: str) -> list[ExecutionState]:
    return [e for e in service.list_executions(name) if e.trigger_type == POLL_TRIGGER]


def _ledger(client: redis.Redis, name: str) -> dict[str, Any]:
    from engine import keys

    return dict(json.loads(client.hget(keys.source_revisions(name), "Source/Fetch") or "{}"))


Poller = tuple[redis.Redis, Service, list[ChangeDetector]]


def _race(pollers: list[Poller], now: float) -> list[list[str]]:
    """poll_once in one thread per poller, released together."""
    barrier = threading.Barrier(len(pollers))
    results: list[list[str]] = []

    def run(client: redis.Redis, svc: Service, dets: list[ChangeDetector]) -> None:
        barrier.wait()
        results.append(poll_once(client, svc, dets, now=now))

    threads = [threading.Thread(target=run, args=p) for p in pollers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == len(pollers)
    return results


def test_a_new_object_version_starts_one_execution(
    redis_client: redis.Redis, service: Service, s3: Any, detectors: list[ChangeDetector]
) -> None:
    bucket = _bucket(s3, versioned=True)
    first = _put(s3, bucket, "one")
    name = _create(service, bucket)

    assert poll_once(redis_client, service, detectors, now=1.0) == []
    assert service.list_executions(name) == []
    assert _ledger(redis_client, name)["revisionId"] == first

    second = _put(s3, bucket, "two")
    (eid,) = poll_once(redis_client, service, detectors, now=2.0)
    (execution,) = _polled(service, name)
    assert execution.execution_id == eid
    assert execution.trigger_detail == "Fetch"
    entry = _ledger(redis_client, name)
    assert entry["revisionId"] == second
    assert entry["revisionType"] == S3_OBJECT_VERSION_ID
    assert entry["executionId"] == eid
    if ACCEPTS_SOURCE_REVISIONS:
        assert any(r.get("revisionId") == second for r in execution.source_revisions)

    assert poll_once(redis_client, service, detectors, now=3.0) == []
    assert len(service.list_executions(name)) == 1


def test_two_pollers_racing_start_one_execution_per_revision(
    redis_service: devstack.Service,
    redis_client: redis.Redis,
    service: Service,
    s3: Any,
    detectors: list[ChangeDetector],
    settings: Settings,
) -> None:
    bucket = _bucket(s3, versioned=True)
    _put(s3, bucket, "base")
    name = _create(service, bucket)
    poll_once(redis_client, service, detectors, now=0.0)

    clients = [redis.Redis.from_url(redis_service.url, decode_responses=True) for _ in range(4)]
    pollers: list[Poller] = [
        (c, _service(c), [S3ObjectPoller.from_settings(settings)]) for c in clients
    ]
    rounds = 5
    try:
        for i in range(rounds):
            _put(s3, bucket, f"revision {i}")
            results = _race(pollers, now=float(i + 1))
            # Racing pollers may each report the start, but it is one execution.
            assert len({eid for r in results for eid in r}) == 1, results
    finally:
        for c in clients:
            c.close()
    assert len(_polled(service, name)) == rounds


def test_an_unversioned_bucket_uses_the_etag(
    redis_client: redis.Redis, service: Service, s3: Any, detectors: list[ChangeDetector]
) -> None:
    bucket = _bucket(s3, versioned=False)
    _put(s3, bucket, "one")
    name = _create(service, bucket)
    poll_once(redis_client, service, detectors, now=1.0)
    etag = _put(s3, bucket, "two")
    assert len(poll_once(redis_client, service, detectors, now=2.0)) == 1
    entry = _ledger(redis_client, name)
    assert (entry["revisionId"], entry["revisionType"]) == (etag, S3_OBJECT_ETAG)
    # The same bytes again: the same ETag, so no change.
    _put(s3, bucket, "two")
    assert poll_once(redis_client, service, detectors, now=3.0) == []
    assert len(_polled(service, name)) == 1


def test_poll_for_source_changes_false_is_never_polled(
    redis_client: redis.Redis, service: Service, s3: Any, detectors: list[ChangeDetector]
) -> None:
    bucket = _bucket(s3, versioned=True)
    _put(s3, bucket, "one")
    name = _create(service, bucket, PollForSourceChanges="false")
    for i in range(3):
        poll_once(redis_client, service, detectors, now=float(i))
        _put(s3, bucket, f"next {i}")
    assert service.list_executions(name) == []
    assert _ledger(redis_client, name) == {}


def test_a_missing_object_or_bucket_is_retried_quietly(
    redis_client: redis.Redis, service: Service, s3: Any, detectors: list[ChangeDetector]
) -> None:
    bucket = _bucket(s3, versioned=True)
    name = _create(service, bucket)
    gone = _create(service, unique("no-such-bucket"))
    assert poll_once(redis_client, service, detectors, now=1.0) == []
    first = _put(s3, bucket, "late")
    assert poll_once(redis_client, service, detectors, now=2.0) == []  # the baseline
    assert _ledger(redis_client, name)["revisionId"] == first
    assert _ledger(redis_client, gone) == {}


def test_a_deleted_pipeline_is_no_longer_polled(
    redis_client: redis.Redis, service: Service, s3: Any, detectors: list[ChangeDetector]
) -> None:
    bucket = _bucket(s3, versioned=True)
    _put(s3, bucket, "one")
    name = _create(service, bucket)
    poll_once(redis_client, service, detectors, now=1.0)
    service.delete_pipeline(name)
    _put(s3, bucket, "two")
    assert poll_once(redis_client, service, detectors, now=2.0) == []


def test_beat_polls_sources(
    spawn: Any, redis_client: redis.Redis, service: Service, s3: Any
) -> None:
    bucket = _bucket(s3, versioned=True)
    _put(s3, bucket, "one")
    name = _create(service, bucket)
    beat = spawn("beat", env={"CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS": "0.5"}, name="beat")
    wait_for(lambda: _ledger(redis_client, name), 20, message="beat never saw the source")
    assert service.list_executions(name) == []
    first = _ledger(redis_client, name)["revisionId"]
    second = _put(s3, bucket, "two")
    if not ACCEPTS_SOURCE_REVISIONS:
        # Today's Service rejects source_revisions: every start fails and is rolled back.
        wait_for(
            lambda: "could not start an execution" in beat.log_path.read_text(),
            20,
            message="beat never tried to start an execution",
        )
        assert service.list_executions(name) == []
        assert _ledger(redis_client, name)["revisionId"] == first
        return
    (execution,) = wait_for(lambda: _polled(service, name), 20, message="no execution started")
    # The ledger records the revision once its execution started (just after).
    wait_for(
        lambda: _ledger(redis_client, name)["revisionId"] == second,
        10,
        message="beat never recorded the revision it started",
    )
    assert execution.trigger_detail == "Fetch"
