"""The life of one attempt on a worker, for actions and worker-run rules alike.

    received -> still current? -> result already recorded? -> claim the lease -> heartbeat
             -> run -> record the result -> apply it (the completion callback, in process)

Idempotent by (execution, stage, action or rule, attempt): a stale attempt is a no-op, a
recorded result is only applied again, and the lease keeps two workers off one attempt.
Whatever moment the worker dies at, nothing is stranded (see workers/faults.py for the
points tests kill it at): before the claim, the claim deadline makes the sweep send the task
again; after it, the lease expires and the sweep re-dispatches the attempt, or applies its
recorded result if there is one.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from engine.errors import ServiceUnavailableError
from engine.execution import ActionResult, ExecutionState
from engine.messages import WorkItem, WorkKind
from engine.scheduler import current_dispatch
from engine.store.leases import Claim
from workers.faults import FaultPoint, fault
from workers.runtime import Runtime

log = logging.getLogger("conveyor.worker")

# How often a running attempt checks whether it is still wanted (stop-and-abandon).
CANCEL_CHECK_SECONDS = 1.0
# How long a finished attempt waits for Redis to come back to record its result.
RECORD_PATIENCE_SECONDS = 120.0

# Does the work of one attempt: (its execution, a cancellation flag) -> the result.
Work = Callable[[ExecutionState, threading.Event], ActionResult]


class Heartbeat(threading.Thread):
    """Renews the attempt's lease while it runs, and cancels it once the execution no longer
    wants it (abandoned, timed out, deleted, superseded by a newer attempt)."""

    def __init__(
        self, rt: Runtime, item: WorkItem, holder: str, cancelled: threading.Event
    ) -> None:
        super().__init__(daemon=True, name="conveyor-heartbeat")
        self.rt, self.item, self.holder, self.cancelled = rt, item, holder, cancelled
        self.ttl = rt.settings.lease_seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        last_renewal = time.monotonic()
        while not self.stopped.wait(min(CANCEL_CHECK_SECONDS, self.ttl / 3)):
            fault(FaultPoint.RUNNING)
            try:
                if not self.cancelled.is_set() and not self._still_wanted():
                    log.info("%s is no longer wanted; cancelling it", self.item)
                    self.cancelled.set()
                if time.monotonic() - last_renewal >= self.ttl / 3:
                    last_renewal = time.monotonic()
                    if not self.rt.store.leases.renew(self.item, self.holder, self.ttl):
                        log.warning("lost the lease of %s", self.item)
            except Exception:  # Redis blips must not kill the work; the next beat retries
                log.warning("heartbeat of %s failed", self.item, exc_info=True)

    def _still_wanted(self) -> bool:
        return (
            current_dispatch(self.rt.store.runs.load(self.item.execution_id), self.item) is not None
        )

    def stop(self) -> None:
        self.stopped.set()


def run_attempt(
    rt: Runtime, execution_id: str, stage: str, name: str, attempt: int, kind: WorkKind, work: Work
) -> str:
    """Run one attempt if it is still the current one. Returns what happened (for logs)."""
    fault(FaultPoint.RECEIVED)
    state = rt.store.runs.load(execution_id)
    if state is None:
        return "unknown"
    item = WorkItem(state.pipeline_name, execution_id, stage, name, attempt, kind)
    if current_dispatch(state, item) is None:
        return "stale"
    holder = uuid.uuid4().hex
    claim = rt.store.leases.claim(item, holder, rt.settings.lease_seconds)
    if claim is Claim.HELD_ELSEWHERE:
        return "leased-elsewhere"
    if claim is Claim.ALREADY_DONE:
        recorded = rt.store.leases.get_result(item)
        if recorded is not None:
            report(rt, item, recorded)
        return "already-done"
    fault(FaultPoint.CLAIMED)
    cancelled = threading.Event()
    beat = Heartbeat(rt, item, holder, cancelled)
    beat.start()
    try:
        result = work(state, cancelled)
    except Exception as exc:  # a bug outside the action's own error handling: fail it
        log.exception("%s crashed", item)
        result = ActionResult(
            succeeded=False,
            error_code="InternalError",
            error_message=f"{type(exc).__name__}: {exc}",
        )
    finally:
        beat.stop()
    if not _record(rt, item, holder, result):
        log.info("%s is no longer this worker's; its result is dropped", item)
        return "dropped"
    fault(FaultPoint.RECORDED)
    report(rt, item, result)
    return "succeeded" if result.succeeded else "failed"


def _record(rt: Runtime, item: WorkItem, holder: str, result: ActionResult) -> bool:
    """Record the result (False: the lease is no longer ours), waiting out a Redis outage (a
    restart) rather than throwing the finished work away: a result recorded late is still
    applied by the sweep."""
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    delay = 0.2
    while True:
        try:
            return rt.store.leases.record_result(item, holder, result)
        except ServiceUnavailableError:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unavailable; will record %s again", item)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def report(rt: Runtime, item: WorkItem, result: ActionResult) -> None:
    """Apply the attempt's result here and now (the completion callback, without a hop
    through the broker); if that fails, hand it to the engine pool; if that fails too, the
    sweep applies the recorded result once the lease expires."""
    try:
        rt.store.complete(item, result)
        return
    except Exception:
        log.warning("could not apply %s; asking the engine pool", item, exc_info=True)
    try:
        rt.send_callback(item)
    except Exception:
        log.warning(
            "could not reach the engine pool for %s; the sweep will apply it",
            item,
            exc_info=True,
        )
