"""The whole local stack for ``conveyor dev`` and ``make demo``: Redis, an S3 endpoint, the
engine and provider pools, beat, the HTTP API and (optionally) Flower."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers import devstack
from workers.devstack import Service

# `conveyor dev` and `make demo` are for one person on one machine: the API runs without
# authentication unless CONVEYOR_AUTH_MODE says otherwise, and says so loudly.
ANONYMOUS_BANNER = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  AUTHENTICATION IS OFF: the API runs with CONVEYOR_AUTH_MODE=anonymous.              !!
!!  Anyone who can reach it can create pipelines and run commands on these workers.     !!
!!  For local development only; it listens on 127.0.0.1. Deployments sign requests      !!
!!  with SigV4 (deploy/README.md: `conveyor keys create`).                              !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


@dataclass
class DevStack:
    workdir: Path
    api_url: str
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    flower_url: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.env.get("CONVEYOR_AUTH_MODE") == "anonymous"

    def stop(self) -> None:
        devstack.stop_all(reversed(self.services))


def _wait_log(service: Service, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            service.log_path
            and service.log_path.exists()
            and text in service.log_path.read_text(errors="replace")
        ):
            return
        if not service.running():
            break
        time.sleep(0.2)
    tail = service.tail(30) if service.log_path else ""
    raise RuntimeError(f"{service.name} did not start (see {service.log_path}):\n{tail}")


def run_dev_stack(
    workdir: Path,
    *,
    concurrency: int = 2,
    with_flower: bool = True,
    api_port: int | None = None,
    block: bool = False,
    echo: bool = True,
) -> DevStack:
    """Start everything; with ``block`` wait for Ctrl-C (or SIGTERM) and stop it all cleanly."""
    workdir.mkdir(parents=True, exist_ok=True)
    say = print if echo else (lambda *a, **k: None)
    redis = devstack.resolve_redis(workdir)
    try:
        s3 = devstack.resolve_s3(workdir)
    except BaseException:
        redis.stop()  # it may be a redis-server we just started, in its own session
        raise
    port = api_port or devstack.free_port()
    env = {
        **os.environ,
        **devstack.service_env(redis, s3),
        "CONVEYOR_API_PORT": str(port),
        "CONVEYOR_AUTH_MODE": os.environ.get("CONVEYOR_AUTH_MODE") or "anonymous",
        "PYTHONUNBUFFERED": "1",
    }
    stack = DevStack(workdir, f"http://127.0.0.1:{port}", env, [redis, s3])
    if stack.anonymous:
        say(ANONYMOUS_BANNER)
    say(f"redis      {redis.url}  ({redis.origin})")
    say(f"s3         {s3.url}  ({s3.origin})")

    def conveyor(name: str, *args: str) -> Service:
        svc = devstack.start_process(
            name, [sys.executable, "-m", "workers.cli", *args], env, workdir / f"{name}.log"
        )
        stack.services.append(svc)
        return svc

    try:
        engine = conveyor(
            "engine", "worker", "--pool", "engine", "--concurrency", "1", "--hostname", "engine@%h"
        )
        providers = conveyor(
            "providers",
            "worker",
            "--pool",
            "all",
            "--concurrency",
            str(concurrency),
            "--hostname",
            "providers@%h",
        )
        conveyor("beat", "beat")
        api = conveyor("api", "api", "--port", str(port))
        for svc in (engine, providers):
            _wait_log(svc, "ready.", 60)
        _wait_log(api, "Uvicorn running", 30)
        if with_flower:
            fport = devstack.free_port()
            conveyor("flower", "flower", "--port", str(fport))
            stack.flower_url = f"http://127.0.0.1:{fport}"
    except BaseException:
        stack.stop()
        raise
    say(f"api        {stack.api_url}   (boto3 / aws --endpoint-url)")
    if stack.flower_url:
        say(f"flower     {stack.flower_url}")
    say(f"logs       {workdir}")
    if stack.anonymous:
        say("auth       OFF (anonymous): `aws --no-sign-request` or any keys; local use only")
    if block:
        say("Conveyor is running; press Ctrl-C to stop.")
        stopping = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopping:
            time.sleep(0.3)
        say("stopping…")
        stack.stop()
    return stack
