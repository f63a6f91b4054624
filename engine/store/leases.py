"""Leases, claims, results and timers: who runs an attempt, what it produced, who should
have run it, and when to look again.

* A **lease** is held by the worker running an attempt and renewed by its heartbeat. Claim,
  renewal and release are each one atomic step (a Lua script or one MULTI), and expiry is
  judged by Redis's clock (``TIME``), never a worker's, so clock skew between hosts cannot
  expire a live lease or keep a dead one.
* A **claim deadline** is written with every dispatch (in the transition's own MULTI): the
  attempt must be claimed by a worker before it passes. A worker that died after receiving
  the task but before claiming it leaves the deadline behind, and the sweep sends the task
  again (sooner when its queue is empty, later when it may be waiting its turn) instead of
  waiting for the broker's visibility timeout.
* A **result** is what a finished attempt produced, recorded (only by its lease's holder)
  before it is applied, so a worker that dies in between loses no finished work.
* A **timer** is each execution's next deadline (action, approval or rule timeout).

All three are sorted sets scored in milliseconds of Redis's clock; the sweep reads what is
due with one bounded script call each.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import redis

from engine import keys
from engine.execution import ActionResult
from engine.messages import WorkItem
from engine.store.connection import redis_errors

RESULT_TTL_SECONDS = 30 * 86400

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: holders, leases, claims, the attempt's result. ARGV: member, holder, ttl ms.
# Returns 1 (claimed), 0 (another holder has it), 2 (its result is recorded already).
_CLAIM = (
    """
if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
"""
    + _NOW_MS
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)

# KEYS: holders, leases. ARGV: member, holder, ttl ms.
_RENEW = (
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
"""
    + _NOW_MS
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# KEYS: holders, the attempt's result. ARGV: member, holder, result JSON, ttl s.
_RECORD = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
return 1
"""

# KEYS: a sorted set scored in ms. ARGV: limit. Members due by Redis's clock.
_DUE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# KEYS: claims, claim checks. ARGV: member, ms from now. Only for claims still there;
# returns how many times this claim was postponed.
_POSTPONE = (
    _NOW_MS
    + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 0 then
  return 0
end
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""
)


# KEYS: claims, claim checks. ARGV: member, ms from now.
_RESET = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""
)


class Claim(IntEnum):
    TAKEN = 1
    HELD_ELSEWHERE = 0
    ALREADY_DONE = 2


class Leases:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._claim = client.register_script(_CLAIM)
        self._record = client.register_script(_RECORD)
        self._renew = client.register_script(_RENEW)
        self._due = client.register_script(_DUE)
        self._postpone = client.register_script(_POSTPONE)
        self._reset = client.register_script(_RESET)

    def claim(self, item: WorkItem, holder: str, ttl: float) -> Claim:
        """Take the attempt's lease and clear its claim deadline — unless another worker
        holds it, or the attempt already has a recorded result (then it only needs
        applying), in one round trip."""
        member = item.member()
        with redis_errors("claiming a lease"):
            outcome = self._claim(
                keys=[keys.LEASE_HOLDERS, keys.LEASES, keys.CLAIMS, keys.result(member)],
                args=[member, holder, int(ttl * 1000)],
            )
        return Claim(int(outcome))

    def renew(self, item: WorkItem, holder: str, ttl: float) -> bool:
        """Extend the lease; False when this holder no longer has it."""
        with redis_errors("renewing a lease"):
            kept = self._renew(
                keys=[keys.LEASE_HOLDERS, keys.LEASES],
                args=[item.member(), holder, int(ttl * 1000)],
            )
        return bool(kept)

    def record_result(self, item: WorkItem, holder: str, result: ActionResult) -> bool:
        """Record a finished attempt's result, if ``holder`` still holds its lease (else the
        attempt was abandoned, timed out or given to another worker, and its result is
        dropped: nothing would ever apply or remove it)."""
        member = item.member()
        with redis_errors("recording a result"):
            kept = self._record(
                keys=[keys.LEASE_HOLDERS, keys.result(member)],
                args=[member, holder, result.model_dump_json(), RESULT_TTL_SECONDS],
            )
        return bool(kept)

    def get_result(self, item: WorkItem) -> ActionResult | None:
        with redis_errors("reading a result"):
            raw = self.r.get(keys.result(item.member()))
        return None if raw is None else ActionResult.model_validate_json(str(raw))

    def release(self, item: WorkItem) -> None:
        with redis_errors("releasing a lease"), self.r.pipeline() as p:
            release(p, item)
            p.execute()

    def holder(self, item: WorkItem) -> str | None:
        with redis_errors("reading a lease"):
            found = self.r.hget(keys.LEASE_HOLDERS, item.member())
        return None if found is None else str(found)

    def expired(self, limit: int) -> list[WorkItem]:
        """Leases whose holder stopped renewing them (by Redis's clock), oldest first."""
        return [WorkItem.from_member(str(m)) for m in self._due_members(keys.LEASES, limit)]

    def unclaimed(self, limit: int) -> list[WorkItem]:
        """Dispatched attempts past their claim deadline."""
        return [WorkItem.from_member(str(m)) for m in self._due_members(keys.CLAIMS, limit)]

    def postpone_claim(self, item: WorkItem, seconds: float) -> int:
        """Move the claim deadline on; returns how often it has been moved so far."""
        with redis_errors("postponing a claim deadline"):
            times = self._postpone(
                keys=[keys.CLAIMS, keys.CLAIM_CHECKS], args=[item.member(), int(seconds * 1000)]
            )
        return int(times)

    def reset_claim(self, item: WorkItem, seconds: float) -> None:
        """A new deadline after the task was sent again, counting postponements anew."""
        with redis_errors("resetting a claim deadline"):
            self._reset(
                keys=[keys.CLAIMS, keys.CLAIM_CHECKS], args=[item.member(), int(seconds * 1000)]
            )

    def drop_claim(self, item: WorkItem) -> None:
        with redis_errors("dropping a claim deadline"), self.r.pipeline() as p:
            p.zrem(keys.CLAIMS, item.member())
            p.hdel(keys.CLAIM_CHECKS, item.member())
            p.execute()

    def due_timers(self, limit: int) -> list[str]:
        """Timer members (``[pipeline, execution id]`` JSON) whose deadline has passed."""
        return [str(m) for m in self._due_members(keys.TIMERS, limit)]

    def drop_timer(self, member: str) -> None:
        with redis_errors("dropping a timer"):
            self.r.zrem(keys.TIMERS, member)

    def _due_members(self, key: str, limit: int) -> list[str]:
        with redis_errors(f"reading {key}"):
            return [str(m) for m in self._due(keys=[key], args=[limit])]


def release(p: Any, item: WorkItem) -> None:
    """Queue (on a pipeline) the removal of everything an attempt holds: its lease, claim
    deadline and recorded result."""
    member = item.member()
    p.hdel(keys.LEASE_HOLDERS, member)
    p.hdel(keys.CLAIM_CHECKS, member)
    p.zrem(keys.LEASES, member)
    p.zrem(keys.CLAIMS, member)
    p.delete(keys.result(member))
