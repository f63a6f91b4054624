"""Redis persistence: pipelines, executions, results, leases, the outbox and the event stream.

Every transition is read -> ``decide`` -> compare-and-set write of the new state *together
with its effects* (a transactional outbox) in one MULTI, then the effects are carried out.
A crash between the commit and the dispatch loses nothing: the sweep carries out outbox
entries that stayed pending past a grace period. Event emission needs no outbox: the XADD is
part of the same MULTI as the state it describes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from pydantic import TypeAdapter

from engine import events, keys
from engine.errors import ConflictError, ExecutionNotFoundError, ServiceUnavailableError
from engine.execution import ActionResult, ExecutionState
from engine.messages import Dispatch, Effect, Event, RetryRequested, Revoke
from engine.run import PipelineRun
from engine.scheduler import decide

_EFFECT = TypeAdapter(Effect)
log = logging.getLogger("conveyor.store")
MAX_CAS_RETRIES = 50
EVENT_STREAM_MAXLEN = 100_000

Dispatcher = Callable[[Dispatch | Revoke], None]


class Store:
    def __init__(self, client: redis.Redis, dispatcher: Dispatcher | None = None) -> None:
        self.r = client
        self.dispatcher = dispatcher

    @classmethod
    def from_url(cls, url: str, dispatcher: Dispatcher | None = None) -> Store:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=30,
            socket_connect_timeout=5,
            retry_on_timeout=True,
            health_check_interval=30,
        )
        return cls(client, dispatcher)

    # ------------------------------------------------------------------ pipelines

    def put_pipeline(self, name: str, definition: dict[str, Any], *, create: bool) -> int:
        """Store a new version; returns it. ``create`` demands the name be new, else existing."""
        key = keys.pipeline(name)
        with self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(key)  # type: ignore[no-untyped-call]
                    current = p.hget(key, "current")
                    if create and current is not None:
                        return -1
                    if not create and current is None:
                        return 0
                    version = int(current or 0) + 1
                    definition = {**definition, "version": version}
                    now = time.time()
                    p.multi()
                    p.hset(
                        key,
                        mapping={
                            "current": version,
                            f"v{version}": json.dumps(definition),
                            "updated": now,
                            **({"created": now} if create else {}),
                        },
                    )
                    p.sadd(keys.PIPELINES, name)
                    p.execute()
                    return version
                except redis.WatchError:
                    continue
        raise ConflictError(f"pipeline {name} is being changed concurrently; try again")

    def get_pipeline(
        self, name: str, version: int | None = None
    ) -> tuple[dict[str, Any], dict[str, float]] | None:
        h = self.r.hgetall(keys.pipeline(name))
        if not h:
            return None
        v = version or int(h["current"])
        raw = h.get(f"v{v}")
        if raw is None:
            return None
        meta = {"created": float(h.get("created", 0)), "updated": float(h.get("updated", 0))}
        return json.loads(raw), meta

    def list_pipelines(self) -> list[str]:
        return sorted(str(n) for n in self.r.smembers(keys.PIPELINES))

    def delete_pipeline(self, name: str) -> None:
        with self.r.pipeline() as p:
            p.delete(keys.pipeline(name))
            p.delete(keys.run(name))
            p.delete(keys.source_revisions(name))
            p.srem(keys.ACTIVE_RUNS, name)
            p.srem(keys.PIPELINES, name)
            p.execute()

    # ------------------------------------------------------------------ executions

    def load_run(self, pipeline: str) -> PipelineRun:
        raw = self._get(keys.run(pipeline))
        return PipelineRun(name=pipeline) if raw is None else PipelineRun.model_validate_json(raw)

    def load(self, execution_id: str) -> ExecutionState:
        raw = self._get(keys.execution(execution_id))
        if raw is None:
            raise ExecutionNotFoundError(f"execution {execution_id} not found")
        return ExecutionState.model_validate_json(raw)

    def try_load(self, execution_id: str) -> ExecutionState | None:
        raw = self._get(keys.execution(execution_id))
        return None if raw is None else ExecutionState.model_validate_json(raw)

    def execution_ids(self, pipeline: str, limit: int = 100) -> list[str]:
        ids = self.r.zrevrange(keys.pipeline_executions(pipeline), 0, limit - 1)
        return [str(e) for e in ids]

    def active_pipelines(self) -> list[str]:
        return [str(p) for p in self.r.smembers(keys.ACTIVE_RUNS)]

    def apply(self, pipeline: str, event: Event) -> PipelineRun:
        """read -> decide -> compare-and-set; then carry out the committed effects.

        Returns the new run with ``finished`` holding the executions this event ended.
        """
        return self.apply_changed(pipeline, event)[0]

    def apply_changed(self, pipeline: str, event: Event) -> tuple[PipelineRun, bool]:
        """Like :meth:`apply`, and also whether the event changed anything (False: it was a
        duplicate or stale, e.g. an approval someone else answered first)."""
        key = keys.run(pipeline)
        with self.r.pipeline() as p:
            for _ in range(MAX_CAS_RETRIES):
                try:
                    p.watch(key)  # type: ignore[no-untyped-call]
                    raw = p.get(key)
                    run = (
                        PipelineRun(name=pipeline)
                        if raw is None
                        else PipelineRun.model_validate_json(raw)
                    )
                    if isinstance(event, RetryRequested):
                        # The failed execution as it is now, read under the same WATCH: a
                        # snapshot taken before an earlier retry must not revive it twice.
                        current = p.get(keys.execution(event.execution.execution_id))
                        if current is not None:
                            event = event.model_copy(
                                update={"execution": ExecutionState.model_validate_json(current)}
                            )
                    new, effects = decide(run, event)
                    if new is run:
                        p.unwatch()
                        return run, False
                    new.seq = run.seq + 1
                    p.multi()
                    self._write_executions(p, run, new)
                    p.set(key, new.model_dump_json(exclude={"finished"}))
                    if new.executions:
                        p.sadd(keys.ACTIVE_RUNS, pipeline)
                    else:
                        p.srem(keys.ACTIVE_RUNS, pipeline)
                    ids = self._stage_effects(p, new, effects)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
                except redis.ConnectionError as exc:
                    raise ServiceUnavailableError(f"Redis is unreachable: {exc}") from exc
            else:
                raise ConflictError(f"pipeline {pipeline} changed too often; try again")
        self._carry_out(ids, effects)
        return new, True

    def _write_executions(self, p: Any, old: PipelineRun, new: PipelineRun) -> None:
        """Every execution this transition changed, to its own key (readers use those)."""
        for ex in [*new.executions.values(), *new.finished.values()]:
            before = old.executions.get(ex.execution_id)
            if before is not None and before == ex:
                continue
            ex.seq += 1
            p.set(keys.execution(ex.execution_id), ex.model_dump_json())
            if before is None:
                p.zadd(
                    keys.pipeline_executions(ex.pipeline_name),
                    {ex.execution_id: ex.start_time},
                    nx=True,
                )

    def _stage_effects(self, p: Any, run: PipelineRun, effects: list[Effect]) -> list[str | None]:
        ids: list[str | None] = []
        now = time.time()
        for i, eff in enumerate(effects):
            if isinstance(eff, Dispatch | Revoke):
                eid = f"{run.name}:{run.seq}:{i}"
                p.hset(keys.OUTBOX, eid, eff.model_dump_json())
                p.zadd(keys.OUTBOX_DUE, {eid: now})
                ids.append(eid)
            else:
                ex = run.executions.get(eff.execution_id) or run.finished.get(eff.execution_id)
                if ex is not None:
                    p.xadd(
                        keys.EVENTS,
                        {"event": json.dumps(events.build(ex, eff, now))},
                        maxlen=EVENT_STREAM_MAXLEN,
                        approximate=True,
                    )
                ids.append(None)
        return ids

    def _carry_out(self, ids: list[str | None], effects: list[Effect]) -> None:
        if self.dispatcher is None:
            return  # the sweep of a process that has one will carry them out
        for eid, eff in zip(ids, effects, strict=True):
            if eid is not None and isinstance(eff, Dispatch | Revoke):
                try:
                    self.dispatcher(eff)
                except Exception:
                    # The transition is committed and the effect waits in the outbox: the
                    # sweep carries it out once the broker answers. The caller's change
                    # happened, so it must not see an error.
                    log.warning("could not carry out %s now; the sweep will", eid, exc_info=True)
                    continue
                self._done(eid)

    def _done(self, eid: str) -> None:
        with self.r.pipeline() as p:
            p.hdel(keys.OUTBOX, eid)
            p.zrem(keys.OUTBOX_DUE, eid)
            p.execute()

    def pending_outbox(self, older_than: float) -> Iterator[tuple[str, Dispatch | Revoke]]:
        for member in self.r.zrangebyscore(keys.OUTBOX_DUE, 0, older_than):
            eid = str(member)
            raw = self.r.hget(keys.OUTBOX, eid)
            if raw is None:
                self.r.zrem(keys.OUTBOX_DUE, eid)
                continue
            eff = _EFFECT.validate_json(str(raw))
            assert isinstance(eff, Dispatch | Revoke)
            yield eid, eff

    def redo_outbox(self, eid: str, eff: Dispatch | Revoke) -> None:
        if self.dispatcher is not None:
            self.dispatcher(eff)
            self._done(eid)

    # ------------------------------------------------------------------ results and leases

    def record_result(
        self, execution_id: str, aeid: str, attempt: int, result: ActionResult
    ) -> None:
        self.r.set(
            keys.result(execution_id, aeid, attempt), result.model_dump_json(), ex=30 * 86400
        )

    def get_result(self, execution_id: str, aeid: str, attempt: int) -> ActionResult | None:
        raw = self._get(keys.result(execution_id, aeid, attempt))
        return None if raw is None else ActionResult.model_validate_json(raw)

    @staticmethod
    def lease_member(execution_id: str, stage: str, action: str, aeid: str, attempt: int) -> str:
        return json.dumps([execution_id, stage, action, aeid, attempt])

    def claim_lease(self, member: str, holder: str, ttl: float) -> bool:
        execution_id, _, _, aeid, attempt = json.loads(member)
        key = keys.lease(execution_id, aeid, attempt)
        if not self.r.set(key, holder, nx=True, px=int(ttl * 1000)):
            return bool(self.r.get(key) == holder)
        self.r.zadd(keys.LEASES, {member: time.time() + ttl})
        return True

    def renew_lease(self, member: str, holder: str, ttl: float) -> bool:
        execution_id, _, _, aeid, attempt = json.loads(member)
        key = keys.lease(execution_id, aeid, attempt)
        if self.r.get(key) != holder:
            return False
        with self.r.pipeline() as p:
            p.pexpire(key, int(ttl * 1000))
            p.zadd(keys.LEASES, {member: time.time() + ttl}, xx=True)
            p.execute()
        return True

    def release_lease(self, member: str) -> None:
        execution_id, _, _, aeid, attempt = json.loads(member)
        with self.r.pipeline() as p:
            p.zrem(keys.LEASES, member)
            p.delete(keys.lease(execution_id, aeid, attempt))
            p.execute()

    def expired_leases(self, now: float) -> list[tuple[str, str, str, str, str, int]]:
        out = []
        for member in self.r.zrangebyscore(keys.LEASES, 0, now):
            member = str(member)
            eid, stage, action, aeid, attempt = json.loads(member)
            out.append((member, eid, stage, action, aeid, int(attempt)))
        return out

    # ------------------------------------------------------------------ events

    def read_events(
        self, last_id: str = "0", count: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        rows: Any = self.r.xrange(
            keys.EVENTS, min=f"({last_id}" if last_id != "0" else "-", count=count
        )
        return [(str(rid), json.loads(fields["event"])) for rid, fields in rows or []]

    def _get(self, key: str) -> str | None:
        try:
            return self.r.get(key)  # type: ignore[return-value]
        except redis.ConnectionError as exc:
            raise ServiceUnavailableError(f"Redis is unreachable: {exc}") from exc
