"""Fan-out: dozens of executions in flight across several pipelines on one ``--pool all
-c 2`` worker, Conveyor vs raw Celery tasks doing only the same S3 work on one ``-c 2``
worker. Throughput in actions (tasks) per second.

Stack: as the chain benchmark's (engine pool c=1, ``all`` pool c=2, beat, API; raw
``benchmarks.raw_s3`` worker c=2). Warm-up: one execution per pipeline and one raw chain per
pipeline; then ``runs`` timed rounds alternating Conveyor / raw.

Conveyor side: ``pipelines`` pipelines (executionMode PARALLEL), each ``Source/AWS/S3`` (the
~1 KB zip) then ``deploys`` ``Deploy/AWS/S3`` actions (runOrder 1..deploys, Extract, into
``<execution id>/dNN/``). ``executions`` StartPipelineExecution calls per pipeline, all
issued at once from 8 threads (interleaved across pipelines); timed from the first call
to the last execution's SUCCEEDED event on the ``conveyor:events`` stream (XREAD BLOCK).
Actions per second = executions x (1 + deploys) / that time.

Raw side: the same number of independent Celery chains, each ``bench.s3.source`` (GET the
source zip with boto3, extract, zip, PUT the artifact with minio: the Source action's S3
work) then ``deploys`` x ``bench.s3.deploy`` (GET the artifact with minio, extract, PUT the
file with boto3), all sent at once; timed from the first ``apply_async`` to the last
chain's completion entry. Tasks per second likewise.

Ratio = raw rate / Conveyor rate (how many times slower Conveyor is). Every execution must
succeed and every deploy must have put its object (both sides, checked after each round).

Compare-and-set retries on one run record: then ``cas_rounds`` rounds of ``cas_executions``
(50: CodePipeline's limit of active executions) executions of ONE pipeline (PARALLEL,
Source + ``deploys`` S3 deploys), started at once from 8 threads on the same stack, after
one warm-up execution. Every start and every action result is a transition of that
pipeline's run record (``Store.apply``: WATCH, read, decide, MULTI/EXEC), made by the API
(starts) and the worker's two pool processes (results) at the same time. Counted per round:
the transitions (from the events: one pipeline STARTED per start, one action SUCCEEDED per
result; also derived: executions x (1 + 1 + deploys)), the ``conveyor:stats:cas_retries``
increase, retries per transition, Redis WATCH and EXEC per transition, and the wall time
(first start call -> last SUCCEEDED event). Retries are measured, not judged.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery import chain

from benchmarks import raw_s3
from benchmarks._measure import (
    DoneTail,
    Event,
    EventTail,
    Meter,
    Window,
    add_window,
    cas_text,
    count_keys,
    empty_bucket,
    stack_cpu,
)
from benchmarks._s3pipe import SOURCE_KEY, Buckets, deploy_pipeline
from benchmarks._stack import Bench, log
from benchmarks.chain import ensure_raw_s3_worker
from benchmarks.raw_celery import make_app

RUN_TIMEOUT = 600.0
START_THREADS = 8


@dataclass
class CasRound:
    """One round of executions of a single PARALLEL pipeline."""

    executions: int
    deploys: int
    seconds: float  # first start call -> last SUCCEEDED event
    transitions: int  # counted from the events: starts + action results
    cas: int | None  # conveyor:stats:cas_retries increase (None: key absent)
    watch: int  # Redis WATCH calls in the window
    exec: int  # Redis EXEC calls in the window

    @property
    def derived(self) -> int:
        """Transitions the round must make: a start plus one per action, per execution."""
        return self.executions * (2 + self.deploys)

    @property
    def per_transition(self) -> float:
        return (self.cas or 0) / self.transitions if self.transitions else 0.0


@dataclass
class FanoutResult:
    pipelines: int
    executions: int  # per pipeline
    deploys: int  # per execution
    runs: int
    conveyor: list[float] = field(default_factory=list)  # seconds per round
    raw: list[float] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)  # StartPipelineExecution latencies
    execution_s: list[float] = field(default_factory=list)  # each execution, start -> end
    first_end_s: list[float] = field(default_factory=list)  # first execution to finish
    conveyor_w: Window | None = None
    raw_w: Window | None = None
    cas_rounds: list[CasRound] = field(default_factory=list)  # one pipeline, PARALLEL

    @property
    def in_flight(self) -> int:
        return self.pipelines * self.executions

    @property
    def actions(self) -> int:
        return self.in_flight * (1 + self.deploys)

    @property
    def conveyor_rate(self) -> float:
        return self.actions / statistics.median(self.conveyor)

    @property
    def raw_rate(self) -> float:
        return self.actions / statistics.median(self.raw)

    @property
    def ratio(self) -> float:
        return self.raw_rate / self.conveyor_rate

    def cpu_ms(self, w: Window | None) -> float:
        return 0.0 if w is None else 1000 * stack_cpu(w) / (self.runs * self.actions)


def _start_all(cp: Any, names: list[str], per_pipeline: int) -> tuple[list[str], list[float]]:
    order = [n for _ in range(per_pipeline) for n in names]  # interleaved across pipelines

    def start(name: str) -> tuple[str, float]:
        t = time.perf_counter()
        eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
        return str(eid), 1000 * (time.perf_counter() - t)

    with ThreadPoolExecutor(START_THREADS) as pool:
        got = list(pool.map(start, order))
    return [e for e, _ in got], [ms for _, ms in got]


@dataclass
class _Round:
    seconds: float  # first start call -> last SUCCEEDED event
    start_ms: list[float]  # StartPipelineExecution latencies
    execution_s: list[float]  # each execution, its first event -> SUCCEEDED
    first_end_s: float  # first start call -> first SUCCEEDED event
    window: Window | None
    transitions: int  # pipeline STARTED + action SUCCEEDED events: one per transition


def _conveyor_round(
    cp: Any,
    tail: EventTail,
    s3: Any,
    names: list[str],
    b: Buckets,
    per: int,
    deploys: int,
    meter: Meter | None = None,
) -> _Round:
    empty_bucket(s3, b.target)
    if meter is not None:
        meter.start()
    t0 = time.time()
    eids, start_ms = _start_all(cp, names, per)
    ends = tail.wait_ended(eids, RUN_TIMEOUT, "fan-out")
    window = meter.stop() if meter is not None else None  # the checks below are not metered
    bad = {e: ev.state for e, ev in ends.items() if ev.state != "SUCCEEDED"}
    if bad:
        raise RuntimeError(f"fan-out: {len(bad)} executions did not succeed: {bad}")
    spans = []
    transitions = 0
    for eid in eids:
        first = min(e.ms for e in tail.events[eid])
        spans.append((ends[eid].ms - first) / 1000)
        transitions += sum(1 for e in tail.events[eid] if _one_transition(e))
    tail.forget(eids)
    deployed = count_keys(s3, b.target)
    short = {e: deployed.get(e, 0) for e in eids if deployed.get(e, 0) != deploys}
    if short:
        raise RuntimeError(f"fan-out: executions missing deployed objects: {short}")
    last = max(ev.ms for ev in ends.values()) / 1000
    first_end = min(ev.ms for ev in ends.values()) / 1000
    return _Round(last - t0, start_ms, spans, first_end - t0, window, transitions)


def _one_transition(e: Event) -> bool:
    """Events that each stand for one transition: a start, an action's result."""
    return (e.level == "pipeline" and e.state == "STARTED") or (
        e.level == "action" and e.state in ("SUCCEEDED", "FAILED")
    )


def _raw_round(
    app: Any,
    tail: DoneTail,
    s3: Any,
    b: Buckets,
    chains: int,
    deploys: int,
    meter: Meter | None = None,
) -> tuple[float, Window | None]:
    empty_bucket(s3, b.raw_target)
    run = uuid.uuid4().hex[:12]
    canvases = []
    for c in range(chains):
        art_key = f"raw/{run}/{c:03d}/SourceOutput.zip"
        sigs = [
            app.signature(
                raw_s3.SOURCE_TASK,
                args=(b.source, SOURCE_KEY, b.raw_artifacts, art_key, None),
                immutable=True,
                queue=raw_s3.QUEUE,
            )
        ]
        sigs += raw_s3.deploy_signatures(
            app, b.raw_artifacts, art_key, b.raw_target, f"{run}-{c:03d}", deploys, run
        )
        canvases.append(chain(*sigs))
    if meter is not None:
        meter.start()
    t0 = time.time()
    for canvas in canvases:
        canvas.apply_async()
    done = tail.wait(run, chains, RUN_TIMEOUT)
    window = meter.stop() if meter is not None else None
    elapsed = max(done) / 1000 - t0
    deployed = count_keys(s3, b.raw_target)
    short = [c for c in range(chains) if deployed.get(f"{run}-{c:03d}", 0) != deploys]
    if short:
        raise RuntimeError(f"fan-out raw: chains missing deployed objects: {short}")
    return elapsed, window


def run_fanout(
    bench: Bench,
    pipelines: int = 4,
    executions: int = 12,
    deploys: int = 3,
    runs: int = 3,
    cas_executions: int = 50,
    cas_rounds: int = 2,
) -> FanoutResult:
    res = FanoutResult(pipelines, executions, deploys, runs)
    b = Buckets.create(bench, "bench-fan")
    s3 = bench.s3_client()
    cp = bench.codepipeline(pool=START_THREADS)
    tag = uuid.uuid4().hex[:6]
    names = [f"bench-fan-{tag}-{i}" for i in range(pipelines)]
    for n in names:
        cp.create_pipeline(pipeline=deploy_pipeline(n, b, deploys, execution_mode="PARALLEL"))
    ensure_raw_s3_worker(bench)
    app = make_app(bench.env["CONVEYOR_BROKER_URL"])
    events = EventTail(bench.env["CONVEYOR_REDIS_URL"])
    done = DoneTail(bench.env["CONVEYOR_REDIS_URL"], raw_s3.DONE_STREAM)
    meter = Meter(bench)
    try:
        log(f"fan-out: warm-up, {pipelines} executions and {pipelines} raw chains")
        _conveyor_round(cp, events, s3, names, b, 1, deploys)
        _raw_round(app, done, s3, b, pipelines, deploys)
        for i in range(runs):
            log(
                f"fan-out: round {i + 1}/{runs}: {res.in_flight} executions "
                f"({pipelines} pipelines x {executions}), {res.actions} actions"
            )
            rnd = _conveyor_round(cp, events, s3, names, b, executions, deploys, meter)
            res.conveyor_w = add_window(res.conveyor_w, rnd.window)
            res.conveyor.append(rnd.seconds)
            res.start_ms += rnd.start_ms
            res.execution_s += rnd.execution_s
            res.first_end_s.append(rnd.first_end_s)
            raw_s, rw = _raw_round(app, done, s3, b, res.in_flight, deploys, meter)
            res.raw.append(raw_s)
            res.raw_w = add_window(res.raw_w, rw)
            secs = rnd.seconds
            log(
                f"fan-out: conveyor {secs:.1f}s ({res.actions / secs:.1f} actions/s), "
                f"raw {res.raw[-1]:.1f}s ({res.actions / res.raw[-1]:.1f} tasks/s)"
            )
        if cas_rounds:
            one = f"bench-fan-{tag}-one"
            cp.create_pipeline(pipeline=deploy_pipeline(one, b, deploys, execution_mode="PARALLEL"))
            log(f"fan-out: CAS: warm-up, one execution of {one}")
            _conveyor_round(cp, events, s3, [one], b, 1, deploys)
            for i in range(cas_rounds):
                rnd = _conveyor_round(cp, events, s3, [one], b, cas_executions, deploys, meter)
                w = rnd.window
                cas = CasRound(
                    cas_executions,
                    deploys,
                    rnd.seconds,
                    rnd.transitions,
                    None if w is None else w.cas,
                    0 if w is None else w.redis.get("watch", 0),
                    0 if w is None else w.redis.get("exec", 0),
                )
                res.cas_rounds.append(cas)
                log(
                    f"fan-out: CAS round {i + 1}/{cas_rounds}: {cas_executions} executions of "
                    f"one pipeline in {cas.seconds:.1f}s, {cas.transitions} transitions, "
                    f"{cas_text(cas.cas)} CAS retries ({cas.per_transition:.3f} per transition)"
                )
    finally:
        meter.close()
        events.close()
        done.close()
        with contextlib.suppress(Exception):
            app.close()
    return res
