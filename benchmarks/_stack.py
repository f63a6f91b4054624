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
import subprocess
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

import boto3
import psutil
from botocore.config import Config

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
    raw_worker: Service | None = None  # the overhead benchmark's (raw_celery, -c 1)
    raw_workers: dict[str, Service] = field(default_factory=dict)  # every raw worker, by name
    api_url: str = ""
    providers_concurrency: int = 0  # of the running ``--pool all`` worker; 0: not running

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

    def codepipeline(self, max_attempts: int = 3, pool: int = 10) -> Any:
        """boto3's ``codepipeline`` client on the API; ``max_attempts=1``: no retries, every
        error surfaces; ``pool``: connections kept, one per concurrent caller thread."""
        return boto3.client(
            "codepipeline",
            endpoint_url=self.api_url,
            region_name="us-east-1",
            aws_access_key_id="conveyor",
            aws_secret_access_key="conveyor",
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},
                read_timeout=120,
                max_pool_connections=pool,
            ),
        )

    # -- processes -------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        svc = devstack.start_process(
            name, argv, env, self.workdir / "logs" / f"{name}.log", cwd=REPO_ROOT
        )
        self.services.append(svc)
        return svc

    def start_conveyor(self, providers_concurrency: int = 1) -> None:
        """engine pool (c=1) + ``all`` pool (c=``providers_concurrency``) + beat + api, as
        real ``conveyor`` processes."""
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
            "providers",
            "worker",
            "--pool",
            "all",
            "--concurrency",
            str(providers_concurrency),
            "--hostname",
            "all@%h",
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
        self.providers_concurrency = providers_concurrency

    def stop_conveyor(self) -> None:
        """Stop Conveyor's processes (to start them again with another concurrency)."""
        procs = list(self.conveyor.values())
        devstack.stop_all(reversed(procs))
        self.services = [s for s in self.services if s not in procs]
        self.conveyor.clear()
        self.providers_concurrency = 0

    def stop_raw_worker(self, name: str) -> None:
        svc = self.raw_workers.pop(name, None)
        if svc is None:
            return
        devstack.stop_all([svc])
        self.services = [s for s in self.services if s is not svc]
        if self.raw_worker is svc:
            self.raw_worker = None

    def start_raw_worker(
        self,
        module: str = "benchmarks.raw_celery",
        queue: str = RAW_QUEUE,
        concurrency: int = 1,
        name: str = "raw-celery",
    ) -> Service:
        """``celery -A <module> worker -c <concurrency> -Q <queue>``: a plain-Celery side
        (by default the overhead benchmark's: raw_celery, -c 1, queue ``bench``)."""
        argv = [
            sys.executable, "-m", "celery", "-A", module, "worker",
            "-c", str(concurrency), "-Q", queue, "--loglevel", "INFO", "-n", f"{name}@%h",
        ]  # fmt: skip
        svc = self._spawn(name, argv, self.env)
        _wait_log(svc, CELERY_READY, 90)
        self.raw_workers[name] = svc
        if name == "raw-celery":
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
    workdir.chmod(0o711)  # builds run as the build user, who must pass through to scratch/
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
            # Each run starts the executions it times; none on CreatePipeline.
            "CONVEYOR_START_ON_CREATE": "false",
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


def code_state() -> str:
    """The code measured: HEAD and how many files outside benchmarks/ differ from it."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout if out.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:] and not line[3:].startswith("benchmarks/")
    ]
    if not changed:
        return f"git {head}, clean outside benchmarks/"
    return f"git {head} + {len(changed)} changed or new files outside benchmarks/ (working tree)"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("celery", "kombu", "redis", "minio", "boto3", "moto"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out
