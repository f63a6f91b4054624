"""Redis restarted in the middle of a build: every process rides it out.

Redis is both the state store (db 0) and the Celery broker (db 1). Here it is a
``redis-server`` of the test's own, durable (``--appendonly yes --appendfsync always``),
stopped by SIGTERM (a clean shutdown) or SIGKILL (a crash) while a build runs, and started
again on the same port with the same directory, so it reloads its AOF. The build must
finish and the execution succeed; the engine and provider workers, beat and the API must
still be running and serving: workers answer a ping and run a second execution, the API
answers ``/health`` and GetPipelineState.

Before workers/consumer.py, the worker holding the build died on the first restart with
``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``
(kombu restoring the unacked task through a connection it had already torn down), and
exited 0 (workers/cli.py dropped Celery's exit code).
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery

from tests.helpers import log_contains, wait_for
from tests.stack import Stack, action, put_source, s3_source_stage, start_stack, unique
from workers import devstack
from workers.devstack import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SECONDS = 8
# kombu's Redis transport keeps each delivered, not yet acknowledged message here (in the
# broker database) until it is acknowledged; what is left is redelivered after the
# visibility timeout.
UNACKED_KEY = "unacked"


# --- A durable Redis of the test's own ------------------------------------------------


def _wait_redis(service: Service, timeout: float = 15.0) -> None:
    def up() -> bool:
        if not service.running():
            code = service.process.returncode if service.process else None
            raise AssertionError(f"{service.name} exited ({code}):\n{service.tail()}")
        return devstack.listens(service) and devstack.redis_answers(service.url)

    wait_for(up, timeout, message=lambda: f"{service.name} never answered:\n{service.tail()}")


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[Service]:
    """``redis-server`` with AOF on and fsync on every write, on a free port."""
    binary = devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL)
    port = devstack.free_port()
    workdir = tmp_path / "aof-redis"
    workdir.mkdir()
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--dir", str(workdir),
    ]  # fmt: skip
    service = devstack.start_process(f"redis-aof-{port}", argv, None, workdir / "redis.log")
    service.url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_redis(service)
        yield service
    finally:
        service.stop()


def restart_redis(service: Service, sig: signal.Signals) -> None:
    """Stop Redis with ``sig`` and start it again: same port, same dir, so the same AOF."""
    assert service.process is not None
    service.process.send_signal(sig)
    service.process.wait(15)
    service.restart()
    _wait_redis(service)


# --- The stack and the pipeline ---------------------------------------------------------


def _buildspec(seconds: int, marks: Path | None = None) -> str:
    started = [f"      - touch {marks}/started-$$\n"] if marks else []
    return (
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        + "".join(started)
        + f"      - sleep {seconds}\n"
        + "      - mkdir -p out && echo built > out/result.txt\n"
        + "artifacts:\n  base-directory: out\n  files:\n    - result.txt\n"
    )


def _pipeline(name: str, src: str) -> dict[str, Any]:
    build = action(
        "Compile",
        "Build",
        "CodeBuild",
        config={"ProjectName": "c"},
        ins=("SourceOutput",),
        outs=("Bin",),
    )
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [s3_source_stage(src), {"name": "Build", "actions": [build]}],
    }


def _final_status(stack: Stack, name: str, execution_id: str, timeout: float) -> str:
    """Wait for the execution to end; API errors right after the restart mean "not yet"."""
    cp = stack.codepipeline()

    def status() -> str | None:
        got = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)
        st: str = got["pipelineExecution"]["status"]
        return st if st in ("Succeeded", "Failed", "Stopped") else None

    return wait_for(
        status,
        timeout,
        interval=0.3,
        ignore=(ClientError, BotoCoreError),
        message=lambda: (
            f"execution {execution_id} did not end; "
            + "; ".join(f"{n}: {s.tail(5)}" for n, s in stack.processes.items())
        ),
    )


def _pongs(broker_url: str, nodes: set[str], timeout: float = 20.0) -> set[str]:
    """The Celery node names (``<name>@<host>``) that answer a ping over the broker."""
    app = Celery("conveyor-test-ping", broker=broker_url, set_as_current=False)
    try:

        def answered() -> set[str] | None:
            names = {node for reply in app.control.ping(timeout=1.0) for node in reply}
            prefixes = {n.split("@", 1)[0] for n in names}
            return names if nodes <= prefixes else None

        return wait_for(answered, timeout, message=f"not every worker of {nodes} answered a ping")
    finally:
        app.close()


def _health(url: str) -> int:
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        status: int = response.status
        return status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_redis_restart_mid_build_loses_nothing_and_stops_no_process(
    sig: signal.Signals,
    aof_redis: Service,
    spawn: Any,
    settings_env: dict[str, str],
    build_writable: Path,
) -> None:
    this_redis = {
        "CONVEYOR_REDIS_URL": aof_redis.url,
        "CONVEYOR_BROKER_URL": devstack.with_redis_db(aof_redis.url, 1),
    }
    env = {**settings_env, **this_redis}

    def spawn_here(
        *args: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> Service:
        service: Service = spawn(*args, name=name, env={**this_redis, **(env or {})})
        return service

    # engine pool, `--pool all -c 2` (source and build), beat, API; all on this Redis.
    stack = start_stack(spawn_here, env)
    cp = stack.codepipeline()
    marks = build_writable
    name, src = unique("redis-restart"), unique("src")
    put_source(stack.s3(), src, {"buildspec.yml": _buildspec(BUILD_SECONDS, marks)})
    cp.create_pipeline(pipeline=_pipeline(name, src))
    first = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: any(marks.iterdir()), 30, message="the build never started")

    restart_redis(aof_redis, sig)  # the build has about BUILD_SECONDS still to go

    assert _final_status(stack, name, first, 45) == "Succeeded"
    dead = {
        n: s.process.returncode if s.process else None
        for n, s in stack.processes.items()
        if not s.running()
    }
    assert not dead, f"processes exited: {dead}"
    for n, s in stack.processes.items():
        assert s.log_path is not None
        assert not log_contains(s.log_path, "Unrecoverable error"), f"{n}:\n{s.tail()}"

    # Everyone still serves: the API, and both worker pools (a ping, then real work).
    assert _health(stack.api_url) == 200
    stages = {s["stageName"]: s for s in cp.get_pipeline_state(name=name)["stageStates"]}
    assert stages["Build"]["latestExecution"]["pipelineExecutionId"] == first
    assert stages["Build"]["latestExecution"]["status"] == "Succeeded"
    _pongs(env["CONVEYOR_BROKER_URL"], {"engine", "providers"})
    put_source(stack.s3(), src, {"buildspec.yml": _buildspec(0)})
    second = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert _final_status(stack, name, second, 30) == "Succeeded"

    # The task that ran across the restart was acknowledged over the new connection, so
    # the broker will not hand it out again hours later.
    broker = redis.Redis.from_url(env["CONVEYOR_BROKER_URL"])
    try:
        wait_for(
            lambda: broker.hlen(UNACKED_KEY) == 0,
            10,
            message=lambda: f"unacknowledged: {broker.hkeys(UNACKED_KEY)}",
        )
    finally:
        broker.close()
    assert all(s.running() for s in stack.processes.values())


# Replaces the worker's consumer with one that fails as it starts: Celery then stops the
# worker with "Unrecoverable error" and exit code 1, which `conveyor worker` must keep.
FAILING_WORKER = """
import sys
import workers.consumer as consumer


class FailingConsumer(consumer.ReconnectingConsumer):
    def start(self):
        raise RuntimeError("injected unrecoverable error")


consumer.ReconnectingConsumer = FailingConsumer
from workers.cli import main

sys.argv = ["conveyor", *sys.argv[1:]]
main()
"""


def test_a_worker_stopped_by_an_unrecoverable_error_exits_non_zero(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    argv = [sys.executable, "-c", FAILING_WORKER, "worker", "--pool", "engine", "-c", "1"]
    worker = devstack.start_process(
        "failing-worker",
        argv,
        {**_inherited_env(settings_env), **settings_env, "PYTHONUNBUFFERED": "1"},
        tmp_path / "failing-worker.log",
        cwd=REPO_ROOT,
    )
    try:
        assert worker.process is not None
        code = worker.process.wait(60)
    finally:
        worker.stop()
    assert worker.log_path is not None
    assert log_contains(worker.log_path, "Unrecoverable error"), worker.tail()
    assert code == 1, worker.tail()


def _inherited_env(keep: dict[str, str]) -> dict[str, str]:
    """This process's environment minus the developer's own ``CONVEYOR_*`` settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("CONVEYOR_") and not k.startswith("CONVEYOR_TEST_") and k not in keep)
    }
