"""Waiting helpers shared by every test: poll real state instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workers.devstack import Service

T = TypeVar("T")

# Celery prints "celery@<hostname> ready." once its consumers are attached to the queues.
CELERY_READY = "ready."


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError, so pytest shows it well)."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition not met",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    ``ignore`` lists exceptions that mean "not yet" (e.g. a connection refused while a
    server starts). ``message`` may be a callable, evaluated only on timeout, to include
    late detail such as a log tail.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            if last_error is not None:
                text += f" (last error: {last_error!r})"
            raise WaitTimeout(f"after {timeout:g}s: {text}")
        time.sleep(interval)


def log_contains(path: Path, text: str, since: int = 0) -> bool:
    """Whether ``text`` is in the file past byte offset ``since``."""
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            return text in fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return False


def log_size(service: Service) -> int:
    """The log's current length: pass it as ``since`` to wait only for new lines."""
    if service.log_path is None or not service.log_path.exists():
        return 0
    return service.log_path.stat().st_size


def wait_for_log(service: Service, text: str, timeout: float = 30.0, *, since: int = 0) -> None:
    """Wait until ``text`` appears in the service's log; fail at once if the process died.

    After ``service.restart()`` (the log is appended to), pass ``since=log_size(service)``
    taken before the restart.
    """
    assert service.log_path is not None, f"{service.name} has no log file"
    log_path = service.log_path

    def seen() -> bool:
        if log_contains(log_path, text, since):
            return True
        if service.process is not None and service.process.poll() is not None:
            raise WaitTimeout(
                f"{service.name} exited with code {service.process.returncode} before "
                f"logging {text!r}:\n{service.tail()}"
            )
        return False

    wait_for(
        seen,
        timeout,
        message=lambda: f"{service.name} never logged {text!r}; log tail:\n{service.tail()}",
    )


def wait_worker_ready(service: Service, timeout: float = 60.0, *, since: int = 0) -> None:
    """A Celery worker is consuming once it has logged ``celery@<host> ready.``."""
    wait_for_log(service, CELERY_READY, timeout, since=since)
