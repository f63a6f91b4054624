"""One S3 deploy action in-process, on the code before the rewrite (git f1c8761): the
"before" half of the chain benchmark's per-action profile, measured once.

Run it from a pristine worktree of that commit, so that its ``engine``, ``workers`` and
``providers`` are imported, not this tree's (it prints ``engine.__file__`` and refuses to
measure this tree)::

    git -C /work/main worktree add /tmp/bench-before f1c8761
    cd /tmp/bench-before && PYTHONPATH=/tmp/bench-before \\
        /work/main/.venv/bin/python /work/main/benchmarks/profile_before.py
    git -C /work/main worktree remove --force /tmp/bench-before

It writes benchmarks/profile_before.md, which ``make bench`` puts next to the "after"
profile it measures every run (chain.py, ``DEPLOY_TIMED``). Same driver as
benchmarks/_inproc.py, in the old API: a private redis-server and moto S3 server (the old
tree's devstack), the chain's pipeline (Source + ``--actions`` S3 deploys of the ~1 KB
artifact, benchmarks/_s3pipe.py), every dispatched task run by calling
``workers.runner.run_attempt`` and then ``workers.tasks.advance`` (the completion callback
the engine pool ran), dispatches queued instead of sent; one warm-up execution, then
``--runs`` executions with the timers of :data:`BEFORE_TIMED` (the rows of chain.py's
``DEPLOY_TIMED``, in the same order), counting the Deploy actions only.

Only the standard library and this directory's ``_timers`` and ``_s3pipe`` are imported
from here (as top-level modules: the old tree has a ``benchmarks`` package of its own).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _s3pipe  # type: ignore[import-not-found]
import _timers  # type: ignore[import-not-found]
import psutil

HERE = Path(__file__).resolve().parent
COMMIT = "f1c8761"
OUT = HERE / "profile_before.md"
INPROC_DB = 2

# The rows of chain.py's DEPLOY_TIMED, in the same order, for the old code.
BEFORE_TIMED: list[tuple[str, str, str, int]] = [
    ("__main__", "handle", "one S3 deploy action: worker + applying its result "
     "(`run_attempt` + `advance`)", 0),
    ("engine.store", "Store.try_load", "load the execution (`Store.try_load`)", 1),
    ("engine.store", "Store.get_result", "read a recorded result (`Store.get_result`, before "
     "claiming)", 1),
    ("engine.store", "Store.claim_lease", "claim the lease (`Store.claim_lease`: SET NX, then "
     "ZADD)", 1),
    ("workers.runner", "Heartbeat.start", "start the heartbeat thread", 1),
    ("workers.runner", "_execute", "run the action: input, provider, outputs, log (`_execute`)",
     1),
    ("tempfile", "mkdtemp", "make the scratch directory (`mkdtemp`)", 2),
    ("engine.artifacts", "ArtifactStore.download_to_dir", "download the input artifact "
     "(`download_to_dir`)", 2),
    ("tempfile", "mkdtemp", "make a scratch directory for the zip (`mkdtemp`)", 3),
    ("minio", "Minio.fget_object", "GET the zip to a file (minio `fget_object`: a HEAD, then "
     "a GET)", 3),
    ("engine.artifacts", "sha256_file", "SHA-256 of the zip, read back from disk "
     "(`sha256_file`)", 3),
    ("engine.artifacts", "extract_zip", "extract (`extract_zip`)", 3),
    ("shutil", "rmtree", "remove the zip's scratch directory (`shutil.rmtree`)", 3),
    ("providers.s3_deploy", "S3Deploy.run", "S3 deploy provider (`S3Deploy.run`)", 2),
    ("providers.s3_deploy", "s3_client", "boto3 client (`s3_client`, a new one per action)", 3),
    ("providers.s3_deploy", "S3Deploy._check_bucket", "HEAD the target bucket "
     "(`_check_bucket`)", 3),
    ("providers.s3_deploy", "S3Deploy._put", "PUT the file (`_put`: boto3 `upload_file`, "
     "S3Transfer)", 3),
    ("engine.artifacts", "ArtifactStore.upload_file", "upload the action log (`upload_file`: "
     "SHA-256 + minio PUT)", 2),
    ("shutil", "rmtree", "remove the scratch directory, in this thread (`shutil.rmtree`)", 2),
    ("", "", "hand the scratch directory to the background remover", 2),
    ("engine.store", "Store.record_result", "record the result (`record_result`)", 1),
    ("workers.tasks", "advance", "apply the result: the engine callback (`advance`, called "
     "here without its Celery hop)", 1),
    ("engine.store", "Store.try_load", "load the execution again (`Store.try_load`)", 2),
    ("engine.store", "Store.get_result", "read the recorded result (`Store.get_result`)", 2),
    ("engine.store", "Store.apply", "compare-and-set transition (`Store.apply`)", 2),
    ("", "inline in `Store.apply`: WATCH, GET, parse", "read under WATCH", 3),
    ("engine.store", "decide", "`decide`", 3),
    ("engine.store", "Store._write_executions + Store._stage_effects", "queue the writes: "
     "records, outbox, events (`_write_executions` + `_stage_effects`)", 3),
    ("redis.client", "Pipeline.execute", "EXEC (redis-py `Pipeline.execute`)", 3),
    ("engine.store", "Store._carry_out", "dispatch the next task, clear the outbox "
     "(`_carry_out`)", 3),
    ("engine.store", "Store.release_lease", "release the lease (`Store.release_lease`)", 2),
]  # fmt: skip


def handle(rt: Any, d: Any) -> str:
    """One dispatched task and its completion callback, as the old worker and engine pool
    ran them (the root row)."""
    # The old API, typed as Any: a type checker sees this tree's modules, not the old ones.
    runner: Any = importlib.import_module("workers.runner")
    tasks: Any = importlib.import_module("workers.tasks")
    outcome = runner.run_attempt(rt, d.execution_id, d.stage, d.action, d.attempt)
    applied = tasks.advance(d.execution_id, d.stage, d.action, d.attempt)
    return f"{outcome}/{applied}"


class _S3:
    """What _s3pipe.Buckets.create needs of a Bench."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.svc.url,
            region_name=self.svc.region,
            aws_access_key_id=self.svc.access_key,
            aws_secret_access_key=self.svc.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )


def _cpu(pids: dict[str, int | None]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        if pid is not None:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
    return out


def _drive(rt: Any, name: str, timers: Any | None, others: dict[str, int | None]) -> None:
    """One execution, task by task (the old API); only Deploy tasks are timed."""
    state = rt.service.start_execution(name)
    while rt.pending:
        d = rt.pending.pop(0)
        chosen = timers is not None and d.stage == "Deploy"
        if timers is not None:
            timers.on = chosen
        before = _cpu(others) if chosen else {}
        outcome = handle(rt, d)
        if timers is not None and chosen:
            timers.actions += 1
            for k, v in _cpu(others).items():
                timers.extra_cpu[k] = timers.extra_cpu.get(k, 0.0) + v - before[k]
        if outcome != "succeeded/applied":
            raise RuntimeError(f"{d.stage}.{d.action}: {outcome}")
    if timers is not None:
        timers.on = False
    final = rt.store.load(state.execution_id)
    if final.status.value != "Succeeded":
        raise RuntimeError(f"execution ended {final.status.value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=50, help="deploy actions (the chain's)")
    parser.add_argument("--runs", type=int, default=2, help="timed executions")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    import engine

    engine_file = Path(engine.__file__).resolve()
    print(f"engine.__file__ = {engine_file}", flush=True)
    if engine_file.is_relative_to(HERE.parent):
        print(f"refusing: this is the tree of {HERE}, not the old code", file=sys.stderr)
        return 2
    from engine.settings import Settings
    from workers import devstack

    tasks: Any = importlib.import_module("workers.tasks")
    Runtime: Any = importlib.import_module("workers.runtime").Runtime

    class RecordingRuntime(Runtime):  # type: ignore[misc]
        pending: list[Any]

        def dispatch(self, d: Any) -> None:
            if type(d).__name__ == "Dispatch":
                self.pending.append(d)

        def send_callback(self, execution_id: str, stage: str, action: str, attempt: int) -> None:
            pass  # the driver calls advance itself

    load = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-before-"))
    services = []
    try:
        redis_svc = devstack.start_redis(
            workdir=workdir / "redis",
            binary=devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL),
        )
        services.append(redis_svc)
        s3_svc = devstack.start_s3(workdir=workdir / "s3")
        services.append(s3_svc)
        (workdir / "scratch").mkdir()
        settings = Settings(
            redis_url=devstack.with_redis_db(redis_svc.url, INPROC_DB),
            s3_endpoint_url=s3_svc.url,
            s3_access_key_id=s3_svc.access_key,
            s3_secret_access_key=s3_svc.secret_key,
            s3_region=s3_svc.region,
            workdir=str(workdir / "scratch"),
        )
        rt = RecordingRuntime(settings)
        rt.pending = []
        rt.store.r.flushdb()
        tasks._runtime = rt  # advance() finds its Runtime here
        b = _s3pipe.Buckets.create(_S3(s3_svc), "bench-chain")
        name = f"bench-chain-before-{os.getpid()}"
        rt.service.create_pipeline(_s3pipe.deploy_pipeline(name, b, args.actions))
        others = {"Redis": redis_svc.pid, "the S3 server (moto)": s3_svc.pid}
        _drive(rt, name, None, others)  # warm-up
        timers = _timers.Timers(BEFORE_TIMED)
        started = time.perf_counter()
        with timers.installed():
            for _ in range(args.runs):
                _drive(rt, name, timers, others)
        took = time.perf_counter() - started
    finally:
        devstack.stop_all(reversed(services))
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    ms = 1000 * timers.top().wall / max(timers.actions, 1)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"##### Before: git {COMMIT} (the last commit before the rewrite), "
        f"{timers.actions} deploy actions ({ms:.1f} ms each in-process)",
        "",
        f"Measured once, {when}, by benchmarks/profile_before.py from a pristine worktree "
        f"of {COMMIT} (`engine` imported from {engine_file.parent}); not re-measured by "
        "`make bench`, which runs this tree's code only. Command:",
        "",
        "```",
        f"git -C /work/main worktree add /tmp/bench-before {COMMIT}",
        "cd /tmp/bench-before && PYTHONPATH=/tmp/bench-before \\",
        "    /work/main/.venv/bin/python /work/main/benchmarks/profile_before.py",
        "git -C /work/main worktree remove --force /tmp/bench-before",
        "```",
        "",
        f"Load average (1/5/15 min) {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the "
        f"start, {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} at the end "
        f"({os.cpu_count()} CPUs); {args.runs} timed executions of 1 + {args.actions} actions "
        f"after one warm-up, {took:.1f} s. Same driver as the after table's, in the old API: "
        "`workers.runner.run_attempt` for each dispatched task, then `workers.tasks.advance` "
        "for its completion callback.",
        "",
        *_timers.profile_table(timers),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
