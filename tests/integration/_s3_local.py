"""A real S3 endpoint for integration tests: $CONVEYOR_TEST_S3_ENDPOINT_URL or moto's server.

Self-contained so it can move into tests/conftest.py as is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ACCESS_KEY = "conveyor-test"
SECRET_KEY = "conveyor-test-secret"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto_server(timeout: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Start ``python -m moto.server`` on a free port; returns (url, stop)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"moto server exited with {proc.returncode}: {err}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return url, stop
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    stop()
    raise RuntimeError(f"moto server did not answer on {url} within {timeout}s")


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL for the test session, started (and stopped) here if needed."""
    configured = os.environ.get("CONVEYOR_TEST_S3_ENDPOINT_URL")
    if configured:
        yield configured
        return
    url, stop = start_moto_server()
    try:
        yield url
    finally:
        stop()
