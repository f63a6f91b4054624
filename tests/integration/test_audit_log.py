"""The audit log's sinks against a real Redis and a real file: trimming, reading by page,
rotation, and what happens when a sink fails (the request is never failed by it)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine import keys
from engine.arns import Account
from engine.audit import (
    MAX_ANONYMOUS_REFUSALS_PER_SECOND,
    AuditConfig,
    AuditLog,
    Outcome,
)
from engine.auth.context import RequestContext
from engine.auth.principals import Principal

ALICE = RequestContext(Principal("alice"), "req-1", "AKIAALICE", "10.0.0.7")


def change(log: AuditLog, pipeline: str, ctx: RequestContext = ALICE) -> None:
    log.record_call("StartPipelineExecution", lambda: {"name": pipeline}, Outcome(200), ctx)


def test_records_go_to_the_stream_and_the_file_alike(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(redis_client, Account(), AuditConfig(file=path))
    change(log, "web")
    log.record_call("GetPipeline", lambda: {"name": "web"}, Outcome(200), ALICE)  # a read
    log.record_call(
        "GetPipeline", lambda: {"name": "nope"}, Outcome(400, "PipelineNotFoundException"), ALICE
    )
    rows: Any = redis_client.xrange(keys.AUDIT)
    [(_, first), (_, second)] = rows
    lines = path.read_text().splitlines()
    assert [json.loads(first["record"]), json.loads(second["record"])] == [
        json.loads(line) for line in lines
    ]
    record = json.loads(lines[0])
    assert record["principal_arn"] == "arn:aws:iam::111122223333:user/alice"
    assert (record["request_id"], record["source_ip"], record["access_key"]) == (
        "req-1",
        "10.0.0.7",
        "AKIAALICE",
    )
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_reads_are_recorded_when_asked(redis_client: redis.Redis) -> None:
    log = AuditLog(redis_client, Account(), AuditConfig(reads=True))
    log.record_call("GetPipeline", lambda: {"name": "web"}, Outcome(200), ALICE)
    assert redis_client.xlen(keys.AUDIT) == 1


def test_pages_forward_and_backward_with_filters(redis_client: redis.Redis) -> None:
    log = AuditLog(redis_client, Account())
    for i in range(30):
        change(log, "web" if i % 3 else "api")
    newest = log.read(limit=4, pipeline="web")
    assert len(newest.records) == 4 and newest.more
    older = log.read(before=newest.cursor, limit=100, pipeline="web")
    ids = [r["id"] for r in newest.records + older.records]
    assert len(ids) == 20 and ids == sorted(
        ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True
    )
    forward = log.read(after="0", limit=100, pipeline="api")
    assert len(forward.records) == 10 and not forward.more


def test_the_stream_is_trimmed_the_file_is_not(redis_client: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(redis_client, Account(), AuditConfig(file=path, max_entries=1000, fsync=False))
    for _ in range(2500):
        change(log, "web")
    assert redis_client.xlen(keys.AUDIT) < 2500
    assert len(path.read_text().splitlines()) == 2500


def test_a_renamed_file_is_reopened(redis_client: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(redis_client, Account(), AuditConfig(file=path))
    change(log, "before")
    path.rename(tmp_path / "audit.jsonl.1")
    change(log, "after")
    assert json.loads(path.read_text())["pipeline"] == "after"
    assert json.loads((tmp_path / "audit.jsonl.1").read_text())["pipeline"] == "before"


def test_appends_from_many_threads_never_interleave(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [
        AuditLog(redis_client, Account(), AuditConfig(file=path, fsync=False)) for _ in range(2)
    ]

    def write(log: AuditLog) -> None:
        for _ in range(200):
            change(log, "x" * 100)

    threads = [threading.Thread(target=write, args=(log,)) for log in logs * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 800 and all(json.loads(line)["pipeline"] == "x" * 100 for line in lines)


def test_a_failing_sink_never_fails_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    path = tmp_path / "audit.jsonl"
    log = AuditLog(dead, Account(), AuditConfig(file=path))
    with caplog.at_level(logging.ERROR, logger="conveyor.audit"):
        change(log, "web")  # does not raise
    assert log.failures == 1
    assert json.loads(path.read_text())["pipeline"] == "web"  # the file still has it
    assert any('"pipeline":"web"' in r.getMessage() for r in caplog.records)  # and the log


def test_an_unwritable_file_stops_the_start_not_a_request(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    with pytest.raises(OSError):
        AuditLog(redis_client, Account(), AuditConfig(file=tmp_path / "missing" / "audit.jsonl"))


def test_anonymous_refusals_are_rate_limited_and_counted(redis_client: redis.Redis) -> None:
    log = AuditLog(redis_client, Account())
    for _ in range(MAX_ANONYMOUS_REFUSALS_PER_SECOND * 3):
        log.record_refusal(
            operation="ListPipelines", outcome=Outcome(403, "InvalidSignatureException")
        )
    kept = redis_client.xlen(keys.AUDIT)
    assert MAX_ANONYMOUS_REFUSALS_PER_SECOND <= kept < MAX_ANONYMOUS_REFUSALS_PER_SECOND * 3
