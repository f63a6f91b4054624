"""Transitions: read -> ``decide`` -> compare-and-set write of the new state with its effects.

One transition reads, under WATCH, the pipeline's run record, the executions the event
names (plus any waiting at a stage transition), the pipeline's current version and Redis's
clock (one Lua read), asks :func:`engine.scheduler.decide`, and writes in one MULTI:

* the records that changed (the run record only if it did),
* the indexes derived from the change — the timer of each execution (its next deadline),
  the release of every lease, claim and recorded result of an attempt that stopped
  running, the approval-token index, the idempotency-token index,
* the effects: dispatches and revokes into the transactional outbox (plus a claim deadline
  per dispatch), events onto the stream.

Then the outbox entries are carried out and removed. A crash between commit and dispatch
loses nothing: the sweep carries out entries still pending after a grace period.

Contention: threads of one process take turns per pipeline (a lock in memory), so they
never make each other retry; processes that still collide fall back to a short Redis lock
per pipeline after their first conflict, so a burst of concurrent transitions queues
instead of retrying in circles.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import TypeAdapter

from engine import events, keys
from engine.arns import DEFAULT_ACCOUNT, Account
from engine.errors import (
    ConflictError,
    PipelineVersionNotFoundError,
    ServiceUnavailableError,
    StoreError,
)
from engine.execution import ExecutionState
from engine.messages import (
    Dispatch,
    Effect,
    Emit,
    Event,
    PipelineDeleted,
    Revoke,
    Started,
    WorkItem,
    WorkKind,
)
from engine.run import PipelineRun
from engine.scheduler import Decision, PipelineInfo, View, decide
from engine.store.connection import UNAVAILABLE, redis_errors
from engine.store.definitions import Definitions
from engine.store.leases import release

log = logging.getLogger("conveyor.store")

EVENT_STREAM_MAXLEN = 100_000
MAX_REMEMBERED_TOKENS = 1000
# Compare-and-set: give up after this many conflicts, or after Redis stayed away this long.
MAX_CAS_RETRIES = 200
OUTAGE_BUDGET_SECONDS = 30.0
LOCK_MS = 2000
PARSED_RECORDS = 2048

Dispatcher = Callable[[Dispatch | Revoke], None]
_EFFECT: TypeAdapter[Effect] = TypeAdapter(Effect)

# One Lua read: Redis's clock, the run record, the pipeline's current version and digest,
# an idempotency token's owner (and the oldest tokens to forget), then the executions.
_READ = """
local t = redis.call('TIME')
local run = redis.call('GET', KEYS[1])
local cur = redis.call('HMGET', KEYS[2], 'current', 'digest')
local owner = false
local forget = {}
if ARGV[1] ~= '' then
  owner = redis.call('HGET', KEYS[3], ARGV[1])
  local n = redis.call('LLEN', KEYS[4])
  local keep = tonumber(ARGV[2])
  if n >= keep then forget = redis.call('LRANGE', KEYS[4], 0, n - keep) end
end
local out = {t[1], t[2], run, cur[1], cur[2], owner, forget}
for i = 5, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class _Read:
    """What one compare-and-set attempt read, raw and parsed."""

    now: float
    run_raw: str | None
    run: PipelineRun
    pipeline: PipelineInfo | None
    token_owner: str | None
    forget_tokens: list[str]
    raw: dict[str, str] = field(default_factory=dict)  # execution id -> JSON as read
    executions: dict[str, ExecutionState] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # every execution id (deletes only)


class Runs:
    def __init__(
        self,
        client: redis.Redis,
        definitions: Definitions,
        *,
        claim_seconds: float = 15.0,
        dispatcher: Dispatcher | None = None,
        account: Account = DEFAULT_ACCOUNT,
    ) -> None:
        self.r = client
        self.account = account
        self.definitions = definitions
        self.claim_ms = int(claim_seconds * 1000)
        self.dispatcher = dispatcher
        self._read_script = client.register_script(_READ)
        self._unlock_script = client.register_script(_UNLOCK)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._parsed: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._parsed_guard = threading.Lock()

    # ------------------------------------------------------------------ reading

    def load_run(self, pipeline: str) -> PipelineRun:
        with redis_errors(f"reading the run record of {pipeline}"):
            raw = self.r.get(keys.run(pipeline))
        return self._parse_run(keys.run(pipeline), _text(raw), pipeline)

    def load(self, execution_id: str) -> ExecutionState | None:
        """An execution with its definition attached, or None."""
        return next(iter(self.load_many([execution_id]).values()), None)

    def load_many(self, execution_ids: Sequence[str]) -> dict[str, ExecutionState]:
        if not execution_ids:
            return {}
        with redis_errors("reading executions"):
            raws = self.r.mget([keys.execution(e) for e in execution_ids])
        out = {}
        for eid, raw in zip(execution_ids, raws, strict=True):
            ex = self._parse_execution(eid, _text(raw))
            if ex is not None:
                out[eid] = ex
        return out

    def execution_ids(self, pipeline: str, limit: int = 100) -> list[str]:
        with redis_errors(f"listing executions of {pipeline}"):
            ids = self.r.zrevrange(keys.pipeline_executions(pipeline), 0, limit - 1)
        return [str(e) for e in ids]

    def approval_owner(self, pipeline: str, token: str) -> str | None:
        """The execution that issued an approval token, if any did."""
        with redis_errors("reading the approval index"):
            owner = self.r.hget(keys.approvals(pipeline), token)
        return None if owner is None else str(owner)

    # ------------------------------------------------------------------ transitions

    def apply(self, pipeline: str, event: Event) -> Decision:
        """read -> decide -> compare-and-set; then carry out the committed effects."""
        started = time.monotonic()
        with self._local_lock(pipeline):
            conflicts = 0
            lock_token: str | None = None
            try:
                while True:
                    try:
                        decision = self._attempt(pipeline, event)
                        break
                    except redis.WatchError:
                        conflicts += 1
                        self._count_conflict()
                        if conflicts >= MAX_CAS_RETRIES:
                            raise ConflictError(
                                f"pipeline {pipeline} changed too often; try again"
                            ) from None
                        if lock_token is None:
                            lock_token = self._lock(pipeline)
                    except UNAVAILABLE as exc:
                        if time.monotonic() - started > OUTAGE_BUDGET_SECONDS:
                            raise ServiceUnavailableError(f"Redis is unreachable: {exc}") from exc
                        log.warning("Redis unavailable (%s); retrying the transition", exc)
                        time.sleep(0.2 + random.random() * 0.3)
                    except redis.RedisError as exc:
                        raise StoreError(
                            f"Redis refused a transition of {pipeline}: {exc}"
                        ) from exc
            finally:
                if lock_token is not None:
                    self._unlock(pipeline, lock_token)
        if decision.changed:
            self.carry_out(pipeline, decision.effects)
        return decision

    def _attempt(self, pipeline: str, event: Event) -> Decision:
        with self.r.pipeline() as p:
            read = self._read(p, pipeline, event)
            view = View(
                run=read.run,
                executions=read.executions,
                pipeline=read.pipeline,
                token_owner=read.token_owner,
                sources=read.raw,
            )
            decision = decide(view, event.model_copy(update={"now": read.now}))
            deleting = isinstance(event, PipelineDeleted)
            if not decision.changed and not deleting:
                p.unwatch()
                return decision
            p.multi()
            writes = self._write(p, pipeline, read, decision)
            if deleting:
                self._write_deletion(p, pipeline, read)
            p.execute()
        self._cache_written(writes)
        return decision

    def _read(self, p: Any, pipeline: str, event: Event) -> _Read:
        token = event.execution.client_request_token or "" if isinstance(event, Started) else ""
        ids = list(dict.fromkeys(event.execution_ids()))
        run_key, pipe_key = keys.run(pipeline), keys.pipeline(pipeline)
        watched = [run_key, pipe_key, *(keys.execution(e) for e in ids)]
        if token:
            watched.append(keys.tokens(pipeline))
        p.watch(*watched)
        read_keys = [
            run_key,
            pipe_key,
            keys.tokens(pipeline),
            keys.tokens_order(pipeline),
            *(keys.execution(e) for e in ids),
        ]
        try:
            # EVALSHA on the watching connection itself: going through the Script object
            # would make the pipeline check its scripts exist (one more round trip) at EXEC.
            reply = p.evalsha(
                self._read_script.sha, len(read_keys), *read_keys, token, MAX_REMEMBERED_TOKENS
            )
        except redis.exceptions.NoScriptError:
            self.r.script_load(_READ)  # a restarted Redis forgot it
            reply = p.evalsha(
                self._read_script.sha, len(read_keys), *read_keys, token, MAX_REMEMBERED_TOKENS
            )
        sec, usec, run_raw, current, digest, owner, forget = reply[:7]
        read = _Read(
            now=int(sec) + int(usec) / 1e6,
            run_raw=run_raw,
            run=self._parse_run(run_key, run_raw, pipeline),
            pipeline=self._pipeline_info(pipeline, current, digest),
            token_owner=owner,
            forget_tokens=[str(t) for t in forget or []],
        )
        for eid, raw in zip(ids, reply[7:], strict=True):
            self._keep(read, eid, raw)
        # Any transition may admit or supersede an execution waiting at a stage; deleting
        # the pipeline touches every active one.
        more = [e for e in read.run.waiting_ids() if e not in read.raw]
        if event.loads_active:
            more += [e for e in read.run.active if e not in read.raw and e not in more]
            p.watch(keys.pipeline_executions(pipeline))
            read.history = [str(e) for e in p.zrange(keys.pipeline_executions(pipeline), 0, -1)]
        if more:
            p.watch(*(keys.execution(e) for e in more))
            for eid, raw in zip(more, p.mget([keys.execution(e) for e in more]), strict=True):
                self._keep(read, eid, raw)
        return read

    def _keep(self, read: _Read, execution_id: str, raw: str | None) -> None:
        try:
            ex = self._parse_execution(execution_id, raw)
        except PipelineVersionNotFoundError:
            return  # its pipeline was deleted since: as good as gone
        if ex is not None and raw is not None:
            read.raw[execution_id] = raw
            read.executions[execution_id] = ex

    def _pipeline_info(
        self, pipeline: str, current: str | None, digest: str | None
    ) -> PipelineInfo | None:
        if current is None or digest is None:
            return None
        version = int(current)
        try:
            declaration = self.definitions.declaration(pipeline, version, digest)
        except PipelineVersionNotFoundError:
            return None  # deleted between the two reads
        return PipelineInfo(version, declaration)

    # ------------------------------------------------------------------ writing

    def _write(
        self, p: Any, pipeline: str, read: _Read, decision: Decision
    ) -> list[tuple[str, str, Any]]:
        """Queue the MULTI's commands; returns (key, raw, record) of what it writes."""
        now_ms = int(read.now * 1000)
        writes: list[tuple[str, str, Any]] = []
        run_raw = decision.run.model_dump_json()
        if run_raw != read.run_raw:
            p.set(keys.run(pipeline), run_raw)
            writes.append((keys.run(pipeline), run_raw, decision.run))
        new_tokens: list[str] = []
        for eid, ex in decision.executions.items():
            raw = ex.model_dump_json()
            old = read.executions.get(eid)
            p.set(keys.execution(eid), raw)
            writes.append((keys.execution(eid), raw, ex))
            if old is None:
                p.zadd(keys.pipeline_executions(pipeline), {eid: ex.start_time}, nx=True)
                if ex.client_request_token:
                    p.hset(keys.tokens(pipeline), ex.client_request_token, eid)
                    p.rpush(keys.tokens_order(pipeline), ex.client_request_token)
                    new_tokens.append(ex.client_request_token)
            self._write_indexes(p, pipeline, old, ex)
        if new_tokens and read.forget_tokens:
            p.ltrim(keys.tokens_order(pipeline), len(read.forget_tokens), -1)
            p.hdel(keys.tokens(pipeline), *read.forget_tokens)
        for i, eff in enumerate(decision.effects):
            if isinstance(eff, Emit):
                emitter = decision.executions.get(eff.execution_id) or read.executions.get(
                    eff.execution_id
                )
                if emitter is not None:
                    p.xadd(
                        keys.EVENTS,
                        {"event": json.dumps(events.build(emitter, eff, read.now, self.account))},
                        maxlen=EVENT_STREAM_MAXLEN,
                        approximate=True,
                    )
                continue
            eid = outbox_id(pipeline, eff)
            p.hset(keys.OUTBOX, eid, eff.model_dump_json())
            p.zadd(keys.OUTBOX_DUE, {eid: now_ms + i})
            if isinstance(eff, Dispatch):
                p.zadd(keys.CLAIMS, {eff.item(pipeline).member(): now_ms + self.claim_ms})
        return writes

    def _write_indexes(
        self, p: Any, pipeline: str, old: ExecutionState | None, new: ExecutionState
    ) -> None:
        """The indexes that follow from one execution's change."""
        member = timer_member(pipeline, new.execution_id)
        due = new.next_deadline()
        if due != (old.next_deadline() if old else None):
            if due is None:
                p.zrem(keys.TIMERS, member)
            else:
                p.zadd(keys.TIMERS, {member: int(due * 1000)})
        for item in _running_items(pipeline, old) - _running_items(pipeline, new):
            release(p, item)
        issued = _approval_tokens(new) - (_approval_tokens(old) if old is not None else set())
        for token in issued:
            p.hset(keys.approvals(pipeline), token, new.execution_id)

    # ------------------------------------------------------------------ deleting

    def delete_pipeline(self, pipeline: str) -> Decision:
        """Abandon every active execution (revoking its tasks) and remove every record the
        pipeline has, in one transition; then drop its dispatches still in the outbox."""
        decision = self.apply(pipeline, PipelineDeleted())
        with redis_errors("clearing the outbox of a deleted pipeline"):
            stale = [
                str(e)
                for e in self.r.zrange(keys.OUTBOX_DUE, 0, -1)
                if str(e).startswith(f"{pipeline}:") and ":revoke:" not in str(e)
            ]
            if stale:
                # They would only start tasks that find no execution.
                self._outbox_done(stale)
        return decision

    def _write_deletion(self, p: Any, pipeline: str, read: _Read) -> None:
        """Queue the removal of every record of the pipeline (after its executions' last
        writes, so the abandoned attempts' leases and timers are released first)."""
        ids = list(dict.fromkeys([*read.history, *read.executions]))
        for chunk in _chunks([keys.execution(e) for e in ids], 500):
            p.delete(*chunk)
        for chunk in _chunks([timer_member(pipeline, e) for e in ids], 500):
            p.zrem(keys.TIMERS, *chunk)
        p.delete(
            keys.pipeline(pipeline),
            keys.run(pipeline),
            keys.pipeline_executions(pipeline),
            keys.tokens(pipeline),
            keys.tokens_order(pipeline),
            keys.approvals(pipeline),
            keys.source_revisions(pipeline),
            keys.pipeline_tags(pipeline),
            keys.action_revisions(pipeline),
        )
        p.srem(keys.PIPELINES, pipeline)

    # ------------------------------------------------------------------ the outbox

    def carry_out(self, pipeline: str, effects: Sequence[Effect]) -> None:
        """Dispatch and revoke, then mark each done; an effect that fails stays in the outbox
        for the sweep (the caller's transition happened, so it sees no error)."""
        if self.dispatcher is None:
            return  # the sweep of a process that has one will carry them out
        done = []
        for eff in effects:
            if isinstance(eff, Emit):
                continue
            try:
                self.dispatcher(eff)
            except Exception:
                log.warning("could not carry out %s now; the sweep will", eff, exc_info=True)
                continue
            done.append(outbox_id(pipeline, eff))
        if done:
            try:
                self._outbox_done(done)
            except Exception:  # carried out already: a repeat from the sweep is harmless
                log.warning("could not clear %d outbox entries", len(done), exc_info=True)

    def pending_outbox(
        self, older_than_ms: int, limit: int
    ) -> Iterator[tuple[str, Dispatch | Revoke | None]]:
        """Outbox entries written before ``older_than_ms``; None for an unreadable entry."""
        with redis_errors("reading the outbox"):
            ids = [
                str(e)
                for e in self.r.zrangebyscore(
                    keys.OUTBOX_DUE, "-inf", older_than_ms, start=0, num=limit
                )
            ]
            raws = self.r.hmget(keys.OUTBOX, ids) if ids else []
        for eid, raw in zip(ids, raws, strict=True):
            if raw is None:
                self._outbox_done([eid])
                continue
            try:
                eff = _EFFECT.validate_json(raw)
            except ValueError:
                yield eid, None
                continue
            yield eid, eff if isinstance(eff, Dispatch | Revoke) else None

    def redo_outbox(self, eid: str, eff: Dispatch | Revoke) -> None:
        if self.dispatcher is not None:
            self.dispatcher(eff)
            self._outbox_done([eid])

    def redo_dispatch(self, dispatch: Dispatch) -> None:
        """Send an attempt's task again (its first delivery was lost with a worker)."""
        if self.dispatcher is None:
            raise RuntimeError("this store cannot dispatch (no dispatcher)")
        self.dispatcher(dispatch)

    def bury_outbox(self, eid: str, why: str) -> None:
        """Move an entry that can never be carried out to the dead-letter hash."""
        with redis_errors("moving an outbox entry"), self.r.pipeline() as p:
            p.hget(keys.OUTBOX, eid)
            raw = p.execute()[0]
            p.hset(keys.OUTBOX_DEAD, eid, json.dumps({"entry": raw, "why": why}))
            p.hdel(keys.OUTBOX, eid)
            p.zrem(keys.OUTBOX_DUE, eid)
            p.execute()

    def _outbox_done(self, ids: Sequence[str]) -> None:
        with redis_errors("clearing outbox entries"), self.r.pipeline() as p:
            p.hdel(keys.OUTBOX, *ids)
            p.zrem(keys.OUTBOX_DUE, *ids)
            p.execute()

    # ------------------------------------------------------------------ parsing, locking

    def _parse_run(self, key: str, raw: str | None, pipeline: str) -> PipelineRun:
        if raw is None:
            return PipelineRun(name=pipeline)
        run: PipelineRun = self._cached(key, raw, PipelineRun.model_validate_json)
        return run

    def _parse_execution(self, execution_id: str, raw: str | None) -> ExecutionState | None:
        """Parse (once per distinct content: a record read again unchanged is not parsed
        again) and attach the definition. Callers must not mutate what they get."""
        if raw is None:
            return None
        ex: ExecutionState = self._cached(
            keys.execution(execution_id), raw, ExecutionState.model_validate_json
        )
        return self.definitions.attach(ex)

    def _cached(self, key: str, raw: str, parse: Callable[[str], Any]) -> Any:
        with self._parsed_guard:
            hit = self._parsed.get(key)
            if hit is not None and hit[0] == raw:
                self._parsed.move_to_end(key)
                return hit[1]
        value = parse(raw)
        self._remember(key, raw, value)
        return value

    def _remember(self, key: str, raw: str, value: Any) -> None:
        with self._parsed_guard:
            self._parsed[key] = (raw, value)
            self._parsed.move_to_end(key)
            while len(self._parsed) > PARSED_RECORDS:
                self._parsed.popitem(last=False)

    def _cache_written(self, writes: list[tuple[str, str, Any]]) -> None:
        for key, raw, value in writes:
            self._remember(key, raw, value)

    @contextmanager
    def _local_lock(self, pipeline: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(pipeline, threading.Lock())
        with lock:
            yield

    def _lock(self, pipeline: str) -> str | None:
        """After a conflict: queue behind other processes on a short Redis lock. None: no
        lock (its holder died and it has not expired yet, or Redis is away): go on
        optimistically, the compare-and-set still decides."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_MS / 1000
        try:
            while time.monotonic() < deadline:
                if self.r.set(keys.pipeline_lock(pipeline), token, nx=True, px=LOCK_MS):
                    return token
                time.sleep(0.001 + random.random() * 0.004)
        except redis.RedisError:
            log.debug("no lock for %s; going on without", pipeline, exc_info=True)
        return None

    def _unlock(self, pipeline: str, token: str) -> None:
        try:
            self._unlock_script(keys=[keys.pipeline_lock(pipeline)], args=[token])
        except redis.RedisError:
            log.debug("could not release the lock of %s; it expires", pipeline, exc_info=True)

    def _count_conflict(self) -> None:
        with suppress(redis.RedisError):
            self.r.incr(keys.CAS_RETRIES)


# ---------------------------------------------------------------------------- helpers


def outbox_id(pipeline: str, eff: Dispatch | Revoke) -> str:
    """Deterministic per attempt: writing the same effect twice writes one entry."""
    tid = eff.item(pipeline).task_id
    return f"{pipeline}:revoke:{tid}" if isinstance(eff, Revoke) else f"{pipeline}:{tid}"


def timer_member(pipeline: str, execution_id: str) -> str:
    return json.dumps([pipeline, execution_id])


def _approval_tokens(ex: ExecutionState) -> set[str]:
    return {a.approval_token for st in ex.stages for a in st.actions if a.approval_token}


def _running_items(pipeline: str, ex: ExecutionState | None) -> set[WorkItem]:
    """The attempts of an execution that a worker may be running right now."""
    if ex is None or (ex.status.terminal and not ex.running()):
        return set()
    items = {
        WorkItem(pipeline, ex.execution_id, a.stage, a.name, a.attempt)
        for a in ex.running()
        if a.approval_token is None
    }
    items |= {
        WorkItem(
            pipeline, ex.execution_id, st.name, rr.rule_execution_id, rr.attempt, WorkKind.RULE
        )
        for st in ex.stages
        for rr in st.rules
        if rr.in_progress and rr.attempt > 0
    }
    return items


def _text(raw: Any) -> str | None:
    """redis-py's reply as text (the client decodes; this tells mypy so)."""
    return None if raw is None else str(raw)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
