"""``conveyor beat``: the sweep every few seconds, and source polling between sweeps.

Beat also notices Redis outages. While Redis is away no worker can renew a lease or claim a
task, so right after it comes back every lease looks expired; judging them then would re-run
work that is still running fine. So for one lease period after an outage the sweep leaves
leases and claims alone (the workers renew and claim in that time) and only then judges them.
"""

from __future__ import annotations

import logging
import threading
import time

from engine.settings import Settings
from workers.git_poller import GitBranchPoller
from workers.image_triggers import EcrImagePoller
from workers.runtime import Runtime
from workers.sweep import sweep
from workers.triggers import S3ObjectPoller, SourcePoller

log = logging.getLogger("conveyor.beat")


class Beat:
    def __init__(
        self, rt: Runtime, settings: Settings, *, interval: float, poll_interval: float
    ) -> None:
        self.rt, self.settings, self.interval = rt, settings, interval
        # Each pass polls for at most one sweep interval; a longer round resumes next pass.
        self.sources = SourcePoller(
            rt.store.r,
            rt.service,
            [
                S3ObjectPoller.from_settings(settings),
                EcrImagePoller.from_env(),
                GitBranchPoller(),
            ],
            interval=poll_interval,
            budget=interval,
        )
        self.stopping = threading.Event()
        self._redis_down = False
        # Beat may be starting after an outage that took it down too (Redis and beat
        # restarted together): leases wait for one lease period to be judged.
        self._trust_leases_after = time.monotonic() + settings.lease_seconds

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.tick()
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def tick(self) -> None:
        if not self._redis_answers():
            return
        try:
            report = sweep(
                self.rt.store,
                outbox_grace=self.settings.outbox_grace_seconds,
                claim_seconds=self.settings.lease_seconds,
                queue_depth=self.rt.queue_depth,
                judge_leases=time.monotonic() >= self._trust_leases_after,
            )
            if report.busy:
                log.info("sweep: %s", report)
        except Exception:  # nothing is lost meanwhile: the next pass retries
            log.exception("sweep failed")
        try:
            self.sources.tick(time.time())
        except Exception:
            log.exception("source polling failed")

    def _redis_answers(self) -> bool:
        try:
            self.rt.store.r.ping()
        except Exception as exc:
            if not self._redis_down:
                log.warning("Redis unreachable (%s); sweeping again once it answers", exc)
            self._redis_down = True
            return False
        if self._redis_down:
            self._redis_down = False
            self._trust_leases_after = time.monotonic() + self.settings.lease_seconds
            log.warning(
                "Redis is back; leases are judged again in %.0f s, once workers renewed them",
                self.settings.lease_seconds,
            )
        return True
