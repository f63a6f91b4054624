"""Leases, claims and timers: who runs an attempt, who should have, and when to look again.

* A **lease** is held by the worker running an attempt and renewed by its heartbeat. Claim,
  renewal and release are each one atomic step (a Lua script or one MULTI), and expiry is
  judged by Redis's clock (``TIME``), never a worker's, so clock skew between hosts cannot
  expire a live lease or keep a dead one.
* A **claim deadline** is written with every dispatch (in the transition's own MULTI): the
  attempt must be claimed by a worker before it passes. A worker that died after receiving
  the task but before claiming it leaves the deadline behind, and the sweep re-sends the
  task (unless it is still waiting in its queue) instead of waiting for the broker's
  visibility timeout.
* A **timer** is each execution's next deadline (action, approval or rule timeout).

All three are sorted sets scored in milliseconds of Redis's clock; the sweep reads what is
due with one bounded script call each.
"""

from __future__ import annotations

from enum import IntEnum

import redis

from engine import keys
from engine.messages import WorkItem
from engine.store.connection import redis_errors
from engine.store.runs import release

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: holders, leases, claims, the attempt's result. ARGV: member, holder, ttl ms.
# Returns 1 (claimed), 0 (another holder has it), 2 (its result is recorded already).
_CLAIM = (
    """
if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then return 0 end
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

# KEYS: a sorted set scored in ms. ARGV: limit. Members due by Redis's clock.
_DUE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# KEYS: a sorted set. ARGV: member, ms from now. Only for members still there.
_POSTPONE = (
    _NOW_MS
    + """
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
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
        self._renew = client.register_script(_RENEW)
        self._due = client.register_script(_DUE)
        self._postpone = client.register_script(_POSTPONE)

    def claim(self, item: WorkItem, holder: str, ttl: float) -> Claim:
        """Take the attempt's lease (or keep it, for the same holder) and clear its claim
        deadline — unless another worker holds it, or the attempt already has a recorded
        result (then it only needs applying), in one round trip."""
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

    def postpone_claim(self, item: WorkItem, seconds: float) -> None:
        with redis_errors("postponing a claim deadline"):
            self._postpone(keys=[keys.CLAIMS], args=[item.member(), int(seconds * 1000)])

    def drop_claim(self, item: WorkItem) -> None:
        with redis_errors("dropping a claim deadline"):
            self.r.zrem(keys.CLAIMS, item.member())

    def due_timers(self, limit: int) -> list[str]:
        """Timer members (``[pipeline, execution id]`` JSON) whose deadline has passed."""
        return [str(m) for m in self._due_members(keys.TIMERS, limit)]

    def drop_timer(self, member: str) -> None:
        with redis_errors("dropping a timer"):
            self.r.zrem(keys.TIMERS, member)

    def _due_members(self, key: str, limit: int) -> list[str]:
        with redis_errors(f"reading {key}"):
            return [str(m) for m in self._due(keys=[key], args=[limit])]
