"""An S3 endpoint that goes away for a while: the worker retries the step that hit the outage
and keeps the work that finished; an outage longer than the retry budget fails the action
with a message naming the endpoint and the number of attempts.

The provider workers reach S3 through a TCP proxy in this process. The proxy "goes away" by
closing its listening socket (connections are refused) and dropping the connections it
holds, then listens again on the same port. The engine pool, the API and this test talk to
the S3 server directly. The build signals that it started by touching a marker file, so
the outage starts while the build runs and hits the upload of its output artifact.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Spawn
from tests.helpers import wait_for
from tests.stack import (
    Stack,
    build_and_deploy,
    put_source,
    start_stack,
    unique,
)

BUILD_SECONDS = 3


class OutageProxy:
    """Forwards TCP connections on a local port to ``upstream``, until told to go away."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None, upstream
        self.upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.port = 0
        self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listen(self) -> None:
        """(Again) accept connections, on the same port as before."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(0.1)  # so the accept loop notices when the socket is closed
        self.port = sock.getsockname()[1]
        with self._lock:
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def go_away(self) -> None:
        """Refuse new connections (nothing listens) and drop the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for conn in conns:
            _close(conn)

    def come_back_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.listen)
        timer.daemon = True
        timer.start()
        return timer

    def close(self) -> None:
        self.go_away()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed: go_away()
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not sock:  # went away meanwhile
                    _close(client)
                    _close(server)
                    return
                self._open.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def proxy(settings_env: dict[str, str]) -> Iterator[OutageProxy]:
    p = OutageProxy(settings_env["CONVEYOR_S3_ENDPOINT_URL"])
    yield p
    p.close()


def _buildspec(marker: Path) -> str:
    return f"""version: 0.2
phases:
  build:
    commands:
      - touch {marker}
      - sleep {BUILD_SECONDS}
      - mkdir -p out && echo built > out/app.txt
artifacts:
  base-directory: out
  files:
    - '**/*'
"""


def _pipeline(name: str, src: str, artifacts: str, target: str) -> dict[str, Any]:
    return build_and_deploy(name, src, artifacts, target, project="outage")


def _start(stack: Stack, marker: Path) -> tuple[str, str, str, str]:
    """Create and start the pipeline; returns (name, execution id, artifacts, target)."""
    s3, cp = stack.s3(), stack.codepipeline()
    name, src = unique("outage"), unique("src")
    artifacts, target = unique("artifacts"), unique("target")
    put_source(s3, src, {"buildspec.yml": _buildspec(marker)})
    s3.create_bucket(Bucket=target)
    cp.create_pipeline(pipeline=_pipeline(name, src, artifacts, target))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    wait_for(marker.exists, 45, interval=0.05, message="the build never started")
    return name, eid, artifacts, target


def _status(cp: Any, name: str, eid: str) -> str:
    out = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    return str(out["pipelineExecution"]["status"])


def _finished(cp: Any, name: str, eid: str, timeout: float) -> str:
    return wait_for(
        lambda: (
            st if (st := _status(cp, name, eid)) in ("Succeeded", "Failed", "Stopped") else None
        ),
        timeout,
        interval=0.2,
        message=f"execution {eid} did not finish",
    )


def _build_state(cp: Any, name: str) -> dict[str, Any]:
    stage = next(
        s for s in cp.get_pipeline_state(name=name)["stageStates"] if s["stageName"] == "Build"
    )
    latest: dict[str, Any] = stage["actionStates"][0]["latestExecution"]
    return latest


def _read(s3: Any, url: str) -> str:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def test_an_outage_during_the_output_upload_is_retried_and_the_build_kept(
    spawn: Spawn, settings_env: dict[str, str], proxy: OutageProxy, build_writable: Path
) -> None:
    outage = 10.0
    stack = start_stack(spawn, settings_env, worker_env={"CONVEYOR_S3_ENDPOINT_URL": proxy.url})
    cp, s3 = stack.codepipeline(), stack.s3()
    name, eid, _, target = _start(stack, build_writable / "build-started")
    proxy.go_away()
    proxy.come_back_after(outage)

    assert _finished(cp, name, eid, outage + 40) == "Succeeded"
    build = _build_state(cp, name)
    summary = build["summary"]
    assert summary.startswith("Build succeeded (after retrying "), summary
    assert summary.endswith(" transient failures)"), summary
    log = _read(s3, build["externalExecutionUrl"])
    assert "uploading output artifact BuildOutput: transient failure (attempt 1 of 10): " in log
    assert f"cannot reach S3 endpoint {proxy.url}: " in log
    assert "; retrying in " in log
    assert "uploading output artifact BuildOutput: succeeded on attempt " in log
    # The build ran once: its work was kept while the upload waited for the endpoint.
    assert log.count("Entering phase BUILD") == 1
    assert s3.get_object(Bucket=target, Key="app.txt")["Body"].read() == b"built\n"


def test_an_outage_longer_than_the_retry_budget_fails_the_action_saying_so(
    spawn: Spawn, settings_env: dict[str, str], proxy: OutageProxy, build_writable: Path
) -> None:
    budget = 6.0
    stack = start_stack(
        spawn,
        settings_env,
        worker_env={
            "CONVEYOR_S3_ENDPOINT_URL": proxy.url,
            "CONVEYOR_TRANSIENT_RETRY_SECONDS": str(budget),
        },
    )
    cp = stack.codepipeline()
    name, eid, _, _ = _start(stack, build_writable / "build-started")
    proxy.go_away()
    down_at = time.monotonic()

    assert _finished(cp, name, eid, BUILD_SECONDS + budget + 30) == "Failed"
    failed_after = time.monotonic() - down_at
    error = _build_state(cp, name)["errorDetails"]
    message = error["message"]
    assert message.startswith("gave up after "), message
    assert " attempts over " in message
    assert "uploading s3://" in message and "/BuildOutput/" in message
    assert f"cannot reach S3 endpoint {proxy.url}: Connection refused" in message
    attempts = int(message.removeprefix("gave up after ").split()[0])
    assert 2 <= attempts <= 10
    # The budget, then one try of the log's upload, not another budget for it.
    assert budget <= failed_after <= BUILD_SECONDS + budget + 10
