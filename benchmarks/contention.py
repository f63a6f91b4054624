"""Contention: 100 StartPipelineExecution calls on one pipeline at the same instant.

Stack: as the chain benchmark's (engine pool c=1, ``all`` pool c=2, beat, API: a real
worker pool running). The pipeline is ``Source/AWS/S3`` then one ``Deploy/AWS/S3``, in the
default SUPERSEDED mode, so every start has to be written into the same pipeline's state.

- 100 threads, one shared boto3 ``codepipeline`` client (100 pooled connections, no retries:
  every error surfaces), released at once by a ``threading.Barrier``; each times its own
  call from the release. Counted: successes, errors by code (ConcurrentModificationException
  is the one that matters), p50 / p99 / max latency over all 100 calls.
- reference: the same burst of GetPipeline (read-only) first, which also opens the 100
  connections; its latency is the floor the client, the API's thread pool and the 2 CPUs
  give any burst of 100 calls.
- afterwards every started execution must end (read from the ``conveyor:events`` stream):
  SUCCEEDED or SUPERSEDED, never FAILED.
- the same once more while builds run: ``builds`` executions (PARALLEL) of another pipeline
  whose CodeBuild action runs ``sleep 3`` are started first and the burst is fired once all
  their build actions were dispatched (2 run at a time on the ``-c 2`` pool, the rest
  queue), so the engine is busy with their transitions while the starts arrive.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from botocore.exceptions import ClientError

from benchmarks._measure import (
    Event,
    EventTail,
    Meter,
    Window,
    cas_increase,
    cas_retries,
    pct,
)
from benchmarks._s3pipe import ROLE, Buckets, action, deploy_pipeline, source_stage
from benchmarks._stack import Bench, log

CALLS = 100
SETTLE_TIMEOUT = 300.0
CME = "ConcurrentModificationException"
BUILDSPEC = b"version: 0.2\nphases:\n  build:\n    commands:\n      - sleep 3\n"


@dataclass
class Burst:
    label: str
    calls: int
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # s, every call
    wall: float = 0.0  # release -> last answer
    cas: int | None = None
    final: Counter[str] = field(default_factory=Counter)  # how the started executions ended
    settle: float = 0.0  # release -> the last started execution ended
    window: Window | None = None  # CPU and Redis commands, release -> the last answer

    def api_cpu_ms(self) -> float:
        return 0.0 if self.window is None else 1000 * self.window.cpu.get("api", 0.0) / self.calls

    def redis_per_call(self, command: str) -> float:
        return 0.0 if self.window is None else self.window.redis.get(command, 0) / self.calls

    def p(self, q: float) -> float:
        return pct(self.latencies, q)

    @property
    def cme(self) -> int:
        return self.errors.get(CME, 0)

    @property
    def met(self) -> bool:
        return self.ok == self.calls and self.cme == 0 and self.p(99) < 1.0


@dataclass
class ContentionResult:
    calls: int
    builds: int
    reference: Burst | None = None
    idle: Burst | None = None
    busy: Burst | None = None
    builds_wall: float = 0.0  # the builds pipeline's executions, start -> last end


def _burst(label: str, n: int, call: Callable[[], Any], meter: Meter) -> tuple[Burst, list[Any]]:
    barrier = threading.Barrier(n + 1)
    res = Burst(label, n)
    results: list[Any] = [None] * n
    lat: list[float] = [0.0] * n
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        try:
            results[i] = call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            with lock:
                res.errors[code] += 1
        except Exception as exc:  # count it, whatever it is
            with lock:
                res.errors[type(exc).__name__] += 1
        lat[i] = time.perf_counter() - t

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    meter.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(300)
    res.wall = time.perf_counter() - t0
    res.window = meter.stop()
    res.latencies = lat
    res.ok = sum(1 for r in results if r is not None)
    return res, results


def _start_burst(
    label: str, cp: Any, name: str, n: int, tail: EventTail, r: redis.Redis, meter: Meter
) -> Burst:
    cas0 = cas_retries(r)
    t0 = time.time()
    res, results = _burst(label, n, lambda: cp.start_pipeline_execution(name=name), meter)
    eids = [x["pipelineExecutionId"] for x in results if x is not None]
    ends = tail.wait_ended(eids, SETTLE_TIMEOUT, f"contention {label}")
    res.cas = cas_increase(cas0, cas_retries(r))
    res.final = Counter(ev.state for ev in ends.values())
    res.settle = max((ev.ms for ev in ends.values()), default=0) / 1000 - t0
    tail.forget(eids)
    bad = {s: c for s, c in res.final.items() if s not in ("SUCCEEDED", "SUPERSEDED")}
    if bad:
        raise RuntimeError(f"contention {label}: started executions ended {dict(bad)}")
    return res


def _builds_pipeline(name: str, b: Buckets) -> dict[str, Any]:
    build = action(
        "Sleep", "Build", "CodeBuild", 1, {"ProjectName": "bench"}, ins=("SourceOutput",)
    )
    return {
        "name": name,
        "roleArn": ROLE,
        "artifactStore": {"type": "S3", "location": b.artifacts},
        "executionMode": "PARALLEL",
        "stages": [source_stage(b.source), {"name": "Build", "actions": [build]}],
    }


def run_contention(bench: Bench, calls: int = CALLS, builds: int = 8) -> ContentionResult:
    res = ContentionResult(calls=calls, builds=builds)
    tag = uuid.uuid4().hex[:8]
    b = Buckets.create(bench, "bench-cm", extra_files={"buildspec.yml": BUILDSPEC})
    setup = bench.codepipeline()
    name, builds_name = f"bench-contention-{tag}", f"bench-builds-{tag}"
    setup.create_pipeline(pipeline=deploy_pipeline(name, b, 1))
    setup.create_pipeline(pipeline=_builds_pipeline(builds_name, b))
    cp = bench.codepipeline(max_attempts=1, pool=calls)
    tail = EventTail(bench.env["CONVEYOR_REDIS_URL"])
    r = redis.Redis.from_url(bench.env["CONVEYOR_REDIS_URL"])
    meter = Meter(bench)
    try:
        log(f"contention: {calls} parallel GetPipeline (reference, opens the connections)")
        res.reference, _ = _burst("GetPipeline", calls, lambda: cp.get_pipeline(name=name), meter)
        log(f"contention: {calls} parallel StartPipelineExecution, idle workers")
        res.idle = _start_burst("idle", cp, name, calls, tail, r, meter)

        log(f"contention: {builds} PARALLEL executions with a `sleep 3` build, then the burst")
        t0 = time.time()
        build_ids = [
            setup.start_pipeline_execution(name=builds_name)["pipelineExecutionId"]
            for _ in range(builds)
        ]

        def build_dispatched(e: Event) -> bool:
            return e.level == "action" and e.stage == "Build" and e.state == "STARTED"

        tail.wait_events(build_ids, build_dispatched, SETTLE_TIMEOUT, "builds dispatched")
        res.busy = _start_burst("while builds run", cp, name, calls, tail, r, meter)
        ends = tail.wait_ended(build_ids, SETTLE_TIMEOUT, "builds")
        failed = {e: ev.state for e, ev in ends.items() if ev.state != "SUCCEEDED"}
        if failed:
            raise RuntimeError(f"contention: build executions did not succeed: {failed}")
        res.builds_wall = max(ev.ms for ev in ends.values()) / 1000 - t0
        for burst in (res.idle, res.busy):
            log(
                f"contention {burst.label}: {burst.ok}/{calls} ok, errors {dict(burst.errors)}, "
                f"p50 {1000 * burst.p(50):.0f} ms, p99 {1000 * burst.p(99):.0f} ms, "
                f"max {1000 * max(burst.latencies):.0f} ms"
            )
    finally:
        meter.close()
        tail.close()
        r.close()
    return res
