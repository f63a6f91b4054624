"""A hostile buildspec, run on real worker processes, gets nothing and leaves nothing.

The stack runs against a Redis of its own that requires a password (given to every process
through ``CONVEYOR_REDIS_PASSWORD_FILE``), with secret marker values in the worker's
environment. The build tries what a hostile build would: read its ancestors' environments,
talk to Redis, kill its worker, leave ``setsid`` and double-forked children behind, and
print 500 MB. The test then checks the worker, the host's process table, the stored log,
the output artifact and the scratch directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from providers.sandbox import process_alive
from tests.conftest import Spawn
from tests.helpers import log_size, wait_for, wait_worker_ready
from tests.stack import Stack, build_and_deploy, put_source, unique, wait_status
from workers import devstack
from workers.devstack import Service

CAP = 1024 * 1024  # CONVEYOR_BUILD_LOG_MAX_BYTES for these workers
PRINTED = 500 * 1024 * 1024
NOTICE_ROOM = 512  # the truncation notice, and nothing else, may come on top of the cap


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """A redis-server requiring a password, set in its config file (never on a command line,
    which every user on the host can read), and the password file for Conveyor."""
    work = tmp_path / "auth-redis"
    work.mkdir()
    password = f"redis-pw-{uuid.uuid4().hex}"
    port = devstack.free_port()
    conf = work / "redis.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsave ''\nappendonly no\ndir {work}\nrequirepass {password}\n"
    )
    conf.chmod(0o600)
    secret = work / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    binary = devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL)
    service = devstack.start_process("redis-auth", [binary, str(conf)], None, work / "redis.log")
    client = redis.Redis(port=port, password=password, socket_connect_timeout=1)
    wait_for(lambda: _pings(client), 15, message="the password-protected Redis never answered")
    client.close()
    service.url = f"redis://127.0.0.1:{port}/0"
    yield service, secret
    service.stop()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _start(spawn: Spawn, env: dict[str, str], worker_env: dict[str, str]) -> Stack:
    """Engine, one build-capable worker (concurrency 1), beat and the API, all on ``env``."""
    port = devstack.free_port()
    stack = Stack(f"http://127.0.0.1:{port}", env["CONVEYOR_S3_ENDPOINT_URL"], env)
    for name, pool in (("engine", "engine"), ("w", "all")):
        stack.processes[name] = spawn(
            "worker",
            *("--pool", pool, "--concurrency", "1", "--hostname", f"{name}@%h"),
            name=name,
            env={**env, **(worker_env if name == "w" else {})},
        )
    stack.processes["beat"] = spawn("beat", name="beat", env=env)
    stack.processes["api"] = spawn("api", "--port", str(port), name="api", env=env)
    for name in ("engine", "w"):
        wait_worker_ready(stack.processes[name])
    wait_for(lambda: devstack.http_answers(stack.api_url + "/health"), 30, message="no API")
    return stack


@pytest.fixture
def secrets() -> dict[str, str]:
    return {
        "CONVEYOR_S3_SECRET_ACCESS_KEY": f"s3-secret-{uuid.uuid4().hex}",
        "AWS_SECRET_ACCESS_KEY": f"aws-secret-{uuid.uuid4().hex}",
        "ISOLATION_TEST_TOKEN": f"token-{uuid.uuid4().hex}",
    }


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The workers' scratch root. Not under pytest's temp directory: pytest keeps that 0700
    (and resets it at every session start), so no other user could reach a build in it,
    while a real scratch root (/var/lib/conveyor/work) sits under searchable directories."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-iso-scratch-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(
    spawn: Spawn,
    settings_env: dict[str, str],
    auth_redis: tuple[Service, Path],
    secrets: dict[str, str],
    scratch: Path,
) -> Stack:
    service, password_file = auth_redis
    env = {
        **settings_env,
        # moto's S3 takes any key, so the S3 secret can be a marker the build must not see.
        "CONVEYOR_S3_SECRET_ACCESS_KEY": secrets["CONVEYOR_S3_SECRET_ACCESS_KEY"],
        "CONVEYOR_REDIS_URL": service.url,
        "CONVEYOR_BROKER_URL": devstack.with_redis_db(service.url, 1),
        "CONVEYOR_REDIS_PASSWORD_FILE": str(password_file),
        "CONVEYOR_BUILD_LOG_MAX_BYTES": str(CAP),
        "CONVEYOR_WORKDIR": str(scratch),
        "CONVEYOR_MINUTE_SECONDS": "1",  # timeoutInMinutes 5 (the least allowed): 5 seconds
    }
    worker_env = {k: v for k, v in secrets.items() if not k.startswith("CONVEYOR_")}
    return _start(spawn, env, worker_env)


def _hostile_buildspec(marker: str, redis_port: int) -> str:
    return f"""version: 0.2
phases:
  build:
    commands:
      - |
        p=$PPID
        for i in 1 2 3 4 5 6 7 8; do
          echo "environ of $p ($(tr '\\0' ' ' < /proc/$p/cmdline | cut -c1-80)):"
          tr '\\0' '\\n' < /proc/$p/environ 2>&1 | head -c 65536
          p=$(cut -d')' -f2 /proc/$p/stat | cut -d' ' -f3)
          [ -n "$p" ] && [ "$p" != 0 ] || break
        done
        for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$f"; done 2>/dev/null | sort -u
        true
      - |
        exec 3<>/dev/tcp/127.0.0.1/{redis_port} && printf 'CONFIG GET requirepass\\r\\n' >&3
        read -r -t 5 reply <&3; echo "redis replied: $reply"
        redis-cli -p {redis_port} keys '*' 2>&1 | head -c 300 || true
      - |
        p=$PPID
        while [ -n "$p" ] && [ "$p" != 1 ] && [ "$p" != 0 ]; do
          kill -9 "$p" && echo "KILL""ED $p"
          p=$(cut -d')' -f2 /proc/$p/stat | cut -d' ' -f3)
        done
        pkill -9 -f celery; pkill -9 -f workers.cli; pkill -9 -f redis-server
        echo kill attempts done
      - setsid bash -c 'sleep 600; true {marker}-setsid' > /dev/null 2>&1 < /dev/null &
      - (bash -c 'sleep 600; true {marker}-double-fork' > /dev/null 2>&1 < /dev/null &) &
      - sleep 0.5
      - mkdir -p out && env > out/env.txt && cat /proc/$PPID/environ > out/parent.txt 2>&1; true
      - head -c {PRINTED} /dev/zero | tr '\\0' x
      - echo; echo {marker}-tail
artifacts:
  base-directory: out
  files:
    - '**/*'
"""


def _pipeline(stack: Stack, buildspec: str, timeout: int | None = None) -> tuple[Any, str, str]:
    s3, cp = stack.s3(), stack.codepipeline()
    name, src, artifacts, target = unique("iso"), unique("src"), unique("art"), unique("dst")
    put_source(s3, src, {"buildspec.yml": buildspec})
    s3.create_bucket(Bucket=target)
    definition = build_and_deploy(name, src, artifacts, target, project="isolation")
    if timeout is not None:
        definition["stages"][1]["actions"][0]["timeoutInMinutes"] = timeout
    cp.create_pipeline(pipeline=definition)
    return cp, name, artifacts


def _marked_processes(marker: str) -> list[str]:
    """Command lines, anywhere on the host, that carry ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text:
            found.append(f"{cmdline.parent.name}: {text}")
    return found


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _objects(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _stored_logs(stack: Stack, artifacts: str, name: str) -> str:
    s3 = stack.s3()
    keys = _objects(s3, artifacts, f"{name[:20]}/logs/")
    return "".join(
        s3.get_object(Bucket=artifacts, Key=k)["Body"].read().decode(errors="replace") for k in keys
    )


class _DiskWatch:
    """The most bytes the files under ``root`` held at once, sampled every 20 ms."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            for dirpath, _, files in os.walk(self.root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            self.peak = max(self.peak, total)


def _scratch_leftovers(root: Path) -> list[str]:
    """Whatever attempts left in the scratch root beyond each process's own empty layout."""
    left = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if len(rel) == 1 and rel[0].startswith(".conveyor-"):
            continue
        if len(rel) == 2 and rel[1] == ".trash":
            continue
        left.append("/".join(rel))
    return left


def test_a_hostile_build_reads_nothing_kills_nothing_and_leaves_nothing(
    stack: Stack,
    auth_redis: tuple[Service, Path],
    secrets: dict[str, str],
    scratch: Path,
) -> None:
    worker = stack.processes["w"]
    assert worker.process is not None
    main_pid = worker.process.pid
    pool_before = _children(main_pid)
    marker = f"iso-{uuid.uuid4().hex[:10]}"
    redis_port = int(auth_redis[0].url.rsplit(":", 1)[1].split("/")[0])
    cp, name, artifacts = _pipeline(stack, _hostile_buildspec(marker, redis_port))
    disk = _DiskWatch(scratch)
    started = time.monotonic()
    with disk:
        eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
        status = wait_status(cp, name, eid, {"Succeeded", "Failed", "Stopped"}, 180)
    elapsed = time.monotonic() - started
    assert status == "Succeeded", _stored_logs(stack, artifacts, name)[-3000:]

    # The worker is the same process, with the same pool process, and still works.
    assert worker.running() and worker.process.pid == main_pid
    assert _children(main_pid) == pool_before
    again = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    assert wait_status(cp, name, again, {"Succeeded", "Failed", "Stopped"}, 180) == "Succeeded"

    # Nothing the build started survives it.
    assert _marked_processes(marker) == []

    s3 = stack.s3()
    [log_key, *_] = [k for k in _objects(s3, artifacts, f"{name[:20]}/logs/") if "build-log" in k]
    log = s3.get_object(Bucket=artifacts, Key=log_key)["Body"].read()
    assert len(log) <= CAP + NOTICE_ROOM, len(log)
    text = log.decode(errors="replace")
    assert "Log truncated" in text and f"{marker}-tail" in text
    dropped = int(text.split("Log truncated: ", 1)[1].split()[0])
    assert dropped >= PRINTED - CAP  # the 500 MB really went through, and was left out
    assert "Permission denied" in text  # /proc/<worker>/environ
    assert "redis replied: -NOAUTH" in text, text[:8000]  # Redis without the password
    assert "KILLED" not in text and "Operation not permitted" in text
    password = auth_redis[1].read_text().strip()
    [bundle_key] = _objects(s3, artifacts, f"{name[:20]}/BuildOutput/")[:1]
    bundle = s3.get_object(Bucket=artifacts, Key=bundle_key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        outputs = b"".join(zf.read(n) for n in zf.namelist()).decode(errors="replace")
    assert "HOME=" in outputs  # the build's own env did reach the artifact
    for value in [*secrets.values(), password]:
        assert value not in text, "a secret reached the stored log"
        assert value not in outputs, "a secret reached the output artifact"

    # Every attempt's work directory is gone (removed in the background, so wait a little).
    wait_for(
        lambda: not _scratch_leftovers(scratch),
        30,
        message=lambda: str(_scratch_leftovers(scratch)),
    )
    # Temp disk stayed bounded: the build log and its mirror (each at most the cap), the
    # sources and the zips; never anything near the 500 MB printed.
    assert disk.peak <= 4 * CAP, disk.peak
    print(
        f"hostile build (500 MB printed) took {elapsed:.1f} s end to end; "
        f"scratch peaked at {disk.peak / 1024:.0f} KiB; stored log {len(log)} bytes"
    )


TIMEOUT_BUILDSPEC = """version: 0.2
phases:
  build:
    commands:
      - setsid bash -c 'sleep 600; true {marker}-setsid' > /dev/null 2>&1 < /dev/null &
      - (bash -c 'sleep 600; true {marker}-double-fork' > /dev/null 2>&1 < /dev/null &) &
      - bash -c 'sleep 600; true {marker}-foreground'
"""


def test_a_build_that_times_out_is_killed_with_all_its_processes(stack: Stack) -> None:
    marker = f"iso-{uuid.uuid4().hex[:10]}"
    cp, name, _ = _pipeline(stack, TIMEOUT_BUILDSPEC.format(marker=marker), timeout=5)
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: len(_marked_processes(marker)) >= 3, 60, message="the build never started")
    assert wait_status(cp, name, eid, {"Succeeded", "Failed", "Stopped"}, 60) == "Failed"
    wait_for(
        lambda: not _marked_processes(marker),
        10,
        message=lambda: f"survivors: {_marked_processes(marker)}",
    )
    # And the worker goes on working.
    state = cp.get_pipeline_state(name=name)
    build = state["stageStates"][1]["actionStates"][0]["latestExecution"]
    assert build["status"] == "Failed"


def test_the_next_worker_start_kills_a_dead_workers_build_and_removes_its_files(
    stack: Stack, scratch: Path
) -> None:
    marker = f"iso-{uuid.uuid4().hex[:10]}"
    cp, name, _ = _pipeline(stack, TIMEOUT_BUILDSPEC.format(marker=marker), timeout=5)
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(lambda: len(_marked_processes(marker)) >= 3, 60, message="the build never started")
    assert _scratch_leftovers(scratch)
    worker = stack.processes["w"]
    worker.kill()  # SIGKILL to its process group: the build, in sessions of its own, lives on
    orphans = {int(line.split(":", 1)[0]) for line in _marked_processes(marker)}
    assert len(orphans) >= 3
    dead_dirs = list(scratch.glob(".conveyor-*"))
    since = log_size(worker)
    worker.restart(timeout=30)
    wait_worker_ready(worker, since=since)
    # Killed by then (a zombie waiting for the host's init to reap it counts as dead).
    assert not [pid for pid in orphans if process_alive(pid)]
    assert not [d for d in dead_dirs if d.exists() and not _alive(d.name)]
    # The attempt is taken up again after its lease and then times out: it, too, is killed.
    assert wait_status(cp, name, eid, {"Succeeded", "Failed", "Stopped"}, 60) == "Failed"
    wait_for(
        lambda: not _marked_processes(marker),
        10,
        message=lambda: f"survivors: {_marked_processes(marker)}",
    )


def _alive(name: str) -> bool:
    pid = int(name.removeprefix(".conveyor-").split("-")[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
