"""A handler's process group ends with its call: on stop and at the deadline, the handler
and every child it started are killed (real processes, real Redis job store)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import redis

from engine.store.credentials import CredentialStore
from engine.store.jobs import JobStatus, JobStore
from providers.base import S3Access
from providers.lambda_invoke import FunctionResult, Invocation, LambdaSettings, run_function
from tests.conftest import REPO_ROOT
from tests.helpers import wait_for
from workers.jobs import RedisJobChannel

SETTINGS = LambdaSettings(
    functions={"lingers": "tests.handlers.misbehaving:lingers"}, path=str(REPO_ROOT)
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; only its parent (gone) could reap it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def _invocation(tmp_path: Path, deadline: float, cancelled: threading.Event) -> Invocation:
    return Invocation(
        function_name="lingers",
        user_parameters=str(tmp_path / "pids"),
        inputs={},
        outputs={},
        s3=S3Access("http://127.0.0.1:9", "k", "s", "us-east-1"),
        api_endpoint="http://127.0.0.1:9",  # never called: the handler does not answer
        deadline=deadline,
        cancelled=cancelled,
        workdir=tmp_path,
        pipeline_context={"pipelineName": "p"},
    )


@pytest.mark.parametrize("ending", ["stopped", "deadline"])
def test_the_handlers_process_group_is_killed(
    tmp_path: Path, redis_client: redis.Redis, ending: str
) -> None:
    store = JobStore(redis_client)
    channel = RedisJobChannel(store, {"name": "t"}, None, credentials=CredentialStore(redis_client))
    cancelled = threading.Event()
    deadline = time.time() + (300 if ending == "stopped" else 4)
    results: list[FunctionResult] = []
    with (tmp_path / "function.log").open("w") as log:
        runner = threading.Thread(
            target=lambda: results.append(
                run_function(_invocation(tmp_path, deadline, cancelled), channel, log, SETTINGS)
            )
        )
        runner.start()
        pids_file = tmp_path / "pids"
        text = wait_for(lambda: pids_file.read_text() if pids_file.exists() else None, timeout=20)
        handler, child = (int(p) for p in text.split())
        assert _alive(handler) and _alive(child)
        if ending == "stopped":
            cancelled.set()
        runner.join(20)
    [result] = results
    assert not result.succeeded
    if ending == "stopped":
        assert result.error_code == "Stopped"
    else:
        assert result.error_code == "TimedOut"
        assert "never called PutJobSuccessResult or PutJobFailureResult" in (
            result.error_message or ""
        )
    wait_for(lambda: not _alive(handler) and not _alive(child), timeout=5)
    # The job stopped waiting: a late answer would be refused.
    [key] = [k for k in redis_client.scan_iter("conveyor:job:*") if not k.endswith(":done")]
    assert store.get(key.rsplit(":", 1)[1]).status is JobStatus.TIMED_OUT
