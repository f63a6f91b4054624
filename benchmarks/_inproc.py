"""Driving a pipeline in-process, without Celery, to see where an action's time goes.

Every task the engine dispatches is run by calling the worker's own entry point,
``workers.runner.run_action`` (what the Celery task runs), against the benchmark's real
Redis and S3 with real providers. ``run_action`` applies the action's result itself
(``workers.attempts.report`` -> ``Store.apply``), and that transition dispatches the next
tasks: the dispatcher installed here queues them instead of sending them, so nothing
reaches the broker (a ``Revoke`` is ignored; a completion callback to the engine pool, the
fallback when applying fails, fails the run). A separate Redis database keeps the running
beat away from these executions: its sweep would otherwise re-dispatch their outbox
entries to the real workers.

:class:`benchmarks._timers.Timers` wraps chosen functions with wall-clock and CPU timers;
:func:`handle` (one dispatched task) is the root a breakdown's rows hang from.
"""

from __future__ import annotations

import contextlib
import cProfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from benchmarks._stack import Bench
from benchmarks._timers import Timers
from engine.messages import Dispatch, Revoke, WorkItem
from engine.settings import Settings
from workers import devstack, runner
from workers.runtime import Runtime

INPROC_DB = 2


@dataclass
class Step:
    stage: str
    action: str
    seconds: float  # wall, the whole task: run_action (worker + applying the result)
    cpu: float  # CPU of this thread


class RecordingRuntime(Runtime):
    """A Runtime whose dispatches are queued for the driver instead of sent to Celery."""

    pending: list[Dispatch]
    callbacks: list[WorkItem]

    def dispatch(self, d: Dispatch | Revoke) -> None:
        if isinstance(d, Dispatch):
            self.pending.append(d)

    def send_callback(self, item: WorkItem) -> None:
        self.callbacks.append(item)  # the worker could not apply the result itself


def handle(rt: Runtime, d: Dispatch) -> str:
    """One dispatched task, as a worker runs it (the root row of the breakdowns)."""
    return runner.run_action(rt, d.execution_id, d.stage, d.action, d.attempt)


class InProcess:
    """A Runtime of our own, on its own Redis database, whose dispatches are recorded."""

    def __init__(self, bench: Bench) -> None:
        settings = Settings(
            redis_url=devstack.with_redis_db(bench.redis.url, INPROC_DB),
            broker_url=bench.env["CONVEYOR_BROKER_URL"],
            s3_endpoint_url=bench.s3.url,
            s3_access_key_id=bench.s3.access_key,
            s3_secret_access_key=bench.s3.secret_key,
            s3_region=bench.s3.region,
            workdir=bench.env["CONVEYOR_WORKDIR"],
            start_on_create=False,
        )
        self.rt = RecordingRuntime(settings)
        self.rt.pending = []
        self.rt.callbacks = []
        self.rt.store.r.flushdb()
        # other processes whose CPU a timed run also counts, per action
        self.others = {"Redis": bench.redis.pid, "the S3 server (moto)": bench.s3.pid}

    def create_pipeline(self, definition: dict[str, Any]) -> str:
        self.rt.service.create_pipeline(definition)
        return str(definition["name"])

    def run(
        self,
        name: str,
        timers: Timers | None = None,
        only: Callable[[Dispatch], bool] | None = None,
        profile: cProfile.Profile | None = None,
    ) -> list[Step]:
        """One execution, task by task; fails unless every action and the run succeed.

        ``timers`` and ``profile`` see only the tasks ``only`` selects (default: all);
        ``timers.actions`` counts them.
        """
        rt = self.rt
        steps: list[Step] = []
        state = rt.service.start_execution(name)
        while rt.pending:
            d = rt.pending.pop(0)
            chosen = only is None or only(d)
            if timers is not None:
                timers.on = chosen
            others = _cpu(self.others) if timers is not None and chosen else {}
            if profile is not None and chosen:
                profile.enable()
            t0, c0 = time.perf_counter(), time.thread_time()
            outcome = handle(rt, d)
            t1, c1 = time.perf_counter(), time.thread_time()
            if profile is not None and chosen:
                profile.disable()
            if timers is not None and chosen:
                timers.actions += 1
                for k, v in _cpu(self.others).items():
                    timers.extra_cpu[k] = timers.extra_cpu.get(k, 0.0) + v - others.get(k, 0.0)
            if outcome != "succeeded" or rt.callbacks:
                raise RuntimeError(
                    f"in-process {d.stage}.{d.action}: {outcome}; results left to the engine "
                    f"pool: {rt.callbacks}"
                )
            steps.append(Step(d.stage, d.action, t1 - t0, c1 - c0))
        if timers is not None:
            timers.on = False
        final = rt.store.runs.load(state.execution_id)
        if final is None or final.status.value != "Succeeded":
            status = "gone" if final is None else final.status.value
            raise RuntimeError(f"in-process execution ended {status}")
        return steps

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.rt.store.r.flushdb()


def _cpu(pids: dict[str, int | None]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
    return out


@contextlib.contextmanager
def in_process(bench: Bench) -> Iterator[InProcess]:
    ip = InProcess(bench)
    try:
        yield ip
    finally:
        ip.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
