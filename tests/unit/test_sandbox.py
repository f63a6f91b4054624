"""Pure parts of build isolation: the inherited environment and Redis credentials."""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from engine.settings import Settings, with_credentials
from providers import sandbox
from providers.sandbox import base_environment, process_alive, start_time


def test_a_build_inherits_only_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-1")
    monkeypatch.setenv("CONVEYOR_S3_SECRET_ACCESS_KEY", "leak-2")
    monkeypatch.setenv("REDIS_URL", "redis://:leak-3@host/0")
    env = base_environment()
    assert env["PATH"] == "/usr/bin:/bin" and env["LC_ALL"] == "C.UTF-8"
    assert not any(v.startswith("leak") or "leak" in v for v in env.values())


def test_without_a_path_the_build_gets_the_usual_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATH", raising=False)
    assert "/usr/bin" in base_environment()["PATH"]


@pytest.mark.parametrize(
    ("url", "user", "password", "expected"),
    [
        ("redis://h:6379/0", None, "p@ss/w:rd", "redis://:p%40ss%2Fw%3Ard@h:6379/0"),
        ("rediss://h:6380/1", "conveyor", "pw", "rediss://conveyor:pw@h:6380/1"),
        ("redis://:own@h:6379/0", None, "pw", "redis://:own@h:6379/0"),  # its own wins
        ("amqp://guest@rabbit//", None, "pw", "amqp://guest@rabbit//"),  # not Redis
    ],
)
def test_redis_credentials_go_into_redis_urls_only(
    url: str, user: str | None, password: str, expected: str
) -> None:
    assert with_credentials(url, user, password) == expected


def test_the_password_file_reaches_state_store_and_broker(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    s = Settings(
        redis_url="redis://127.0.0.1:6379/0",
        broker_url="redis://127.0.0.1:6379/1",
        redis_password_file=str(secret),
    )
    assert s.redis_url == "redis://:s3cret@127.0.0.1:6379/0"
    assert s.broker == "redis://:s3cret@127.0.0.1:6379/1"


def test_a_pid_with_another_start_time_is_another_process() -> None:
    me = os.getpid()
    assert process_alive(me, start_time(me))
    assert not process_alive(me, str(int(start_time(me)) + 1))
    assert process_alive(me)


def test_a_worker_that_is_not_root_runs_builds_as_itself_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "_warned", set())
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() or 65534)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: pwd.struct_passwd(
        ("worker", "x", uid, uid, "", "/", "/bin/sh")
    ))  # fmt: skip
    caplog.set_level(logging.WARNING, "conveyor.sandbox")
    assert sandbox.resolve_build_user("conveyor-build") is None
    assert sandbox.resolve_build_user("conveyor-build") is None
    [record] = caplog.records
    assert "not root" in record.getMessage() and "conveyor-build" in record.getMessage()


def test_root_is_never_a_build_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root switches users")
    with pytest.raises(ValueError, match="unprivileged"):
        sandbox.resolve_build_user("root")
