"""The periodic sweep: the engine's only clock.

Carries out outbox entries a crash left behind, turns expired leases into either the result
the worker recorded or a re-dispatch, and fires timers (approval and action timeouts). Every
step is idempotent, so two sweeps racing do no harm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.errors import ExecutionNotFoundError
from engine.messages import ActionCompleted, LeaseExpired, TimerFired
from engine.store import Store

log = logging.getLogger("conveyor.sweep")


@dataclass
class SweepReport:
    redispatched: int = 0
    leases_expired: int = 0
    results_recovered: int = 0
    timers_checked: int = 0


def sweep(store: Store, now: float, *, outbox_grace: float) -> SweepReport:
    report = SweepReport()
    for eid, eff in store.pending_outbox(now - outbox_grace):
        store.redo_outbox(eid, eff)
        report.redispatched += 1
    for member, execution_id, stage, action, aeid, attempt in store.expired_leases(now):
        state = store.try_load(execution_id)
        if state is not None:
            result = store.get_result(execution_id, aeid, attempt)
            event: ActionCompleted | LeaseExpired
            if result is not None:
                # The worker finished but its callback never arrived (or is still queued).
                event = ActionCompleted(
                    now=now,
                    execution_id=execution_id,
                    stage=stage,
                    action=action,
                    attempt=attempt,
                    result=result,
                )
                report.results_recovered += 1
            else:
                event = LeaseExpired(
                    now=now, execution_id=execution_id, stage=stage, action=action, attempt=attempt
                )
                report.leases_expired += 1
                log.warning(
                    "lease of %s/%s.%s attempt %d expired", execution_id, stage, action, attempt
                )
            try:
                store.apply(state.pipeline_name, event)
            except ExecutionNotFoundError:
                pass
            except Exception:  # one bad item must not stop the rest of the sweep
                log.exception("could not apply the expired lease %s; next sweep retries", member)
                continue  # the lease stays, so the next sweep tries it again
        store.release_lease(member)
    for pipeline in store.active_pipelines():
        try:
            store.apply(pipeline, TimerFired(now=now))
        except Exception:
            log.exception("timers of pipeline %s failed; next sweep retries", pipeline)
        report.timers_checked += 1
    return report
