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
- what each action costs, all of it counted: the Celery hop to the provider pool, and on
  the worker: load the execution, claim the lease (one Lua call; heartbeat thread),
  download the ``SourceOutput`` artifact (minio SDK, one GET hashed while streaming,
  SHA-256 checked), extract it, copy it to the build's source dir, parse the buildspec,
  run ``echo ok`` in a ``bash`` process with CodeBuild's state-keeping wrapper, upload the
  build log, record the result, then apply it in the worker (``Store.apply``: load the run
  and the execution, ``decide``, compare-and-set write with the outbox and events, dispatch
  the next action; no hop through the engine pool). The Source action instead GETs the
  object with boto3, extracts it, and zips and uploads ``SourceOutput``.

Raw side (``celery -A benchmarks.raw_celery worker -c 1 -Q bench``, see raw_celery.py):

- a Celery chain of 50 immutable tasks; each downloads the same tiny zip from the same S3
  endpoint (minio SDK), extracts it, runs ``bash -c "echo ok"`` in it, uploads the output
  as one log object; the last one sets a Redis key;
- timed from ``chain.apply_async()`` until the driver (polling Redis every 100 ms) sees it.

So the ratio charges Conveyor for everything it does beyond that minimum: state in Redis,
events, leases, integrity checks, the artifact re-zip by the Source action and the
buildspec machinery.

Where the time goes is then measured in-process, without Celery: the same pipeline is
driven by calling ``workers.runner.run_action`` for every dispatched task (real Redis, real
S3, real providers; the action's result is applied inside it, as on a worker), timing each
action, once more with timers around the worker's and the store's functions (wall and CPU,
benchmarks/_timers.py), and once under cProfile for the functions that dominate. The rest
of the end-to-end per-action time is Celery, the broker, the process hops and polling.
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
from benchmarks._inproc import in_process, unique
from benchmarks._stack import Bench, log
from benchmarks._timers import Row, Timed, Timers, check, profile_table

BUILDSPEC = "version: 0.2\nphases:\n  build:\n    commands:\n      - echo ok\n"
POLL_SECONDS = 0.1
POLLING_PROCESSES = frozenset({"api", "driver (this process)"})
RUN_TIMEOUT = 300.0
# Code timed during the in-process run (benchmarks/_timers.py): (module, attribute path,
# label, depth); a row counts the calls made directly under the row above it with one less
# depth. Checked before anything runs: a name that is gone fails the benchmark.
APPLY_LABEL = "applying the result (`Store.apply`): the compare-and-set transition"
TIMED: list[Timed] = [
    (
        "benchmarks._inproc",
        "handle",
        "worker, whole action incl. applying the result (`run_action`)",
        0,
    ),
    ("engine.store.runs", "Runs.load", "load the execution (`Runs.load`)", 1),
    ("engine.store.leases", "Leases.claim", "claim the lease (`Leases.claim`, one Lua call)", 1),
    ("workers.runner", "execute", "`execute`: inputs, provider, outputs, log", 1),
    (
        "workers.artifacts",
        "ArtifactStore.download_to_dir",
        "download (one GET, hashed while streaming) + extract",
        2,
    ),
    ("providers.codebuild", "_CodeBuildBase.run", "CodeBuild provider `run`", 2),
    ("providers.codebuild", "parse_buildspec", "parse buildspec", 3),
    ("providers.bash_session", "BashSession.run", "bash command `echo ok`", 3),
    ("providers.s3_source", "S3Source.run", "S3 source provider `run`", 2),
    (
        "workers.artifacts",
        "ArtifactStore.package_dir",
        "zip + hash the output artifact (`package_dir`)",
        2,
    ),
    (
        "workers.artifacts",
        "ArtifactStore.upload_packed",
        "upload the output artifact (`upload_packed`)",
        2,
    ),
    ("workers.artifacts", "ArtifactStore.upload_file", "upload the build log (`upload_file`)", 2),
    ("engine.store.leases", "Leases.record_result", "record the result (`record_result`)", 1),
    ("workers.attempts", "report", "report: apply the result here, in the worker (`report`)", 1),
    ("engine.store", "Store.apply", APPLY_LABEL, 2),
    ("engine.store.runs", "Runs._read", "read: WATCH + one Lua read (`_read`)", 3),
    ("engine.store.runs", "decide", "`decide` (pure)", 3),
    (
        "engine.store.runs",
        "Runs._write",
        "queue the MULTI: records, indexes, outbox, events (`_write`)",
        3,
    ),
    (
        "engine.store.runs",
        "Runs.carry_out",
        "dispatch the next task, clear the outbox (`carry_out`)",
        3,
    ),
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
    named = {**bench.conveyor, "redis": bench.redis, "moto-s3": bench.s3, **bench.raw_workers}
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
    # the in-process runs (no Celery), per action of each kind: wall and CPU ms of the whole
    # task (`run_action`: the worker and the applying of the result)
    inproc_worker_ms: dict[str, float] = field(default_factory=dict)
    inproc_worker_cpu_ms: dict[str, float] = field(default_factory=dict)
    inproc_apply_ms: float = 0.0  # applying the result (`Store.apply`), per action
    inproc_apply_cpu_ms: float = 0.0
    inproc_total_s: float = 0.0
    # the timed in-process run: rows per action, and the table as markdown
    timed_rows: list[Row] = field(default_factory=list)
    timed_table: list[str] = field(default_factory=list)
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
    check(TIMED)  # a timed function that is gone fails here, not after the timed runs
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
            mine = [s for s in steps if s.stage == kind]
            if mine:
                res.inproc_worker_ms[kind.lower()] = 1000 * statistics.fmean(
                    s.seconds for s in mine
                )
                res.inproc_worker_cpu_ms[kind.lower()] = 1000 * statistics.fmean(
                    s.cpu for s in mine
                )

        timed = Timers(TIMED)
        with timed.installed():
            ip.run(name, timed)
        res.timed_rows = timed.rows()
        res.timed_table = profile_table(timed)
        apply = next(r for r in res.timed_rows if r.label == APPLY_LABEL)
        res.inproc_apply_ms, res.inproc_apply_cpu_ms = apply.wall_ms, apply.cpu_ms

        prof = cProfile.Profile()
        t = time.perf_counter()
        ip.run(name, profile=prof)
        res.profile_total_s = time.perf_counter() - t
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    res.profile_top = out.getvalue()
