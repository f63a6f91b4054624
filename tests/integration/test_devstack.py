"""The dev/test service launcher, against real redis-server and moto processes."""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
import redis

from engine.settings import Settings
from tests.helpers import WaitTimeout, log_size, wait_for, wait_for_log
from workers import devstack
from workers.devstack import Service, ServiceUnavailable


def _s3_client(service: Service) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=service.url,
        aws_access_key_id=service.access_key,
        aws_secret_access_key=service.secret_key,
        region_name=service.region,
    )


def _round_trip(service: Service) -> None:
    client = _s3_client(service)
    bucket = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"payload")
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"payload"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a/b.txt"]


def test_free_port_is_bindable() -> None:
    port = devstack.free_port()
    assert 1024 < port < 65536


def test_redis_starts_on_a_free_port_and_answers(tmp_path: Path) -> None:
    service = devstack.start_redis(workdir=tmp_path)
    try:
        assert service.url.startswith("redis://127.0.0.1:")
        assert not service.url.startswith("redis://127.0.0.1:6379/")
        client = redis.Redis.from_url(service.url)
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        service.stop()
    assert not service.running()
    assert not devstack.redis_answers(service.url)


def test_redis_restart_keeps_the_port(tmp_path: Path) -> None:
    service = devstack.start_redis(workdir=tmp_path)
    try:
        url, pid = service.url, service.pid
        service.kill()
        assert not devstack.redis_answers(url)
        service.restart()
        assert service.url == url
        assert service.pid != pid
        assert devstack.redis_answers(url)
    finally:
        service.stop()


def test_redis_on_a_taken_port_fails_with_its_log(tmp_path: Path) -> None:
    first = devstack.start_redis(workdir=tmp_path / "a")
    try:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(ServiceUnavailable, match="exited with code"):
            devstack.start_redis(port, workdir=tmp_path / "b", timeout=10)
    finally:
        first.stop()


def test_moto_s3_starts_and_round_trips(tmp_path: Path) -> None:
    service = devstack.start_s3(workdir=tmp_path)
    try:
        assert devstack.http_answers(service.url)
        _round_trip(service)
    finally:
        service.stop()
    assert not service.running()


def test_session_services_work(redis_service: Service, s3_service: Service) -> None:
    assert devstack.redis_answers(redis_service.url)
    _round_trip(s3_service)


def test_resolve_redis_honours_the_env_var(tmp_path: Path, redis_service: Service) -> None:
    environ = {"CONVEYOR_TEST_REDIS_URL": redis_service.url}
    service = devstack.resolve_redis(tmp_path, env_prefix="CONVEYOR_TEST_", environ=environ)
    assert service.url == redis_service.url
    assert service.process is None
    with pytest.raises(ServiceUnavailable, match="cannot be restarted"):
        service.restart()
    service.stop()  # someone else's server: stopping our handle must leave it running
    assert devstack.redis_answers(redis_service.url)


def test_resolve_s3_honours_the_env_var(tmp_path: Path, s3_service: Service) -> None:
    environ = {
        "CONVEYOR_TEST_S3_ENDPOINT_URL": s3_service.url,
        "CONVEYOR_TEST_S3_ACCESS_KEY_ID": "someone",
        "CONVEYOR_TEST_S3_SECRET_ACCESS_KEY": "someone-secret",
    }
    service = devstack.resolve_s3(tmp_path, env_prefix="CONVEYOR_TEST_", environ=environ)
    assert service.url == s3_service.url
    assert service.process is None
    assert (service.access_key, service.secret_key) == ("someone", "someone-secret")
    assert service.region == devstack.DEFAULT_REGION
    _round_trip(service)


def test_env_var_pointing_nowhere_names_the_variable(tmp_path: Path) -> None:
    environ = {"CONVEYOR_REDIS_URL": f"redis://127.0.0.1:{devstack.free_port()}/0"}
    with pytest.raises(ServiceUnavailable, match=r"\$CONVEYOR_REDIS_URL"):
        devstack.resolve_redis(tmp_path, environ=environ, timeout=0.5)


def test_resolve_redis_without_env_starts_redis_server(tmp_path: Path) -> None:
    service = devstack.resolve_redis(tmp_path, environ={}, use_docker=False)
    try:
        assert service.process is not None
        assert devstack.redis_answers(service.url)
    finally:
        service.stop()


def test_resolve_s3_without_env_or_minio_starts_moto(tmp_path: Path) -> None:
    service = devstack.resolve_s3(tmp_path, environ={}, use_docker=False, which=lambda name: None)
    try:
        assert service.name.startswith("moto-s3-")
        _round_trip(service)
    finally:
        service.stop()


def test_missing_redis_server_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable) as info:
        devstack.resolve_redis(
            tmp_path,
            env_prefix="CONVEYOR_TEST_",
            environ={},
            use_docker=False,
            which=lambda name: None,
        )
    message = str(info.value)
    assert "apt-get install redis-server" in message
    assert "CONVEYOR_TEST_REDIS_URL" in message


def test_missing_redis_server_with_patched_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ServiceUnavailable, match="install redis-server"):
        devstack.resolve_redis(tmp_path, environ={}, use_docker=False, which=shutil.which)
    with pytest.raises(ServiceUnavailable, match="`redis-server` not found on PATH"):
        devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL, which=shutil.which)


def test_missing_s3_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack, "_has_moto_server", lambda python: False)
    with pytest.raises(ServiceUnavailable) as info:
        devstack.resolve_s3(tmp_path, environ={}, use_docker=False, which=lambda name: None)
    message = str(info.value)
    assert "moto[server]" in message
    assert "CONVEYOR_S3_ENDPOINT_URL" in message


def test_docker_probe_is_fast() -> None:
    started = time.monotonic()
    devstack.docker_available(timeout=1.0)
    assert time.monotonic() - started < 5


_PARENT_WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("child", child.pid, flush=True)
time.sleep(120)
"""


def test_start_process_logs_and_stop_kills_the_group(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "proc.log"
    service = devstack.start_process("proc", [sys.executable, "-c", _PARENT_WITH_CHILD], None, log)
    try:
        wait_for_log(service, "child ", timeout=10)
        child_pid = int(log.read_text().split()[1])
        assert psutil.pid_exists(child_pid)
    finally:
        devstack.stop_all([service], timeout=5)
    assert not service.running()
    wait_for(
        lambda: (
            not psutil.pid_exists(child_pid)
            or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
        ),
        timeout=5,
        message="child of the stopped process is still running",
    )


def test_process_restart_appends_to_the_log(tmp_path: Path) -> None:
    code = "import os, time; print('up', os.getpid(), flush=True); time.sleep(60)"
    service = devstack.start_process(
        "sleeper", [sys.executable, "-c", code], None, tmp_path / "sleeper.log"
    )
    try:
        wait_for_log(service, "up ", timeout=10)
        offset = log_size(service)
        service.restart()
        wait_for_log(service, "up ", timeout=10, since=offset)
        assert service.log_path is not None
        assert service.log_path.read_text().count("up ") == 2
    finally:
        service.stop()


def test_wait_for_log_fails_fast_when_the_process_dies(tmp_path: Path) -> None:
    service = devstack.start_process(
        "dies", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], None,
        tmp_path / "dies.log",
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="exited with code 3"):
        wait_for_log(service, "ready.", timeout=30)
    assert time.monotonic() - started < 10
    service.stop()


def test_wait_for_returns_the_value_and_times_out_with_the_message() -> None:
    assert wait_for(lambda: 42, timeout=1) == 42
    with pytest.raises(WaitTimeout, match="never true"):
        wait_for(lambda: False, timeout=0.2, interval=0.05, message=lambda: "never true")
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return True

    assert wait_for(flaky, timeout=5, interval=0.01, ignore=(ConnectionError,))


def test_service_env_separates_state_and_broker(
    redis_service: Service, s3_service: Service
) -> None:
    env = devstack.service_env(redis_service, s3_service)
    assert env["CONVEYOR_REDIS_URL"] == redis_service.url
    assert env["CONVEYOR_BROKER_URL"].endswith("/1")
    assert devstack.with_redis_db("redis://h:1/0", 3) == "redis://h:1/3"
    assert env["CONVEYOR_S3_ENDPOINT_URL"] == s3_service.url


def test_fixtures_point_at_the_test_services(
    request: pytest.FixtureRequest,
    settings: Settings,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
) -> None:
    assert request.node.get_closest_marker("integration") is not None
    assert settings.redis_url == settings_env["CONVEYOR_REDIS_URL"]
    assert settings.broker == settings_env["CONVEYOR_BROKER_URL"]
    assert settings.lease_seconds == 6
    assert settings.sweep_interval_seconds == 1
    assert redis_client.dbsize() == 0
    redis_client.set("left-over", "1")


def test_redis_client_is_flushed_between_tests(redis_client: redis.Redis) -> None:
    assert redis_client.get("left-over") is None
