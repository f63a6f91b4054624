"""Driving a pipeline in-process, without Celery, to see where an action's time goes.

The worker's and the engine's own functions are called directly (``run_attempt`` for an
action, ``advance`` for its completion callback) against the benchmark's real Redis and S3,
with real providers. Dispatches and callbacks are recorded instead of sent, so nothing
reaches the broker. A separate Redis database keeps the running beat away from these
executions: its sweep would otherwise re-dispatch their outbox entries to the real workers.

:func:`timers` wraps chosen functions with wall-clock timers for one run; unlike cProfile it
adds microseconds, not a factor, to Python-heavy code such as ``copy.deepcopy``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks._stack import Bench
from engine.settings import Settings
from workers import devstack

INPROC_DB = 2

# (module, attribute path, label, depth): what timers() wraps; depth is for display only.
Timed = tuple[str, str, str, int]


@dataclass
class Step:
    stage: str
    action: str
    worker_s: float  # run_attempt
    engine_s: float  # advance


class InProcess:
    """A Runtime of our own, on its own Redis database, whose dispatches are recorded."""

    def __init__(self, bench: Bench) -> None:
        from workers import tasks
        from workers.runtime import Runtime

        class RecordingRuntime(Runtime):
            pending: list[Any]

            def dispatch(self, d: Any) -> None:
                self.pending.append(d)

            def send_callback(
                self, execution_id: str, stage: str, action: str, attempt: int
            ) -> None:
                pass

        settings = Settings(
            redis_url=devstack.with_redis_db(bench.redis.url, INPROC_DB),
            broker_url=bench.env["CONVEYOR_BROKER_URL"],
            s3_endpoint_url=bench.s3.url,
            s3_access_key_id=bench.s3.access_key,
            s3_secret_access_key=bench.s3.secret_key,
            s3_region=bench.s3.region,
            workdir=bench.env["CONVEYOR_WORKDIR"],
        )
        self.rt = RecordingRuntime(settings)
        self.rt.pending = []
        self.rt.store.r.flushdb()
        tasks._runtime = self.rt  # advance() finds its Runtime here

    def create_pipeline(self, definition: dict[str, Any]) -> str:
        self.rt.service.create_pipeline(definition)
        return str(definition["name"])

    def run(self, name: str) -> list[Step]:
        """One execution, action by action; fails unless every action and the run succeed."""
        from workers import runner, tasks

        rt = self.rt
        steps: list[Step] = []
        state = rt.service.start_execution(name)
        while rt.pending:
            d = rt.pending.pop(0)
            t0 = time.perf_counter()
            outcome = runner.run_attempt(rt, d.execution_id, d.stage, d.action, d.attempt)
            t1 = time.perf_counter()
            applied = tasks.advance(d.execution_id, d.stage, d.action, d.attempt)
            t2 = time.perf_counter()
            if outcome != "succeeded" or applied != "applied":
                raise RuntimeError(f"in-process {d.stage}.{d.action}: {outcome}/{applied}")
            steps.append(Step(d.stage, d.action, t1 - t0, t2 - t1))
        final = rt.store.load(state.execution_id)
        if final.status.value != "Succeeded":
            raise RuntimeError(f"in-process execution ended {final.status.value}")
        return steps

    def close(self) -> None:
        from workers import tasks

        with contextlib.suppress(Exception):
            self.rt.store.r.flushdb()
        tasks._runtime = None


@contextlib.contextmanager
def in_process(bench: Bench) -> Iterator[InProcess]:
    ip = InProcess(bench)
    try:
        yield ip
    finally:
        ip.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def timers(spec: list[Timed]) -> Iterator[dict[str, list[float]]]:
    """Wrap each function in ``spec`` with a wall-clock timer: label -> [calls, seconds]."""
    acc: dict[str, list[float]] = {label: [0, 0.0] for _m, _a, label, _d in spec}
    undo: list[tuple[Any, str, Any]] = []

    def timed(orig: Any, label: str) -> Any:
        @functools.wraps(orig)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                acc[label][0] += 1
                acc[label][1] += time.perf_counter() - t

        return wrapper

    try:
        for mod, attr, label, _depth in spec:
            owner: Any = importlib.import_module(mod)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            orig = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            setattr(owner, name, timed(orig, label))
            undo.append((owner, name, orig))
        yield acc
    finally:
        for owner, name, orig in reversed(undo):
            setattr(owner, name, orig)
