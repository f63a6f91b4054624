"""Services and processes for the benchmarks: one Redis, one S3 endpoint, Conveyor's
processes and the raw Celery worker, all in a temp dir and all stopped on exit.

Both sides of every comparison run against the same ``redis-server`` (Conveyor's broker
database is the raw worker's broker too) and the same S3 endpoint, on the same machine, in
the same run. The S3 endpoint is moto's server, started explicitly (not ``resolve_s3``):
a MinIO found on PATH or in Docker would make numbers from two machines incomparable.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3  # type: ignore[import-untyped]
import psutil
from botocore.config import Config  # type: ignore[import-untyped]

from workers import devstack
from workers.devstack import Service

REPO_ROOT = Path(__file__).resolve().parents[1]
CELERY_READY = "ready."
RAW_QUEUE = "bench"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _wait_log(service: Service, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = service.log_path
        if path is not None and path.exists() and text in path.read_text(errors="replace"):
            return
        if not service.running():
            break
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not start (log {service.log_path}):\n{service.tail()}")


@dataclass
class Bench:
    """The benchmark's world. Use :func:`bench_stack`; everything started is stopped."""

    workdir: Path
    redis: Service
    s3: Service
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    conveyor: dict[str, Service] = field(default_factory=dict)
    raw_worker: Service | None = None
    api_url: str = ""

    # -- clients -------------------------------------------------------------------

    def s3_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3.url,
            region_name=self.s3.region,
            aws_access_key_id=self.s3.access_key,
            aws_secret_access_key=self.s3.secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def codepipeline(self) -> Any:
        return boto3.client(
            "codepipeline",
            endpoint_url=self.api_url,
            region_name="us-east-1",
            aws_access_key_id="conveyor",
            aws_secret_access_key="conveyor",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=120),
        )

    # -- processes -------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        svc = devstack.start_process(
            name, argv, env, self.workdir / "logs" / f"{name}.log", cwd=REPO_ROOT
        )
        self.services.append(svc)
        return svc

    def start_conveyor(self) -> None:
        """engine pool (c=1) + ``all`` pool (c=1) + beat + api, as real ``conveyor`` processes."""
        port = devstack.free_port()
        self.api_url = f"http://127.0.0.1:{port}"

        def conveyor(name: str, *args: str) -> Service:
            svc = self._spawn(name, [sys.executable, "-m", "workers.cli", *args], self.env)
            self.conveyor[name] = svc
            return svc

        engine = conveyor(
            "engine", "worker", "--pool", "engine", "--concurrency", "1", "--hostname", "engine@%h"
        )
        providers = conveyor(
            "providers", "worker", "--pool", "all", "--concurrency", "1", "--hostname", "all@%h"
        )
        conveyor("beat", "beat")
        api = conveyor("api", "api", "--port", str(port))
        for svc in (engine, providers):
            _wait_log(svc, CELERY_READY, 90)
        _wait_log(api, "Uvicorn running", 60)
        deadline = time.monotonic() + 30
        while not devstack.http_answers(self.api_url + "/health"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API at {self.api_url} does not answer:\n{api.tail()}")
            time.sleep(0.1)

    def start_raw_worker(self) -> Service:
        """``celery -A benchmarks.raw_celery worker -c 1 -Q bench``: the plain-Celery side."""
        argv = [
            sys.executable, "-m", "celery", "-A", "benchmarks.raw_celery", "worker",
            "-c", "1", "-Q", RAW_QUEUE, "--loglevel", "INFO", "-n", "raw@%h",
        ]  # fmt: skip
        svc = self._spawn("raw-celery", argv, self.env)
        _wait_log(svc, CELERY_READY, 90)
        self.raw_worker = svc
        return svc

    def stop(self) -> None:
        devstack.stop_all(reversed(self.services))
        self.services.clear()


class _Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C so every process gets stopped."""


@contextmanager
def bench_stack(keep: bool = False) -> Iterator[Bench]:
    """Redis + moto S3 in a temp dir; Conveyor and raw workers are added by the callers."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    started: list[Service] = []
    bench: Bench | None = None
    try:
        redis_svc = devstack.start_redis(
            workdir=workdir / "redis",
            binary=devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL),
        )
        started.append(redis_svc)
        s3_svc = devstack.start_s3(workdir=workdir / "s3")
        started.append(s3_svc)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
            **devstack.service_env(redis_svc, s3_svc),
            "CONVEYOR_WORKDIR": str(workdir / "scratch"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        (workdir / "scratch").mkdir()
        bench = Bench(workdir, redis_svc, s3_svc, env, services=list(started))
        log(f"workdir {workdir}; redis {redis_svc.url}; s3 {s3_svc.url} (moto)")
        yield bench
    finally:
        if bench is not None:
            bench.stop()
        else:
            devstack.stop_all(reversed(started))
        signal.signal(signal.SIGTERM, previous)
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# -- memory ---------------------------------------------------------------------------


@dataclass
class ProcPeak:
    root: str
    role: str
    pid: int
    peak_rss: int = 0
    count: int = 1  # for grouped roles (bash): how many processes were seen
    at: float = 0.0  # epoch seconds of the peak sample


class RssSampler(threading.Thread):
    """Every ``interval`` seconds, the RSS of every process in each service's tree.

    Peaks are kept per Python process (a Celery main process, its prefork children); the
    short-lived commands a build runs (``bash``, ``cp``...) are grouped per tree: the
    maximum over all of them, and how many were seen.
    """

    def __init__(self, roots: dict[str, Service], interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.roots = roots
        self.interval = interval
        self.peaks: dict[tuple[str, str, int], ProcPeak] = {}
        self._commands_seen: dict[str, set[int]] = {}
        self._command_names: dict[str, set[str]] = {}
        self._halt = threading.Event()
        self.samples = 0

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        self.samples += 1
        for name, svc in self.roots.items():
            if svc.pid is None:
                continue
            try:
                leader = psutil.Process(svc.pid)
                procs = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    pname = proc.name()
                except psutil.Error:
                    continue
                if proc.pid == svc.pid:
                    role, key_pid = "main process", proc.pid
                elif pname.startswith("python"):
                    role, key_pid = "prefork child", proc.pid
                else:
                    self._commands_seen.setdefault(name, set()).add(proc.pid)
                    self._command_names.setdefault(name, set()).add(pname)
                    names = ", ".join(sorted(self._command_names[name]))
                    role, key_pid = f"build commands ({names}; the largest)", 0
                    for stale in [k for k in self.peaks if k[0] == name and k[2] == 0]:
                        if stale[1] != role:
                            self.peaks[(name, role, 0)] = self.peaks.pop(stale)
                            self.peaks[(name, role, 0)].role = role
                key = (name, role, key_pid)
                peak = self.peaks.setdefault(key, ProcPeak(name, role, proc.pid))
                if rss > peak.peak_rss:
                    peak.peak_rss, peak.at = rss, time.time()
                if key_pid == 0:
                    peak.count = len(self._commands_seen[name])

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# -- machine --------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    mem = psutil.virtual_memory().total / 1024**3
    return {
        "nproc": str(cpus),
        "cpu": model,
        "memory": f"{mem:.1f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("celery", "kombu", "redis", "minio", "boto3", "moto"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out
