"""Fixtures for every suite: real Redis and S3 for the session, Conveyor processes per test.

Services come from :mod:`workers.devstack` with the ``CONVEYOR_TEST_`` env prefix, so
``CONVEYOR_TEST_REDIS_URL`` / ``CONVEYOR_TEST_S3_ENDPOINT_URL`` point the suite at services
you run yourself; otherwise it starts its own on free ports. Not finding any is a test
failure with a message saying what to install, never a skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import pytest
import redis

from engine.errors import ServiceUnavailableError
from engine.settings import Settings, get_settings
from workers import devstack
from workers.devstack import Service

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
TEST_ENV_PREFIX = "CONVEYOR_TEST_"

# Short timings so lease expiry, sweeps and outbox recovery happen within a test's patience.
TEST_TIMINGS = {
    "CONVEYOR_LEASE_SECONDS": "6",
    "CONVEYOR_SWEEP_INTERVAL_SECONDS": "1",
    "CONVEYOR_OUTBOX_GRACE_SECONDS": "3",
}

# Most tests create a pipeline and then start the execution they watch: the stacks they
# spawn do not start one on CreatePipeline (tests of that turn it on themselves).
TEST_DEFAULTS = {"CONVEYOR_START_ON_CREATE": "false"}

SPAWNED = pytest.StashKey[list[Service]]()
LOG_TAIL_LINES = 60


# --- Markers and failure reports ---------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is ``integration``, under tests/e2e ``e2e``."""
    for item in items:
        try:
            parts = item.path.resolve().relative_to(TESTS_DIR).parts
        except ValueError:
            continue
        if len(parts) > 1 and parts[0] in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tail of every process the test spawned to the report."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for service in item.stash.get(SPAWNED, []):
            report.sections.append(
                (
                    f"{service.name} log ({service.log_path}), last {LOG_TAIL_LINES} lines",
                    service.tail(LOG_TAIL_LINES) or "(empty)",
                )
            )
    return report


# --- Backing services ----------------------------------------------------------------------


def _or_fail(start: Callable[[], Service]) -> Service:
    """Start a service or FAIL (never skip) the test with the message saying what to install."""
    try:
        return start()
    except ServiceUnavailableError as exc:
        message = exc.message
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory for the session's services (Redis dir, moto cwd, their logs)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_service(services_dir: Path) -> Iterator[Service]:
    """The session's Redis: ``$CONVEYOR_TEST_REDIS_URL``, a container, or ``redis-server``."""
    service = _or_fail(
        lambda: devstack.resolve_redis(services_dir / "redis", env_prefix=TEST_ENV_PREFIX)
    )
    yield service
    service.stop()


@pytest.fixture(scope="session")
def s3_service(services_dir: Path) -> Iterator[Service]:
    """The session's S3: ``$CONVEYOR_TEST_S3_ENDPOINT_URL``, MinIO, or moto's server."""
    service = _or_fail(lambda: devstack.resolve_s3(services_dir / "s3", env_prefix=TEST_ENV_PREFIX))
    yield service
    service.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Service]:
    """A Redis of this test's own (always a ``redis-server`` process), safe to kill/restart.

    Point processes at it with ``spawn(..., env=devstack.service_env(private_redis, s3))``.
    """
    service = _or_fail(
        lambda: devstack.start_redis(
            workdir=tmp_path / "private-redis",
            binary=devstack.resolve_binary("redis-server", devstack.REDIS_INSTALL),
        )
    )
    yield service
    service.stop()


@pytest.fixture(scope="session")
def settings_env(redis_service: Service, s3_service: Service) -> dict[str, str]:
    """``CONVEYOR_*`` variables for processes the tests start (state on db 0, broker db 1)."""
    return {**devstack.service_env(redis_service, s3_service), **TEST_TIMINGS, **TEST_DEFAULTS}


def _foreign_conveyor_vars(environ: Mapping[str, str], keep: Mapping[str, str]) -> list[str]:
    """The developer's own ``CONVEYOR_*`` settings, which must not leak into a test."""
    return [
        key
        for key in environ
        if key.startswith("CONVEYOR_") and not key.startswith(TEST_ENV_PREFIX) and key not in keep
    ]


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for the test services; also exported to ``os.environ`` for this test only,
    so in-process code calling ``get_settings()`` sees them (never the system Redis)."""
    for key in _foreign_conveyor_vars(os.environ, settings_env):
        monkeypatch.delenv(key)
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@pytest.fixture
def redis_client(redis_service: Service, settings_env: dict[str, str]) -> Iterator[redis.Redis]:
    """A client (``decode_responses=True``) on the state database, flushed before the test.

    The broker database is flushed too, so no task left by an earlier test is delivered.
    """
    broker = redis.Redis.from_url(settings_env["CONVEYOR_BROKER_URL"])
    broker.flushdb()
    broker.close()
    client = redis.Redis.from_url(redis_service.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def build_writable() -> Iterator[Path]:
    """A directory build commands may write to, for tests that watch a build through files.

    Workers run as root here, so builds run as the unprivileged build user, which can reach
    nothing of pytest's temp directories (pytest keeps them 0700).
    """
    path = Path(tempfile.mkdtemp(prefix="conveyor-test-build-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- Conveyor processes ---------------------------------------------------------------


class Spawn(Protocol):
    def __call__(
        self, *args: str, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> Service: ...


@pytest.fixture
def spawn(
    request: pytest.FixtureRequest,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Iterator[Spawn]:
    """Start ``python -m workers.cli ARGS`` against the test services; stopped at teardown.

    ``spawn("worker", "--pool", "build", "--hostname", "w1@%h")`` returns the
    :class:`Service` (``.log_path``, ``.stop()``, ``.kill()``, ``.restart()``). ``env``
    overrides variables (e.g. another Redis). Depends on ``redis_client`` so the databases
    are flushed before any process starts.
    """
    spawned: list[Service] = []
    request.node.stash[SPAWNED] = spawned
    counter = itertools.count(1)
    base_env = {
        key: value
        for key, value in os.environ.items()
        if key not in _foreign_conveyor_vars(os.environ, settings_env)
    }

    def _spawn(
        *args: str, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> Service:
        index = next(counter)
        label = name or f"{args[0] if args else 'conveyor'}-{index}"
        full_env = {**base_env, **settings_env, "PYTHONUNBUFFERED": "1", **(env or {})}
        service = devstack.start_process(
            label,
            [sys.executable, "-m", "workers.cli", *args],
            full_env,
            tmp_path / "logs" / f"{index:02d}-{label}.log",
            cwd=REPO_ROOT,
        )
        spawned.append(service)
        return service

    yield _spawn
    devstack.stop_all(reversed(spawned))
