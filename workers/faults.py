"""Fault-injection points: where a test may kill a worker to prove nothing is stranded.

A worker started with ``CONVEYOR_FAULT_POINTS=received,running`` SIGKILLs its whole process
group (the Celery main process and every pool child) when an attempt reaches one of those
points, exactly as a power cut or the OOM killer would. With ``CONVEYOR_FAULT_ONCE_DIR`` set,
each point fires once across all workers sharing that directory (the first to get there
creates a marker file), so a second worker can then run the re-dispatched attempt.

The points, in the order an attempt passes them:

* ``received``: the task arrived, nothing is claimed yet (recovered by the claim deadline);
* ``claimed``: the lease is taken, the heartbeat not yet started (recovered by lease expiry);
* ``running``: the provider is running (lease expiry);
* ``recorded``: the result is recorded, not yet applied (lease expiry applies the result).

Unset (the default), every point is a no-op costing one dict lookup.
"""

from __future__ import annotations

import os
import signal
from enum import StrEnum
from pathlib import Path

POINTS_ENV = "CONVEYOR_FAULT_POINTS"
ONCE_DIR_ENV = "CONVEYOR_FAULT_ONCE_DIR"


class FaultPoint(StrEnum):
    RECEIVED = "received"
    CLAIMED = "claimed"
    RUNNING = "running"
    RECORDED = "recorded"


def fault(point: FaultPoint) -> None:
    """Die here (the whole worker, by SIGKILL) if a test asked for it."""
    wanted = os.environ.get(POINTS_ENV)
    if not wanted or point.value not in wanted.split(","):
        return
    once = os.environ.get(ONCE_DIR_ENV)
    if once:
        try:
            fd = os.open(Path(once) / point.value, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another worker already died here
        os.close(fd)
    os.killpg(os.getpgrp(), signal.SIGKILL)
