"""Jobs of CodePipeline's job API: what a Lambda-style handler reads (GetJobDetails) and
answers (PutJobSuccessResult / PutJobFailureResult) while a worker waits for the answer.

A job is created in progress by the worker that runs its action, holds the ``JobData`` the
handler was invoked with and the attempt it belongs to, and takes exactly one result: the
check and the write are one Lua script, so two answers racing cannot both be accepted. The
worker blocks on a list the script pushes to, so an answer wakes it at once without polling.
Jobs expire on their own: an open job lives as long as its action may run plus a grace, a
finished one a day, so nothing needs sweeping.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from engine import keys
from engine.arns import DEFAULT_ACCOUNT_ID
from engine.errors import InvalidJobStateError, InvalidNonceError, JobNotFoundError
from engine.store.connection import redis_errors

# How long a finished job stays readable (GetJobDetails after the fact, late duplicates
# refused with InvalidJobStateException rather than JobNotFoundException).
FINISHED_TTL_SECONDS = 24 * 3600


class JobStatus(StrEnum):
    """The subset of CodePipeline's JobStatus a Conveyor job goes through."""

    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"  # the worker stopped waiting (timeout, stop): answers are refused


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    data: dict[str, Any]
    owner: dict[str, Any]
    status: JobStatus
    nonce: str
    # The PutJobSuccessResult / PutJobFailureResult request as received, without jobId.
    result: dict[str, Any] | None
    # The account id the job reports (the installation's, see engine.arns).
    account_id: str = DEFAULT_ACCOUNT_ID

    def details(self) -> dict[str, Any]:
        """GetJobDetails' ``jobDetails``."""
        return {"id": self.job_id, "data": self.data, "accountId": self.account_id}


# KEYS: job hash, done list. ARGV: status, result JSON, ttl seconds.
# Returns "ok", "missing", or the status the job already has.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'InProgress' then return status end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 'ok'
"""


class JobStore:
    def __init__(self, client: redis.Redis, *, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.r = client
        self.account_id = account_id
        self._finish = client.register_script(_FINISH)

    def create(
        self, job_id: str, data: dict[str, Any], owner: dict[str, Any], ttl_seconds: float
    ) -> None:
        ttl = max(1, int(ttl_seconds))
        with redis_errors("creating a job"):
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(
                keys.job(job_id),
                mapping={
                    "data": json.dumps(data, separators=(",", ":")),
                    "owner": json.dumps(owner, separators=(",", ":")),
                    "status": JobStatus.IN_PROGRESS.value,
                    "nonce": secrets.token_hex(8),
                },
            )
            pipe.expire(keys.job(job_id), ttl)
            pipe.execute()

    def get(self, job_id: str) -> StoredJob:
        with redis_errors("reading a job"):
            raw: Any = self.r.hgetall(keys.job(job_id))
        if not raw:
            raise JobNotFoundError(f"job {job_id} was not found (it never existed or expired)")
        result = raw.get("result")
        return StoredJob(
            job_id=job_id,
            data=json.loads(raw["data"]),
            owner=json.loads(raw["owner"]),
            status=JobStatus(raw["status"]),
            nonce=raw["nonce"],
            result=json.loads(result) if result else None,
            account_id=self.account_id,
        )

    def finish(self, job_id: str, status: JobStatus, result: dict[str, Any]) -> None:
        """Record the job's one result. JobNotFoundError for an unknown job,
        InvalidJobStateError for one that already has its result (or timed out)."""
        with redis_errors("recording a job result"):
            outcome = self._finish(
                keys=[keys.job(job_id), keys.job_done(job_id)],
                args=[status.value, json.dumps(result), FINISHED_TTL_SECONDS],
            )
        if outcome == "ok":
            return
        if outcome == "missing":
            raise JobNotFoundError(f"job {job_id} was not found (it never existed or expired)")
        raise InvalidJobStateError(
            f"job {job_id} is {outcome}: its result was already recorded, or its action "
            "stopped waiting for one"
        )

    def acknowledge(self, job_id: str, nonce: str) -> JobStatus:
        job = self.get(job_id)
        if not secrets.compare_digest(job.nonce, nonce):
            raise InvalidNonceError(f"nonce {nonce!r} does not match job {job_id}")
        return job.status

    def wait(self, job_id: str, timeout: float) -> StoredJob:
        """The job after its result is recorded, or as it is once ``timeout`` seconds
        passed without one. One blocking pop: the worker does not poll."""
        job = self.get(job_id)
        if job.status is not JobStatus.IN_PROGRESS or timeout <= 0:
            return job
        with redis_errors("waiting for a job result"):
            # Redis takes fractional seconds; at least a millisecond, 0 would block forever.
            self.r.blpop([keys.job_done(job_id)], timeout=max(timeout, 0.001))
        return self.get(job_id)
