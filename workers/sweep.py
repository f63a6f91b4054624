"""The periodic sweep (run by ``conveyor beat``): what makes crashes lose nothing.

Each pass, in this order, with at most ``limit`` items per kind so a backlog never stalls it:

1. **Outbox**: entries a crash left between commit and dispatch are carried out again.
2. **Expired leases** (a worker stopped renewing: it died): the attempt's recorded result is
   applied if it has one, else the attempt is re-dispatched as a new one.
3. **Missed claims** (a dispatched attempt no worker claimed in time: the worker that
   received it died before claiming, or the message was lost): the task is sent again,
   unless it is still waiting in its queue.
4. **Timers**: executions with a deadline that passed (action, approval and rule timeouts).

Every item is handled on its own: one that fails is logged with its ids and tried again by
the next sweep, and the rest of the pass goes on. Every step is idempotent, so two sweeps
racing (two beats) do no harm. Time is Redis's clock throughout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.messages import LeaseExpired, TimerFired
from engine.scheduler import current_dispatch
from engine.store import Store

log = logging.getLogger("conveyor.sweep")
T = TypeVar("T")

# Items of each kind handled per pass: a backlog is worked off over several passes.
DEFAULT_LIMIT = 500
# Claim periods an unclaimed task may wait in a busy queue before it is sent again anyway
# (a copy is harmless: the lease lets one of them run, the other finds nothing to do).
CLAIM_PATIENCE = 4

# The number of messages waiting in a Celery queue, or None when it cannot be told.
QueueDepth = Callable[[str], int | None]


@dataclass
class SweepReport:
    redispatched: int = 0
    buried: int = 0
    leases_expired: int = 0
    results_recovered: int = 0
    claims_resent: int = 0
    timers_fired: int = 0
    failures: int = 0

    @property
    def busy(self) -> bool:
        return any(vars(self).values())


def sweep(
    store: Store,
    *,
    outbox_grace: float,
    claim_seconds: float,
    queue_depth: QueueDepth | None = None,
    limit: int = DEFAULT_LIMIT,
    judge_leases: bool = True,
) -> SweepReport:
    """One pass. ``judge_leases=False`` skips expired leases and missed claims: right after
    a Redis outage no worker could renew or claim anything, so their deadlines say nothing
    about who is alive until the workers had a lease period to catch up."""
    report = SweepReport()
    _outbox(store, report, outbox_grace, limit)
    if judge_leases:
        _leases(store, report, limit)
        _claims(store, report, claim_seconds, queue_depth, limit)
    _timers(store, report, limit)
    return report


def _outbox(store: Store, report: SweepReport, grace: float, limit: int) -> None:
    try:
        seconds, micros = store.r.time()
        before = int(seconds * 1000 + micros / 1000 - grace * 1000)
        pending = list(store.runs.pending_outbox(before, limit))
    except Exception:
        log.exception("could not read the outbox; the next sweep retries")
        report.failures += 1
        return
    for eid, eff in pending:
        try:
            if eff is None:
                log.error("outbox entry %s cannot be read; moved to the dead-letter hash", eid)
                store.runs.bury_outbox(eid, "unreadable effect")
                report.buried += 1
                continue
            store.runs.redo_outbox(eid, eff)
            report.redispatched += 1
        except Exception:
            log.exception("outbox entry %s failed; the next sweep retries it", eid)
            report.failures += 1


def _leases(store: Store, report: SweepReport, limit: int) -> None:
    for item in _listed(store.leases.expired, limit, "expired leases", report):
        try:
            result = store.leases.get_result(item)
            if result is not None:
                # The worker finished but its report never arrived (or is still queued).
                store.complete(item, result)
                report.results_recovered += 1
                log.warning("applied the recorded result of %s (its worker died)", item)
                continue
            event = LeaseExpired(
                execution_id=item.execution_id,
                stage=item.stage,
                name=item.name,
                attempt=item.attempt,
                work=item.kind,
            )
            if not store.apply(item.pipeline, event).changed:
                store.leases.release(item)  # a stale attempt: nothing waits for it
            report.leases_expired += 1
            log.warning("lease of %s expired (its worker died)", item)
        except Exception:
            log.exception("expired lease of %s failed; the next sweep retries", item)
            report.failures += 1


def _claims(
    store: Store,
    report: SweepReport,
    claim_seconds: float,
    queue_depth: QueueDepth | None,
    limit: int,
) -> None:
    for item in _listed(store.leases.unclaimed, limit, "missed claims", report):
        try:
            dispatch = current_dispatch(store.runs.load(item.execution_id), item)
            if dispatch is None or store.leases.holder(item) is not None:
                store.leases.drop_claim(item)  # finished, superseded, or claimed after all
                continue
            # With other tasks in its queue it is probably waiting its turn; but it may have
            # been lost with a worker while others wait: send it again after a few periods.
            waiting = queue_depth is not None and bool(queue_depth(dispatch.queue))
            if waiting and store.leases.postpone_claim(item, claim_seconds) < CLAIM_PATIENCE:
                continue
            store.runs.redo_dispatch(dispatch)
            store.leases.reset_claim(item, claim_seconds)
            report.claims_resent += 1
            log.warning("%s was never claimed; sent its task again", item)
        except Exception:
            log.exception("missed claim of %s failed; the next sweep retries", item)
            report.failures += 1


def _timers(store: Store, report: SweepReport, limit: int) -> None:
    for member in _listed(store.leases.due_timers, limit, "timers", report):
        try:
            pipeline, execution_id = json.loads(member)
            decision = store.apply(pipeline, TimerFired(execution_id=execution_id))
            if not decision.changed and store.runs.load(execution_id) is None:
                store.leases.drop_timer(member)  # its execution is gone
            report.timers_fired += 1
        except Exception:
            log.exception("timer %s failed; the next sweep retries", member)
            report.failures += 1


def _listed(read: Callable[[int], list[T]], limit: int, what: str, report: SweepReport) -> list[T]:
    try:
        return read(limit)
    except Exception:
        log.exception("could not read %s; the next sweep retries", what)
        report.failures += 1
        return []
