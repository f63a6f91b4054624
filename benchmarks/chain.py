"""Chain: N of the lightest action there is, one after another, Conveyor vs raw Celery tasks
doing only the same S3 work.

Stack: engine pool (c=1), ``all`` pool (c=2), beat and API; raw side ``celery -A
benchmarks.raw_s3 worker -c 2 -Q bench-s3``; one Redis (state db 0, broker db 1, both
sides), one moto S3 endpoint. One warm-up per side, then ``runs`` timed runs alternating
Conveyor / raw so that machine noise hits both alike.

Conveyor side (boto3 ``codepipeline`` client on the API, completion read from the
``conveyor:events`` stream with XREAD BLOCK):

- pipeline: stage ``Source`` = ``Source/AWS/S3`` fetching a ~1 KB zip (one 1000-byte
  ``index.html``); stage ``Deploy`` = N ``Deploy/AWS/S3`` actions, ``Extract: "true"``,
  input ``SourceOutput``, ``runOrder`` 1..N, each into ``<execution id>/dNN/`` of a bucket
  that exists;
- timed: the Deploy stage, from its STARTED event (committed in the transition that
  dispatches the first deploy action) to the pipeline's SUCCEEDED event (committed in the
  transition that takes the last action's result): N actions, per action = that / N. Also
  reported: end to end, from the StartPipelineExecution call (N + 1 actions);
- what one deploy action costs, all of it counted: the Celery hop to the provider pool;
  on the worker: load the execution, claim the lease (one Lua call) + heartbeat thread,
  download the artifact (minio, one GET hashed while streaming, SHA-256 checked), extract,
  PUT the file (boto3 ``put_object``, the client cached per process), record the result,
  then apply it in the worker (``Store.apply``: WATCH + one Lua read, ``decide``, one
  MULTI with outbox and events), which dispatches the next action; no action log is stored
  for an action that succeeded at the first try.

Raw side: a Celery chain of N immutable ``bench.s3.deploy`` tasks (benchmarks/raw_s3.py):
GET the same artifact zip (minio ``get_object``), extract it, PUT ``index.html`` (boto3
``put_object``) under ``raw/<run>/dNN/``; the last task XADDs to a Redis stream the driver
reads with XREAD BLOCK. Timed from ``chain.apply_async()`` to that entry.

Ratio = Conveyor per action / raw per task. Both sides' deployed objects are counted after
every run (sanity). CPU: user+sys of every process tree (workers with their prefork
children, beat, API, Redis, moto), per action.

Where one deploy action's time goes: the same pipeline driven in-process
(benchmarks/_inproc.py: ``run_action`` for every dispatched task, no Celery), one warm-up
execution, then ``PROFILE_RUNS`` executions with wall and CPU timers around the worker's
and the store's functions (:data:`DEPLOY_TIMED`; only the Deploy actions are counted), then
one under cProfile. benchmarks/profile_before.py measures the code before the rewrite
(f1c8761) with the same rows, into benchmarks/profile_before.md.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import chain

from benchmarks import raw_s3
from benchmarks._inproc import in_process, unique
from benchmarks._measure import (
    DoneTail,
    EventTail,
    Meter,
    Window,
    add_window,
    count_keys,
    pct,
    stack_cpu,
)
from benchmarks._s3pipe import RAW_ARTIFACT_KEY, Buckets, deploy_pipeline
from benchmarks._stack import Bench, log
from benchmarks._timers import Timed, Timers, check, profile_table
from benchmarks.raw_celery import make_app
from engine.messages import Dispatch

RUN_TIMEOUT = 300.0
PROFILE_RUNS = 2
# One S3 deploy action in-process, current code (benchmarks/_timers.py: a row counts the calls
# made directly under the row above it with one less depth). The rows are those of
# benchmarks/profile_before.py, in the same order, so the two tables compare row by row; a
# row with no module is a step this code no longer has. Checked before anything runs.
DEPLOY_TIMED: list[Timed] = [
    ("benchmarks._inproc", "handle", "one S3 deploy action: worker + applying its result "
     "(`run_action`)", 0),
    ("engine.store.runs", "Runs.load", "load the execution (`Runs.load`)", 1),
    ("engine.store.leases", "Leases.get_result", "read a recorded result (`Leases.get_result`; "
     "only if the claim finds one)", 1),
    ("engine.store.leases", "Leases.claim", "claim the lease (`Leases.claim`, one Lua call "
     "that also sees a recorded result)", 1),
    ("workers.attempts", "Heartbeat.start", "start the heartbeat thread", 1),
    ("workers.runner", "execute", "run the action: input, provider, outputs, log (`execute`)",
     1),
    ("tempfile", "mkdtemp", "make the scratch directory (`mkdtemp`)", 2),
    ("workers.artifacts", "ArtifactStore.download_verified", "download the input artifact "
     "as stored, checked against its recorded SHA-256 (`download_verified`)", 2),
    ("workers.artifacts", "ArtifactStore.fetch", "GET the object to a file (`fetch`: one GET, "
     "hashed while streaming)", 3),
    ("workers.artifacts", "ArtifactStore.unpack", "extract it, for actions that read files "
     "(`unpack`; an S3 deploy without Extract takes the bytes as they are)", 2),
    ("providers.s3_deploy", "S3Deploy.run", "S3 deploy provider (`S3Deploy.run`)", 2),
    ("providers.s3_deploy", "s3_client", "boto3 client (`s3_client`, cached per process)", 3),
    ("", "", "HEAD the target bucket", 3),
    ("providers.s3_deploy", "S3Deploy._put", "PUT the file (`_put`: one `put_object`)", 3),
    ("workers.artifacts", "ArtifactStore.upload_file", "upload the action log (`upload_file`; "
     "only when it has something to say)", 2),
    ("shutil", "rmtree", "remove the scratch directory, in this thread (`shutil.rmtree`)", 2),
    ("workers.scratch", "ScratchSpace.discard", "hand the scratch directory to the background "
     "remover (`ScratchSpace.discard`: a rename)", 2),
    ("engine.store.leases", "Leases.record_result", "record the result (`record_result`)", 1),
    ("workers.attempts", "report", "apply the result, in the worker (`report`)", 1),
    ("", "", "load the execution again", 2),
    ("", "", "read the recorded result", 2),
    ("engine.store", "Store.apply", "compare-and-set transition (`Store.apply`)", 2),
    ("engine.store.runs", "Runs._read", "read under WATCH (`_read`: one Lua read)", 3),
    ("engine.store.runs", "decide", "`decide`", 3),
    ("engine.store.runs", "Runs._write", "queue the writes: records, indexes, outbox, events "
     "(`_write`)", 3),
    ("redis.client", "Pipeline.execute", "EXEC (redis-py `Pipeline.execute`)", 3),
    ("engine.store.runs", "Runs.carry_out", "dispatch the next task, clear the outbox "
     "(`carry_out`)", 3),
    ("engine.store.leases", "Leases.release", "release the lease (`Leases.release`: only for "
     "a stale report; else part of the transition's MULTI)", 2),
]  # fmt: skip


@dataclass
class ChainResult:
    actions: int  # deploy actions in the chain
    runs: int
    conveyor: list[float] = field(default_factory=list)  # Deploy stage, s
    conveyor_e2e: list[float] = field(default_factory=list)  # start call -> SUCCEEDED, s
    raw: list[float] = field(default_factory=list)  # apply_async -> last task done, s
    conveyor_warmup: float = 0.0
    raw_warmup: float = 0.0
    action_spans_ms: list[float] = field(default_factory=list)  # STARTED -> SUCCEEDED
    conveyor_w: Window | None = None  # summed over the timed runs
    raw_w: Window | None = None
    source_zip_bytes: int = 0
    # the in-process profile of one deploy action (current code): the timers' table, per
    # action, the deploy actions it counted, their mean wall time, and cProfile's top 15
    profile_table: list[str] = field(default_factory=list)
    profile_actions: int = 0
    profile_ms: float = 0.0
    profile_top: str = ""
    profile_load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # when the profile started

    @property
    def conveyor_ms(self) -> float:
        return 1000 * statistics.median(self.conveyor) / self.actions

    @property
    def raw_ms(self) -> float:
        return 1000 * statistics.median(self.raw) / self.actions

    @property
    def ratio(self) -> float:
        return self.conveyor_ms / self.raw_ms

    def cpu_ms(self, w: Window | None) -> float:
        """Stack CPU per action (the Conveyor side counts the source action too)."""
        if w is None:
            return 0.0
        per_run = self.actions + (1 if w is self.conveyor_w else 0)
        return 1000 * stack_cpu(w) / (self.runs * per_run)

    def span_pct(self, q: float) -> float:
        return pct(self.action_spans_ms, q)


def _action_spans(tail: EventTail, eid: str) -> list[float]:
    started: dict[str, int] = {}
    spans = []
    for e in tail.events.get(eid, []):
        if e.level != "action" or e.stage != "Deploy" or e.action is None:
            continue
        if e.state == "STARTED":
            started[e.action] = e.ms
        elif e.state == "SUCCEEDED" and e.action in started:
            spans.append(float(e.ms - started[e.action]))
    return spans


def _conveyor_run(
    cp: Any, tail: EventTail, s3: Any, name: str, b: Buckets, n: int, meter: Meter | None = None
) -> tuple[float, float, list[float], Window | None]:
    """(Deploy stage seconds, end-to-end seconds, action spans in ms, what was metered)."""
    if meter is not None:
        meter.start()
    t0 = time.time()
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    end = tail.wait_ended([eid], RUN_TIMEOUT, f"chain {name}")[eid]
    window = meter.stop() if meter is not None else None  # the checks below are not metered
    if end.state != "SUCCEEDED":
        raise RuntimeError(f"chain execution {eid} ended {end.state}")
    evs = tail.events[eid]
    stage_start = next(
        e.ms for e in evs if e.level == "stage" and e.stage == "Deploy" and e.state == "STARTED"
    )
    spans = _action_spans(tail, eid)
    tail.forget([eid])
    deployed = count_keys(s3, b.target, f"{eid}/")
    if len(deployed) != n:
        raise RuntimeError(f"chain execution {eid} deployed {len(deployed)} of {n} objects")
    return (end.ms - stage_start) / 1000, end.ms / 1000 - t0, spans, window


def _raw_run(
    app: Any, tail: DoneTail, s3: Any, b: Buckets, n: int, meter: Meter | None = None
) -> tuple[float, Window | None]:
    run = uuid.uuid4().hex[:12]
    sigs = raw_s3.deploy_signatures(
        app, b.raw_artifacts, RAW_ARTIFACT_KEY, b.raw_target, f"raw/{run}", n, run
    )
    if meter is not None:
        meter.start()
    t0 = time.time()
    chain(*sigs).apply_async()
    (done_ms,) = tail.wait(run, 1, RUN_TIMEOUT)
    window = meter.stop() if meter is not None else None
    elapsed = done_ms / 1000 - t0
    deployed = count_keys(s3, b.raw_target, f"raw/{run}/")
    if len(deployed) != n:
        raise RuntimeError(f"raw chain {run} deployed {len(deployed)} of {n} objects")
    return elapsed, window


def ensure_raw_s3_worker(bench: Bench) -> None:
    if "raw-s3" not in bench.raw_workers:
        bench.start_raw_worker("benchmarks.raw_s3", raw_s3.QUEUE, 2, "raw-s3")


def run_chain(bench: Bench, actions: int = 50, runs: int = 3) -> ChainResult:
    if not 1 <= actions <= 50:
        raise ValueError("--chain-actions must be 1..50 (CodePipeline: 50 actions per stage)")
    check(DEPLOY_TIMED)  # a timed function that is gone fails here, before any run
    res = ChainResult(actions=actions, runs=runs)
    b = Buckets.create(bench, "bench-chain")
    res.source_zip_bytes = b.source_zip_bytes
    s3 = bench.s3_client()
    cp = bench.codepipeline()
    name = f"bench-chain-{uuid.uuid4().hex[:8]}"
    cp.create_pipeline(pipeline=deploy_pipeline(name, b, actions))
    ensure_raw_s3_worker(bench)
    app = make_app(bench.env["CONVEYOR_BROKER_URL"])
    events = EventTail(bench.env["CONVEYOR_REDIS_URL"])
    done = DoneTail(bench.env["CONVEYOR_REDIS_URL"], raw_s3.DONE_STREAM)
    meter = Meter(bench)
    try:
        log(f"chain: warm-up, conveyor (1 + {actions} actions) and raw celery ({actions} tasks)")
        res.conveyor_warmup = _conveyor_run(cp, events, s3, name, b, actions)[0]
        res.raw_warmup = _raw_run(app, done, s3, b, actions)[0]
        for i in range(runs):
            stage_s, e2e_s, spans, cw = _conveyor_run(cp, events, s3, name, b, actions, meter)
            res.conveyor_w = add_window(res.conveyor_w, cw)
            res.conveyor.append(stage_s)
            res.conveyor_e2e.append(e2e_s)
            res.action_spans_ms += spans
            raw_s, rw = _raw_run(app, done, s3, b, actions, meter)
            res.raw.append(raw_s)
            res.raw_w = add_window(res.raw_w, rw)
            log(
                f"chain: run {i + 1}/{runs}: conveyor {stage_s:.2f}s "
                f"({1000 * stage_s / actions:.0f} ms/action), raw {res.raw[-1]:.2f}s "
                f"({1000 * res.raw[-1] / actions:.0f} ms/task)"
            )
    finally:
        meter.close()
        events.close()
        done.close()
        with contextlib.suppress(Exception):
            app.close()
    log(f"chain: one deploy action in-process, timed ({PROFILE_RUNS} runs) and profiled")
    _profile(bench, res, b)
    return res


def _is_deploy(d: Dispatch) -> bool:
    return d.stage == "Deploy"


def _profile(bench: Bench, res: ChainResult, b: Buckets) -> None:
    """Where one deploy action's time goes, in-process (see the module's docstring)."""
    res.profile_load = os.getloadavg()
    with in_process(bench) as ip:
        name = ip.create_pipeline(deploy_pipeline(unique("bench-chain-inproc"), b, res.actions))
        ip.run(name)  # warm-up: imports, connections, caches
        timed = Timers(DEPLOY_TIMED)
        with timed.installed():
            for _ in range(PROFILE_RUNS):
                ip.run(name, timed, only=_is_deploy)
        prof = cProfile.Profile()
        ip.run(name, only=_is_deploy, profile=prof)
    res.profile_table = profile_table(timed)
    res.profile_actions = timed.actions
    res.profile_ms = 1000 * timed.top().wall / max(timed.actions, 1)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    res.profile_top = out.getvalue()
