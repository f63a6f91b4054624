"""Jobs of CodePipeline's job API: what a Lambda-style handler reads (GetJobDetails) and
answers (PutJobSuccessResult / PutJobFailureResult) while a worker waits for the answer, and
the jobs of job-worker action types (Custom, ThirdParty), which wait in a queue per action
type until a job worker claims them.

A queued job goes Queued -> Dispatched (PollForJobs claimed it, with a fresh nonce) ->
InProgress (AcknowledgeJob with that nonce) -> Succeeded / Failed. A claim not acknowledged
within the acknowledgement timeout goes back to the queue (the next poll or acknowledgement
notices, inside its script), so the nonce of the stale claim no longer matches: two workers
never both hold one job. Every step is one Lua script, timed by Redis's clock.

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
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from engine import keys
from engine.arns import DEFAULT_ACCOUNT_ID
from engine.errors import (
    InvalidClientTokenError,
    InvalidJobStateError,
    InvalidNonceError,
    JobNotFoundError,
)
from engine.store.connection import redis_errors

# How long a finished job stays readable (GetJobDetails after the fact, late duplicates
# refused with InvalidJobStateException rather than JobNotFoundException).
FINISHED_TTL_SECONDS = 24 * 3600


class JobStatus(StrEnum):
    """The subset of CodePipeline's JobStatus a Conveyor job goes through."""

    QUEUED = "Queued"  # waiting in its action type's queue
    DISPATCHED = "Dispatched"  # claimed by PollForJobs, not acknowledged yet
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"  # the worker stopped waiting (timeout, stop): answers are refused

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT)


# How long a claimed job may wait for its AcknowledgeJob before it goes back to the queue.
DEFAULT_ACK_TIMEOUT_SECONDS = 60.0
# Most queued jobs one poll looks at (a queue filtered by queryParam may hold others first).
MAX_SCANNED = 1000


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
    # A ThirdParty job's client token of its current claim ("" otherwise).
    client_token: str = ""

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


_NOW = (
    "local function now() local t = redis.call('TIME') "
    "return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"
)


def _requeue(queue: str, claims: str) -> str:
    """Lua: claims whose acknowledgement timeout passed go back to the front of ``queue``,
    without their nonce and client token. ARGV[2] is the job key prefix."""
    return f"""
for _, id in ipairs(redis.call('ZRANGEBYSCORE', {claims}, '-inf', now())) do
  redis.call('ZREM', {claims}, id)
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'status') == 'Dispatched' then
    redis.call('HSET', key, 'status', 'Queued', 'nonce', '', 'client', '')
    redis.call('LPUSH', {queue}, id)
  end
end
"""


# KEYS: queue, claims. ARGV: (unused), job key prefix, ack timeout (ms), max jobs, query
# value ('' for any), most scanned, then a nonce and a client token per job wanted.
# Returns a flat list: id, nonce, client token, data JSON, per claimed job.
_POLL = (
    _NOW
    + _requeue("KEYS[1]", "KEYS[2]")
    + """
local out = {}
local wanted = tonumber(ARGV[4])
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[6]) - 1)) do
  if #out / 4 >= wanted then break end
  local key = ARGV[2] .. id
  local job = redis.call('HMGET', key, 'status', 'query', 'data')
  if not job[1] then
    redis.call('LREM', KEYS[1], 1, id)
  elseif job[1] == 'Queued' and (ARGV[5] == '' or job[2] == ARGV[5]) then
    local n = #out / 4
    local nonce, client = ARGV[7 + 2 * n], ARGV[8 + 2 * n]
    redis.call('LREM', KEYS[1], 1, id)
    redis.call('HSET', key, 'status', 'Dispatched', 'nonce', nonce, 'client', client)
    redis.call('ZADD', KEYS[2], now() + tonumber(ARGV[3]), id)
    table.insert(out, id)
    table.insert(out, nonce)
    table.insert(out, client)
    table.insert(out, job[3])
  end
end
return out
"""
)

# KEYS: job hash, its queue, its claims. ARGV: nonce, job key prefix, client token ('' for
# none). Returns the status after acknowledging, or 'missing', 'nonce', 'client'.
_ACKNOWLEDGE = (
    _NOW
    + _requeue("KEYS[2]", "KEYS[3]")
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'nonce', 'client')
if not job[1] then return 'missing' end
if ARGV[3] ~= '' and job[3] ~= ARGV[3] then return 'client' end
if job[2] ~= ARGV[1] then return 'nonce' end
if job[1] == 'Dispatched' then
  redis.call('HSET', KEYS[1], 'status', 'InProgress')
  redis.call('ZREM', KEYS[3], string.sub(KEYS[1], #ARGV[2] + 1))
  return 'InProgress'
end
return job[1]
"""
)

# The worker stops waiting for a job: whatever its state, it takes no result any more.
# KEYS: job hash, done list, queue, claims. ARGV: job id, ttl seconds.
_CLOSE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'Succeeded' or status == 'Failed' or status == 'TimedOut' then return status end
redis.call('HSET', KEYS[1], 'status', 'TimedOut', 'result', '{}')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[2], 'TimedOut')
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 'ok'
"""


@dataclass(frozen=True)
class ClaimedJob:
    """A job PollForJobs / PollForThirdPartyJobs handed out."""

    job_id: str
    nonce: str
    client_token: str
    data: dict[str, Any]


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        ack_timeout_seconds: float = DEFAULT_ACK_TIMEOUT_SECONDS,
    ) -> None:
        self.r = client
        self.account_id = account_id
        self.ack_timeout_seconds = ack_timeout_seconds
        self._finish = client.register_script(_FINISH)
        self._poll = client.register_script(_POLL)
        self._ack = client.register_script(_ACKNOWLEDGE)
        self._close = client.register_script(_CLOSE)

    def enqueue(
        self,
        job_id: str,
        data: dict[str, Any],
        owner: dict[str, Any],
        ttl_seconds: float,
        *,
        queue: str,
        query: str = "",
    ) -> None:
        """A job of a job-worker action type, queued for PollForJobs of ``queue`` (the
        action type's key) and, when the type has a queryable property, its value."""
        state = {"status": JobStatus.QUEUED.value, "nonce": "", "client": ""}
        self._put(job_id, data, owner, ttl_seconds, {**state, "queue": queue, "query": query})

    def poll(self, queue: str, max_jobs: int, query: str = "") -> list[ClaimedJob]:
        """Claim up to ``max_jobs`` queued jobs of ``queue`` (only those whose queryable
        value is ``query``, when given), atomically: each goes to one poller only."""
        wanted = max(1, min(max_jobs, MAX_SCANNED))
        tokens = []
        for _ in range(wanted):
            tokens += [secrets.token_hex(16), str(uuid.uuid4())]  # nonce, client token
        with redis_errors("polling for jobs"):
            flat = self._poll(
                keys=[keys.job_queue(queue), keys.job_claims(queue)],
                args=[
                    0,
                    keys.job(""),
                    int(self.ack_timeout_seconds * 1000),
                    wanted,
                    query,
                    MAX_SCANNED,
                    *tokens,
                ],
            )
        return [
            ClaimedJob(flat[i], flat[i + 1], flat[i + 2], json.loads(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]

    def acknowledge_claim(self, job_id: str, nonce: str, client_token: str = "") -> JobStatus:
        """AcknowledgeJob / AcknowledgeThirdPartyJob: the job's status after it (InProgress
        for a claim acknowledged in time). InvalidNonceError for another claim's nonce or an
        expired claim (the job went back to the queue), InvalidClientTokenError for a
        ThirdParty job's wrong client token."""
        with redis_errors("reading a job"):
            queue = self.r.hget(keys.job(job_id), "queue")
        if queue is None:
            # Not found, or a Lambda-style job (no queue): checked the simple way.
            return self.acknowledge(job_id, nonce)
        with redis_errors("acknowledging a job"):
            outcome = self._ack(
                keys=[keys.job(job_id), keys.job_queue(str(queue)), keys.job_claims(str(queue))],
                args=[nonce, keys.job(""), client_token],
            )
        if outcome == "missing":
            raise JobNotFoundError(f"job {job_id} was not found (it never existed or expired)")
        if outcome == "client":
            raise InvalidClientTokenError(
                f"the client token does not match job {job_id}'s current claim"
            )
        if outcome == "nonce":
            raise InvalidNonceError(
                f"nonce {nonce!r} is not the nonce of job {job_id}'s current claim: another "
                "worker claimed it, or the claim was not acknowledged in time and the job went "
                "back to the queue"
            )
        return JobStatus(outcome)

    def create(
        self, job_id: str, data: dict[str, Any], owner: dict[str, Any], ttl_seconds: float
    ) -> None:
        """A job handed straight to its handler (a Lambda-style one): in progress at once."""
        state = {"status": JobStatus.IN_PROGRESS.value, "nonce": secrets.token_hex(8)}
        self._put(job_id, data, owner, ttl_seconds, state)

    def _put(
        self,
        job_id: str,
        data: dict[str, Any],
        owner: dict[str, Any],
        ttl_seconds: float,
        state: dict[str, str],
    ) -> None:
        ttl = max(1, int(ttl_seconds))
        fields: dict[FieldT, EncodableT] = {
            "data": json.dumps(data, separators=(",", ":")),
            "owner": json.dumps(owner, separators=(",", ":")),
        }
        for name, value in state.items():
            fields[name] = value
        with redis_errors("creating a job"):
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(keys.job(job_id), mapping=fields)
            pipe.expire(keys.job(job_id), ttl)
            if "queue" in state:
                pipe.rpush(keys.job_queue(str(state["queue"])), job_id)
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
            client_token=raw.get("client") or "",
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
        if outcome in (JobStatus.QUEUED, JobStatus.DISPATCHED):
            raise InvalidJobStateError(
                f"job {job_id} is {outcome}: a job worker acknowledges a job it polled "
                "(AcknowledgeJob with the nonce PollForJobs returned) before reporting its result"
            )
        raise InvalidJobStateError(
            f"job {job_id} is {outcome}: its result was already recorded, or its action "
            "stopped waiting for one"
        )

    def acknowledge(self, job_id: str, nonce: str) -> JobStatus:
        job = self.get(job_id)
        if not secrets.compare_digest(job.nonce, nonce):
            raise InvalidNonceError(f"nonce {nonce!r} does not match job {job_id}")
        return job.status

    def record_progress(self, job: StoredJob, details: dict[str, Any]) -> None:
        """A continued job's ``executionDetails``, for its action's state while it runs."""
        action = (job.data.get("pipelineContext") or {}).get("action") or {}
        action_execution_id = action.get("actionExecutionId")
        if not action_execution_id or not details:
            return
        with redis_errors("recording progress"):
            self.r.set(
                keys.action_progress(action_execution_id),
                json.dumps(details),
                ex=FINISHED_TTL_SECONDS,
            )

    def progress(self, action_execution_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The last progress reported for each of these action executions that has one."""
        if not action_execution_ids:
            return {}
        with redis_errors("reading progress"):
            found = self.r.mget([keys.action_progress(a) for a in action_execution_ids])
        return {a: json.loads(v) for a, v in zip(action_execution_ids, found, strict=True) if v}

    def close(self, job_id: str) -> None:
        """The waiting worker gives up on the job (timeout, stop): it leaves its queue, and
        every later result or acknowledgement of it is refused."""
        with redis_errors("closing a job"):
            queue = str(self.r.hget(keys.job(job_id), "queue") or "")
            self._close(
                keys=[
                    keys.job(job_id),
                    keys.job_done(job_id),
                    keys.job_queue(queue),
                    keys.job_claims(queue),
                ],
                args=[job_id, FINISHED_TTL_SECONDS],
            )

    def wait(self, job_id: str, timeout: float) -> StoredJob:
        """The job after its result is recorded, or as it is once ``timeout`` seconds
        passed without one. One blocking pop: the worker does not poll."""
        job = self.get(job_id)
        if job.status.finished or timeout <= 0:
            return job
        with redis_errors("waiting for a job result"):
            # Redis takes fractional seconds; at least a millisecond, 0 would block forever.
            self.r.blpop([keys.job_done(job_id)], timeout=max(timeout, 0.001))
        return self.get(job_id)
