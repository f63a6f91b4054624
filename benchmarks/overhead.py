"""Per-action engine overhead: a 50-action pipeline of trivial work, Conveyor vs raw Celery.

Both sides run against the same ``redis-server`` (same broker URL, ``.../1``), the same
moto S3 endpoint, on the same machine, in the same run; both worker processes are Celery
prefork workers with concurrency 1, acks late and prefetch 1. Each side is warmed up with
one run, then timed ``runs`` times.

Conveyor side (``conveyor worker --pool engine -c 1``, ``conveyor worker --pool all -c 1``,
``conveyor beat``, ``conveyor api``; driven with boto3's ``codepipeline`` client):

- pipeline: stage ``Source`` = one ``Source/AWS/S3`` action fetching a tiny zip that holds
  a ``buildspec.yml`` running ``echo ok`` with no artifacts; stage ``Build`` = 49
  ``Build/AWS/CodeBuild`` actions, ``runOrder`` 1..49, input ``SourceOutput``, no outputs;
- timed from the ``StartPipelineExecution`` call until ``GetPipelineExecution`` (polled
  every 100 ms through the API, as a client would) says ``Succeeded``;
- what each action costs, all of it counted: the engine's completion callback (load the
  execution from Redis, ``decide``, compare-and-set write with the outbox, events, dispatch
  the next action), the Celery hop to the provider pool, and on the worker: load the
  execution, claim a lease (heartbeat thread), download the ``SourceOutput`` artifact
  (minio SDK, SHA-256 checked), extract it, copy it to the build's source dir, parse the
  buildspec, run ``echo ok`` in a ``bash`` process with CodeBuild's state-keeping wrapper,
  upload two log objects (``build-log`` and ``action-log``), record the result, send the
  callback. The Source action instead makes a boto3 client, HEADs and GETs the object,
  extracts it, and zips and uploads ``SourceOutput``.

Raw side (``celery -A benchmarks.raw_celery worker -c 1 -Q bench``, see raw_celery.py):

- a Celery chain of 50 immutable tasks; each downloads the same tiny zip from the same S3
  endpoint (minio SDK), extracts it, runs ``bash -c "echo ok"`` in it, uploads the output
  as one log object; the last one sets a Redis key;
- timed from ``chain.apply_async()`` until the driver (polling Redis every 100 ms) sees it.

So the ratio charges Conveyor for everything it does beyond that minimum: state in Redis,
events, leases, integrity checks, the artifact re-zip by the Source action, the second log
object, the buildspec machinery and the extra process hop per action (provider pool ->
engine pool -> provider pool, where the raw chain goes worker -> same worker).

Where the time goes is then measured in-process, without Celery: the same pipeline is
driven by calling ``workers.runner.run_attempt`` and ``workers.tasks.advance`` directly
(real Redis, real S3, real providers), timing the worker's and the engine's share of each
action, and once more under cProfile for the functions that dominate. The rest of the
end-to-end per-action time is Celery, the broker, the process hops and polling.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis
from celery import chain

from benchmarks import raw_celery
from benchmarks._inproc import Timed, in_process, timers, unique
from benchmarks._stack import Bench, log

BUILDSPEC = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\n"
POLL_SECONDS = 0.1
POLLING_PROCESSES = frozenset({"api", "driver (this process)"})
RUN_TIMEOUT = 300.0
# Code timed during the in-process run: (module, attribute path, label, depth).
TIMED: list[Timed] = [
    ("workers.runner", "run_attempt", "worker: `run_attempt`, the whole action", 0),
    ("engine.store", "Store.try_load", "load execution (Redis GET + JSON parse)", 1),
    ("engine.store", "Store.claim_lease", "claim lease", 1),
    ("workers.runner", "_execute", "`_execute`: inputs, provider, outputs, logs", 1),
    ("engine.artifacts", "ArtifactStore.download_to_dir", "download + SHA-256 + extract", 2),
    ("providers.codebuild", "_CodeBuildBase.run", "CodeBuild provider `run`", 2),
    ("providers.codebuild", "parse_buildspec", "parse buildspec", 3),
    ("providers.bash_session", "BashSession.run", "bash command `echo ok`", 3),
    ("providers.s3_source", "S3Source.run", "S3 source provider `run`", 2),
    ("engine.artifacts", "ArtifactStore.upload_dir", "zip + upload output artifact", 2),
    ("engine.artifacts", "ArtifactStore.upload_file", "upload one object (logs, artifacts)", 2),
    ("engine.store", "Store.record_result", "record result", 1),
    ("workers.tasks", "advance", "engine: `advance`, the completion callback", 0),
    ("engine.store", "Store.get_result", "read result", 1),
    ("engine.store", "Store.apply", "`Store.apply`: compare-and-set transition", 1),
    ("engine.store", "decide", "`decide` (pure; deep-copies the state)", 2),
    ("engine.store", "Store._stage_effects", "stage outbox + events", 2),
    ("engine.store", "Store.release_lease", "release lease", 1),
]


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _action(
    name: str, category: str, provider: str, run_order: int, config: dict[str, str], **arts: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": provider,
            "version": "1",
        },
        "runOrder": run_order,
        "configuration": config,
        "inputArtifacts": [{"name": n} for n in arts.get("ins", ())],
        "outputArtifacts": [{"name": n} for n in arts.get("outs", ())],
    }


def overhead_pipeline(
    name: str, src_bucket: str, src_key: str, artifacts: str, actions: int
) -> Any:
    builds = [
        _action(
            f"Build{i:02d}",
            "Build",
            "CodeBuild",
            i,
            {"ProjectName": "bench"},
            ins=("SourceOutput",),
        )
        for i in range(1, actions)
    ]
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor-bench",
        "artifactStore": {"type": "S3", "location": artifacts},
        "stages": [
            {
                "name": "Source",
                "actions": [
                    _action(
                        "Fetch",
                        "Source",
                        "S3",
                        1,
                        {"S3Bucket": src_bucket, "S3ObjectKey": src_key},
                        outs=("SourceOutput",),
                    )
                ],
            },
            {"name": "Build", "actions": builds},
        ],
    }


# -- CPU accounting -----------------------------------------------------------------------


def tree_cpu(pid: int | None) -> float:
    """CPU seconds (user+system) of a process tree, including reaped children (bash)."""
    if pid is None:
        return 0.0
    try:
        leader = psutil.Process(pid)
        procs = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_snapshot(bench: Bench) -> dict[str, float]:
    named = {**bench.conveyor, "redis": bench.redis, "moto-s3": bench.s3}
    if bench.raw_worker is not None:
        named["raw-celery"] = bench.raw_worker
    out = {name: tree_cpu(svc.pid) for name, svc in named.items()}
    me = psutil.Process().cpu_times()
    out["driver (this process)"] = me.user + me.system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    return {k: (after[k] - before.get(k, 0.0)) / runs for k in after}


# -- results -----------------------------------------------------------------------------


@dataclass
class OverheadResult:
    actions: int
    runs: int
    conveyor: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    conveyor_warmup: float = 0.0
    raw_warmup: float = 0.0
    conveyor_cpu: dict[str, float] = field(default_factory=dict)  # CPU s per run
    raw_cpu: dict[str, float] = field(default_factory=dict)
    inproc_worker_ms: dict[str, float] = field(default_factory=dict)  # per action kind
    inproc_engine_ms: float = 0.0
    inproc_total_s: float = 0.0
    # (label, depth, calls per action, ms per action) from the timed in-process run
    timed_rows: list[tuple[str, int, float, float]] = field(default_factory=list)
    profile_total_s: float = 0.0
    profile_top: str = ""

    def pipeline_cpu(self, side: dict[str, float]) -> float:
        """CPU seconds per run of the processes that run the pipeline: everything but the
        polling (the API serving GetPipelineExecution, and this driver)."""
        return sum(v for k, v in side.items() if k not in POLLING_PROCESSES)

    @property
    def conveyor_mean(self) -> float:
        return statistics.fmean(self.conveyor)

    @property
    def raw_mean(self) -> float:
        return statistics.fmean(self.raw)

    @property
    def ratio(self) -> float:
        return self.conveyor_mean / self.raw_mean


# -- the two sides ------------------------------------------------------------------------


def _conveyor_run(cp: Any, name: str) -> float:
    started = time.perf_counter()
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    deadline = started + RUN_TIMEOUT
    while True:
        ex = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
        status = ex["pipelineExecution"]["status"]
        if status == "Succeeded":
            return time.perf_counter() - started
        if status not in ("InProgress", "Stopping"):
            raise RuntimeError(f"execution {eid} ended {status}: {ex['pipelineExecution']}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"execution {eid} still {status} after {RUN_TIMEOUT:g}s")
        time.sleep(POLL_SECONDS)


def _raw_run(app: Any, r: redis.Redis, actions: int, src: tuple[str, str], logs: str) -> float:
    run = uuid.uuid4().hex[:12]
    sigs = [
        app.signature(
            raw_celery.TASK,
            args=(run, i, actions, src[0], src[1], logs),
            immutable=True,
            queue=raw_celery.QUEUE,
        )
        for i in range(actions)
    ]
    key = raw_celery.DONE_KEY.format(run=run)
    started = time.perf_counter()
    chain(*sigs).apply_async()
    deadline = started + RUN_TIMEOUT
    while not r.exists(key):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"raw chain {run} did not finish in {RUN_TIMEOUT:g}s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - started


def run_overhead(bench: Bench, actions: int = 50, runs: int = 3) -> OverheadResult:
    if actions < 2:
        raise ValueError("--actions must be at least 2 (one source + one build)")
    res = OverheadResult(actions=actions, runs=runs)
    s3 = bench.s3_client()
    tag = uuid.uuid4().hex[:8]
    src_bucket, artifacts = f"bench-src-{tag}", f"bench-artifacts-{tag}"
    src_key = "overhead/source.zip"
    s3.create_bucket(Bucket=src_bucket)
    s3.put_bucket_versioning(Bucket=src_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=src_bucket, Key=src_key, Body=zip_bytes({"buildspec.yml": BUILDSPEC}))
    s3.create_bucket(Bucket=artifacts)

    cp = bench.codepipeline()
    name = f"bench-overhead-{tag}"
    cp.create_pipeline(pipeline=overhead_pipeline(name, src_bucket, src_key, artifacts, actions))
    if bench.raw_worker is None:
        bench.start_raw_worker()
    app = raw_celery.make_app(bench.env["CONVEYOR_BROKER_URL"])
    r = redis.Redis.from_url(bench.env["CONVEYOR_REDIS_URL"])

    def raw_run() -> float:
        return _raw_run(app, r, actions, (src_bucket, src_key), artifacts)

    def add_cpu(total: dict[str, float], before: dict[str, float]) -> None:
        for k, v in cpu_delta(before, cpu_snapshot(bench), runs).items():
            total[k] = total.get(k, 0.0) + v

    try:
        log(f"overhead: warm-up, conveyor ({actions} actions) and raw celery ({actions} tasks)")
        res.conveyor_warmup = _conveyor_run(cp, name)
        res.raw_warmup = raw_run()
        # Alternate the sides so that noise on a shared machine hits both alike.
        for i in range(runs):
            before = cpu_snapshot(bench)
            res.conveyor.append(_conveyor_run(cp, name))
            add_cpu(res.conveyor_cpu, before)
            before = cpu_snapshot(bench)
            res.raw.append(raw_run())
            add_cpu(res.raw_cpu, before)
            log(
                f"overhead: run {i + 1}/{runs}: conveyor {res.conveyor[-1]:.2f}s, "
                f"raw {res.raw[-1]:.2f}s"
            )
    finally:
        r.close()
        with contextlib.suppress(Exception):
            app.close()

    log("overhead: in-process breakdown (no Celery)")
    _in_process(bench, res, src_bucket, src_key, artifacts)
    return res


# -- in-process breakdown -------------------------------------------------------------------


def _in_process(bench: Bench, res: OverheadResult, src_bucket: str, src_key: str, art: str) -> None:
    """The same pipeline, driven in-process (see benchmarks/_inproc.py)."""
    with in_process(bench) as ip:
        name = ip.create_pipeline(
            overhead_pipeline(unique("bench-inproc"), src_bucket, src_key, art, res.actions)
        )
        ip.run(name)  # warm-up: imports, connections, first boto3 client
        t = time.perf_counter()
        steps = ip.run(name)
        res.inproc_total_s = time.perf_counter() - t
        for kind in ("Source", "Build"):
            xs = [s.worker_s for s in steps if s.stage == kind]
            if xs:
                res.inproc_worker_ms[kind.lower()] = 1000 * statistics.fmean(xs)
        res.inproc_engine_ms = 1000 * statistics.fmean(s.engine_s for s in steps)

        with timers(TIMED) as acc:
            ip.run(name)
        n = res.actions
        res.timed_rows = [
            (label, depth, acc[label][0] / n, 1000 * acc[label][1] / n)
            for _mod, _attr, label, depth in TIMED
            if acc[label][0]
        ]

        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        ip.run(name)
        prof.disable()
        res.profile_total_s = time.perf_counter() - t
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    res.profile_top = out.getvalue()
