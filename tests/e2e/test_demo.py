"""``make demo`` (examples/demo.py) as a newcomer runs it: a subprocess, no terminal, CI=true.

The demo is pointed at the session's Redis and S3 (``CONVEYOR_REDIS_URL`` /
``CONVEYOR_S3_ENDPOINT_URL``, which ``run_dev_stack`` honours), so it starts its own workers,
beat, API and Flower but no second redis-server or moto. It uses state database 0 and broker
database 1 like every other test; ``redis_client`` flushes them first.

The interactive test runs the approval command exactly as the demo printed it, through a
shell, from the repository root: the line a person copies must work as printed.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO_ROOT

DEMO = REPO_ROOT / "examples" / "demo.py"
TIMEOUT = 180.0


def demo_env(settings_env: Mapping[str, str], workdir: Path, **extra: str) -> dict[str, str]:
    """The test services, no terminal, and none of the developer's own CONVEYOR_/DEMO_ knobs
    (a DEMO_KEEP=1 left in a shell would make the demo wait for Ctrl-C forever)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "DEMO_")) or k.startswith("CONVEYOR_TEST_")
    }
    env.update(settings_env)
    env["CONVEYOR_START_ON_CREATE"] = "true"  # as a newcomer runs it: the product's default
    env.update(
        CI="true",
        PYTHONUNBUFFERED="1",
        TERM="dumb",
        DEMO_WORKDIR=str(workdir),
        DEMO_TIMEOUT="60",
    )
    env.update(extra)
    return env


class Demo:
    """The demo process with its output collected line by line, for waiting on a line."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DEMO)],
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"demo exited before printing {text!r}:\n{self.output}")
            if text in line:
                return line
        pytest.fail(f"demo printed no {text!r} within {timeout:g}s:\n{self.output}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"demo still running after {timeout:g}s:\n{self.output}")
        self._reader.join(10)
        return code

    def stop(self) -> None:
        """SIGTERM first: the demo then stops the stack it started (SIGKILL would orphan it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


StartDemo = Callable[..., Demo]


@pytest.fixture
def run_demo(
    settings_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> Iterator[StartDemo]:
    """Start the demo with extra env vars; whatever is still running is stopped at teardown."""
    started: list[Demo] = []

    def start(**extra: str) -> Demo:
        demo = Demo(demo_env(settings_env, tmp_path / "demo", **extra))
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.stop()


def assert_clean_exit(demo: Demo, code: int, expected: int = 0) -> None:
    assert code == expected, f"demo exited {code}, expected {expected}:\n{demo.output}"
    assert "==> Stopping the stack" in demo.output


def test_demo_runs_the_reference_pipeline_non_interactively(run_demo: StartDemo) -> None:
    demo = run_demo()
    code = demo.wait(TIMEOUT)
    assert_clean_exit(demo, code)
    out = demo.output
    approve = "conveyor approvals approve conveyor-reference Approve ApproveProduction"
    assert f'{approve} --summary "looks good"' in out
    assert "execution: Succeeded" in out
    assert "Succeeded in " in out
    # It follows the execution CreatePipeline started instead of starting a second one.
    assert "==> CreatePipeline started execution " in out
    assert "==> Started execution" not in out
    # Where things are: artifacts in the artifact bucket, the site in production.
    assert "s3://conveyor-demo-artifacts/conveyor-reference/BuildOutput/" in out
    assert "s3://conveyor-demo-production/" in out
    assert "index.html" in out
    assert "aws s3 ls --recursive --endpoint-url" in out
    assert "Flower        http://127.0.0.1:" in out
    # No terminal: plain lines, no cursor movement.
    assert "\x1b[" not in out


@pytest.mark.parametrize(
    ("verb", "done", "code", "expect"),
    [
        ("approve", "approved", 0, "Succeeded in "),
        ("reject", "rejected", 1, "demo failed: execution"),
    ],
)
def test_printed_approval_command_works(
    run_demo: StartDemo, verb: str, done: str, code: int, expect: str
) -> None:
    demo = run_demo(DEMO_INTERACTIVE="1")
    line = demo.wait_line(f"approvals {verb} ", TIMEOUT)
    command = line.strip()
    assert command.startswith("CONVEYOR_API_URL=http://127.0.0.1:")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    answered = subprocess.run(
        command, shell=True, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert answered.returncode == 0, answered.stderr + answered.stdout
    assert f"{done} conveyor-reference/Approve/ApproveProduction" in answered.stdout
    assert_clean_exit(demo, demo.wait(TIMEOUT), code)
    assert expect in demo.output
    if verb == "reject":
        assert "rejected: not yet" in demo.output
        assert "Approve / ApproveProduction: Failed" in demo.output


def test_demo_runs_the_git_sourced_pipeline(run_demo: StartDemo) -> None:
    """``make demo DEMO=git``: the sample app committed to a bare repository, fetched by a
    CodeCommit-style source, built with the commit's id and message, deployed."""
    demo = run_demo(DEMO="git")
    code = demo.wait(TIMEOUT)
    assert_clean_exit(demo, code)
    out = demo.output
    assert "conveyor-demo-app.git as " in out
    commit = out.split("conveyor-demo-app.git as ", 1)[1].split()[0]
    assert len(commit) == 40
    assert "Source / Source: Succeeded - Sample app" in out
    assert "execution: Succeeded" in out
    assert "s3://conveyor-demo-production/" in out
