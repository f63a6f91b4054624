"""Local backing services (Redis, S3) and Conveyor processes, for ``conveyor dev`` and tests.

Pure subprocess management: nothing here imports Celery, so the test fixtures and the dev
command can start services before any Conveyor process exists.

Where a service comes from, first match wins (see DESIGN.md, "Services in tests and in
development"):

- Redis: ``<prefix>REDIS_URL`` → a Redis container (only if a Docker engine answers) →
  ``redis-server`` on PATH → :class:`ServiceUnavailable`.
- S3: ``<prefix>S3_ENDPOINT_URL`` → ``minio`` on PATH → a MinIO container (only if a Docker
  engine answers) → moto's server → :class:`ServiceUnavailable`.

``prefix`` is ``CONVEYOR_`` for development and ``CONVEYOR_TEST_`` for the test suite, so a
developer's own Redis is never flushed by a test run by accident.

Credentials: MinIO processes and containers are started with the ``Settings`` defaults
(``conveyor`` / ``conveyor-secret``); moto accepts any key pair, and is given the same ones
so every client can use one configuration.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis

from engine.errors import ServiceUnavailableError
from engine.settings import Settings

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_KEY",
    "Service",
    "ServiceUnavailable",
    "docker_available",
    "free_port",
    "http_answers",
    "listens",
    "redis_answers",
    "resolve_binary",
    "resolve_redis",
    "resolve_s3",
    "service_env",
    "start_minio",
    "start_process",
    "start_redis",
    "start_s3",
    "stop_all",
    "with_redis_db",
]

DEFAULT_ACCESS_KEY: str = Settings.model_fields["s3_access_key_id"].default
DEFAULT_SECRET_KEY: str = Settings.model_fields["s3_secret_access_key"].default
DEFAULT_REGION: str = Settings.model_fields["s3_region"].default

REDIS_INSTALL = "install redis-server (apt-get install redis-server)"
REDIS_HINT = REDIS_INSTALL + " or set {var}"
S3_HINT = (
    "install moto's server (pip install 'moto[server]'), put a `minio` binary on PATH, or set {var}"
)

Which = Callable[[str], str | None]


class ServiceUnavailable(ServiceUnavailableError):
    """A backing service could not be found or started; the message says what to install."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process's whole group (it leads its own session), or just it."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


@dataclass
class Service:
    """One running (or external) service: where it answers and how to stop it.

    ``process`` is ``None`` for a service someone else runs (an env-var URL) or a container;
    ``stop`` then does nothing, respectively stops the container.
    """

    name: str
    url: str
    process: subprocess.Popen[bytes] | None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    log_path: Path | None = None
    cwd: Path | None = None
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    region: str = DEFAULT_REGION
    ready: Callable[[float], None] | None = field(default=None, repr=False)
    on_stop: Callable[[], None] | None = field(default=None, repr=False)
    origin: str = "process"
    _swept: bool = field(default=False, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, wait ``timeout`` seconds, then SIGKILL it."""
        if self.process is not None and self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process is not None and not self._swept:
            # The leader is gone; make sure no child it left behind keeps running.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self._swept = True
        if self.on_stop is not None:
            on_stop, self.on_stop = self.on_stop, None
            on_stop()

    def kill(self) -> None:
        """SIGKILL the process group at once: a crash, not a shutdown."""
        if self.process is None:
            raise ServiceUnavailable(f"{self.name} is not a process Conveyor started")
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait(10)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop (if still running) and launch the same command again, same port, same log."""
        if not self.argv:
            raise ServiceUnavailable(f"{self.name} ({self.origin}) cannot be restarted")
        self.stop()
        self._swept = False
        self.process = _launch(self.argv, self.env, self.log_path, self.cwd)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 15.0) -> None:
        if self.ready is not None:
            self.ready(timeout)

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for error messages and failed tests."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])


def _launch(
    argv: list[str],
    env: Mapping[str, str] | None,
    log_path: Path | None,
    cwd: Path | None,
) -> subprocess.Popen[bytes]:
    out: IO[bytes] | int
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    else:
        out = subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def _poll_until(service: Service, check: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``check`` until it is true; fail early, with the log, if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if service.process is not None and service.process.poll() is not None:
            raise ServiceUnavailable(
                f"{service.name} exited with code {service.process.returncode} before "
                f"{what}; log {service.log_path}:\n{service.tail()}"
            )
        if check():
            return
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"{service.name} at {service.url} did not {what} within {timeout:g}s; "
                f"log {service.log_path}:\n{service.tail()}"
            )
        time.sleep(0.05)


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def http_answers(url: str) -> bool:
    """Any HTTP response at all (even 403/404) means the server is up."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def listens(service: Service) -> bool:
    """Whether the port in ``service.url`` is bound by this service's own process (tree).

    Without this, a server already on the port would answer the readiness probe for a
    process that is about to exit with "address in use".
    """
    if service.process is None:
        return True
    port = urlsplit(service.url).port
    try:
        leader = psutil.Process(service.process.pid)
        for proc in (leader, *leader.children(recursive=True)):
            for conn in proc.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.Error:
        return False
    return False


def _redis_ready(service: Service) -> Callable[[float], None]:
    return lambda timeout: _poll_until(
        service,
        lambda: listens(service) and redis_answers(service.url),
        timeout,
        "answer PING",
    )


def _http_ready(service: Service) -> Callable[[float], None]:
    return lambda timeout: _poll_until(
        service,
        lambda: listens(service) and http_answers(service.url),
        timeout,
        "answer HTTP",
    )


def _start(
    service: Service, ready: Callable[[Service], Callable[[float], None]], timeout: float
) -> Service:
    service.ready = ready(service)
    service.process = _launch(service.argv, service.env, service.log_path, service.cwd)
    try:
        service.wait_ready(timeout)
    except BaseException:
        service.stop()
        raise
    return service


def start_redis(
    port: int | None = None,
    *,
    workdir: Path,
    binary: str = "redis-server",
    timeout: float = 15.0,
) -> Service:
    """A throwaway ``redis-server`` on 127.0.0.1: no persistence, files under ``workdir``."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    service = Service(
        name=f"redis-{port}",
        url=f"redis://127.0.0.1:{port}/0",
        process=None,
        argv=argv,
        log_path=workdir / f"redis-{port}.log",
    )
    return _start(service, _redis_ready, timeout)


def start_s3(
    port: int | None = None,
    *,
    workdir: Path,
    python: str = sys.executable,
    timeout: float = 30.0,
) -> Service:
    """moto's S3-compatible server on 127.0.0.1 (in-memory; any credentials are accepted)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY)
    env.setdefault("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_KEY)
    env.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
    service = Service(
        name=f"moto-s3-{port}",
        url=f"http://127.0.0.1:{port}",
        process=None,
        argv=[python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        log_path=workdir / f"moto-s3-{port}.log",
        cwd=workdir,
    )
    return _start(service, _http_ready, timeout)


def start_minio(
    binary: str,
    port: int | None = None,
    *,
    workdir: Path,
    timeout: float = 30.0,
) -> Service:
    """A ``minio server`` process on 127.0.0.1 with the Settings default credentials."""
    port = port or free_port()
    data = workdir / f"minio-{port}"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MINIO_ROOT_USER"] = DEFAULT_ACCESS_KEY
    env["MINIO_ROOT_PASSWORD"] = DEFAULT_SECRET_KEY
    argv = [
        binary, "server", str(data),
        "--address", f"127.0.0.1:{port}",
        "--console-address", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    service = Service(
        name=f"minio-{port}",
        url=f"http://127.0.0.1:{port}",
        process=None,
        argv=argv,
        env=env,
        log_path=workdir / f"minio-{port}.log",
    )
    return _start(service, _http_ready, timeout)


def start_process(
    name: str,
    argv: list[str],
    env: Mapping[str, str] | None,
    log_path: Path,
    *,
    cwd: Path | None = None,
) -> Service:
    """Launch a Conveyor process (worker, beat, api) in its own session, output to a log.

    ``stop()`` then terminates the whole process group, Celery's pool children included.
    No readiness check: callers know what "ready" means for their process.
    """
    service = Service(
        name=name,
        url="",
        process=None,
        argv=list(argv),
        env=dict(env) if env is not None else None,
        log_path=log_path,
        cwd=cwd,
    )
    service.process = _launch(service.argv, service.env, log_path, cwd)
    return service


def stop_all(services: Iterable[Service], timeout: float = 5.0) -> None:
    """Stop several services in parallel: SIGTERM all, one shared wait, SIGKILL stragglers."""
    services = list(services)
    for service in services:
        if service.process is not None and service.process.poll() is None:
            _signal_group(service.process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service in services:
        if service.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(max(0.0, deadline - time.monotonic()))
    for service in services:
        service.stop(timeout)


def resolve_binary(name: str, hint: str, *, which: Which = shutil.which) -> str:
    """The path of ``name`` on PATH, or :class:`ServiceUnavailable` carrying ``hint``."""
    path = which(name)
    if not path:
        raise ServiceUnavailable(f"`{name}` not found on PATH: {hint}.")
    return path


# --- Docker / testcontainers -----------------------------------------------------------


def docker_available(timeout: float = 2.0) -> bool:
    """True only if a Docker engine answers a ping within ``timeout``; never hangs."""
    host = os.environ.get("DOCKER_HOST", "")
    sockets = [Path("/var/run/docker.sock"), Path.home() / ".docker/run/docker.sock"]
    if not host and not any(s.exists() for s in sockets):
        return False
    try:
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _container_module(name: str) -> Any:
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ImportError:
        return importlib.import_module(f"testcontainers.{name}")


def _redis_container() -> Service:
    container: Any = _container_module("redis").RedisContainer("redis:7-alpine")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return Service(
        name="redis-container",
        url=f"redis://{host}:{port}/0",
        process=None,
        on_stop=container.stop,
        origin="container",
    )


def _minio_container() -> Service:
    container: Any = _container_module("minio").MinioContainer(
        access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY
    )
    container.start()
    endpoint = container.get_config()["endpoint"]
    return Service(
        name="minio-container",
        url=f"http://{endpoint}",
        process=None,
        on_stop=container.stop,
        origin="container",
    )


# --- Resolution ----------------------------------------------------------------------


def resolve_redis(
    workdir: Path,
    *,
    env_prefix: str = "CONVEYOR_",
    environ: Mapping[str, str] | None = None,
    use_docker: bool | None = None,
    which: Which = shutil.which,
    timeout: float = 15.0,
) -> Service:
    """A Redis to use: ``<env_prefix>REDIS_URL``, a container, ``redis-server``, or an error.

    ``use_docker=None`` means "if a Docker engine answers"; ``False`` never tries it.
    """
    environ = os.environ if environ is None else environ
    var = f"{env_prefix}REDIS_URL"
    problems: list[str] = []
    url = environ.get(var)
    if url:
        service = Service(name=f"redis (${var})", url=url, process=None, origin=f"${var}")
        service.ready = _redis_ready(service)
        service.wait_ready(timeout)
        return service
    if use_docker is None:
        use_docker = docker_available()
    if use_docker:
        try:
            return _redis_container()
        except Exception as exc:
            problems.append(f"Redis container failed: {exc}")
    binary = which("redis-server")
    if binary:
        return start_redis(workdir=workdir, binary=binary, timeout=timeout)
    problems.append("no `redis-server` on PATH")
    raise ServiceUnavailable(
        f"No Redis available ({'; '.join(problems)}): {REDIS_HINT.format(var=var)}."
    )


def resolve_s3(
    workdir: Path,
    *,
    env_prefix: str = "CONVEYOR_",
    environ: Mapping[str, str] | None = None,
    use_docker: bool | None = None,
    which: Which = shutil.which,
    python: str = sys.executable,
    timeout: float = 30.0,
) -> Service:
    """An S3 endpoint: ``<env_prefix>S3_ENDPOINT_URL``, ``minio``, a container, moto, or an error.

    With the env var, credentials come from ``<env_prefix>S3_ACCESS_KEY_ID`` /
    ``S3_SECRET_ACCESS_KEY`` / ``S3_REGION`` when set, else the Settings defaults.
    """
    environ = os.environ if environ is None else environ
    var = f"{env_prefix}S3_ENDPOINT_URL"
    problems: list[str] = []
    url = environ.get(var)
    if url:
        service = Service(
            name=f"s3 (${var})",
            url=url,
            process=None,
            access_key=environ.get(f"{env_prefix}S3_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY),
            secret_key=environ.get(f"{env_prefix}S3_SECRET_ACCESS_KEY", DEFAULT_SECRET_KEY),
            region=environ.get(f"{env_prefix}S3_REGION", DEFAULT_REGION),
            origin=f"${var}",
        )
        service.ready = _http_ready(service)
        service.wait_ready(timeout)
        return service
    minio = which("minio")
    if minio:
        return start_minio(minio, workdir=workdir, timeout=timeout)
    if use_docker is None:
        use_docker = docker_available()
    if use_docker:
        try:
            return _minio_container()
        except Exception as exc:
            problems.append(f"MinIO container failed: {exc}")
    if importlib.util.find_spec("moto") is not None and _has_moto_server(python):
        return start_s3(workdir=workdir, python=python, timeout=timeout)
    problems.append("no `minio` on PATH, no Docker engine, moto's server not installed")
    raise ServiceUnavailable(
        f"No S3 endpoint available ({'; '.join(problems)}): {S3_HINT.format(var=var)}."
    )


def _has_moto_server(python: str) -> bool:
    """moto's server needs its extras (flask, werkzeug); plain ``moto`` is not enough."""
    if python != sys.executable:
        return True  # another interpreter: let the start attempt report what is missing
    return all(
        importlib.util.find_spec(mod) is not None for mod in ("moto.server", "flask", "werkzeug")
    )


# --- Environment for Conveyor processes ------------------------------------------------


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another logical database: ``redis://h:p/0`` → ``/<db>``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def service_env(
    redis_service: Service, s3_service: Service, *, broker_db: int = 1
) -> dict[str, str]:
    """``CONVEYOR_*`` variables pointing a Conveyor process at these services.

    The broker gets its own database so flushing the state database between tests (or by
    hand) never deletes kombu's queue bindings under a running worker.
    """
    return {
        "CONVEYOR_REDIS_URL": redis_service.url,
        "CONVEYOR_BROKER_URL": with_redis_db(redis_service.url, broker_db),
        "CONVEYOR_S3_ENDPOINT_URL": s3_service.url,
        "CONVEYOR_S3_ACCESS_KEY_ID": s3_service.access_key,
        "CONVEYOR_S3_SECRET_ACCESS_KEY": s3_service.secret_key,
        "CONVEYOR_S3_REGION": s3_service.region,
    }
