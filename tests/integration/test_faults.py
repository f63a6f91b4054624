"""Nothing is stranded: a worker killed whole (SIGKILL to its process group) at any point of
an attempt loses nothing, and the attempt runs again within lease time plus two sweeps.

The points (workers/faults.py): after the task was received but before the lease was
claimed, right after the claim, while the provider runs, and after the result was recorded
but before it was applied. Two provider workers run with the same fault point armed once
(a marker file): whichever reaches it first dies, the other finishes the pipeline. Each
execution must succeed with exactly one artifact object per output artifact, so a
re-dispatch never left a second copy behind.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_TIMINGS, Spawn
from tests.helpers import wait_for
from tests.stack import (
    Stack,
    build_and_deploy,
    put_source,
    start_stack,
    unique,
)
from workers.faults import ONCE_DIR_ENV, POINTS_ENV, FaultPoint

LEASE = float(TEST_TIMINGS["CONVEYOR_LEASE_SECONDS"])
SWEEP = float(TEST_TIMINGS["CONVEYOR_SWEEP_INTERVAL_SECONDS"])
BUILD_SECONDS = 3

BUILDSPEC = f"""version: 0.2
phases:
  build:
    commands:
      - sleep {BUILD_SECONDS}
      - mkdir -p out && echo built > out/app.txt
artifacts:
  base-directory: out
  files:
    - '**/*'
"""


def _pipeline(name: str, src: str, artifacts: str, target: str) -> dict[str, Any]:
    return build_and_deploy(name, src, artifacts, target, project="faults")


def _objects(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


RECOVERY_MARKS = ("was never claimed", "expired (its worker died)", "(its worker died)")


def _recovery(log: Path, since: float) -> float | None:
    """When beat's sweep first logged taking up a lost attempt after ``since``."""
    for line in log.read_text(errors="replace").splitlines():
        if not any(mark in line for mark in RECOVERY_MARKS):
            continue
        at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= since:
            return at
    return None


def _status(cp: Any, name: str, eid: str) -> str:
    out = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    return str(out["pipelineExecution"]["status"])


@pytest.mark.parametrize("point", list(FaultPoint), ids=[p.value for p in FaultPoint])
def test_a_worker_killed_whole_at_any_point_strands_nothing(
    point: FaultPoint, spawn: Spawn, settings_env: dict[str, str], tmp_path: Path
) -> None:
    once = tmp_path / "faults"
    once.mkdir()
    stack: Stack = start_stack(
        spawn,
        settings_env,
        workers={"w1": ("all", 1), "w2": ("all", 1)},
        worker_env={POINTS_ENV: point.value, ONCE_DIR_ENV: str(once)},
    )
    s3, cp = stack.s3(), stack.codepipeline()
    name, src, artifacts, target = (
        unique("faults"),
        unique("src"),
        unique("artifacts"),
        unique("target"),
    )
    put_source(s3, src, {"buildspec.yml": BUILDSPEC})
    s3.create_bucket(Bucket=target)
    cp.create_pipeline(pipeline=_pipeline(name, src, artifacts, target))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    workers = [stack.processes["w1"], stack.processes["w2"]]

    def killed() -> float | None:
        dead = [w for w in workers if w.process is not None and w.process.poll() is not None]
        return time.monotonic() if dead else None

    died_at = wait_for(killed, 60, interval=0.05, message=f"no worker died at {point}")
    died_wall = time.time() - (time.monotonic() - died_at)
    assert (once / point.value).exists()
    # The sweep takes the lost attempt up again within lease time plus two sweeps.
    beat = stack.processes["beat"]
    assert beat.log_path is not None
    recovered_at = wait_for(
        lambda: _recovery(beat.log_path, died_wall - 1.0) if beat.log_path else None,
        LEASE + 2 * SWEEP + 5,
        interval=0.1,
        message=f"the sweep never took up the attempt lost at {point}",
    )
    assert recovered_at - died_wall <= LEASE + 2 * SWEEP + 0.5
    # What remains after the kill: the lost attempt's recovery (lease or claim deadline, plus
    # a sweep to notice it), then at most the rest of the pipeline on the surviving worker.
    rest = BUILD_SECONDS + 12.0
    budget = LEASE + 2 * SWEEP + rest
    wait_for(
        lambda: _status(cp, name, eid) in ("Succeeded", "Failed", "Stopped"),
        budget,
        interval=0.2,
        message=f"execution {eid} did not finish within {budget:.0f} s of the kill at {point}",
    )
    recovered_in = time.monotonic() - died_at
    assert _status(cp, name, eid) == "Succeeded"
    assert recovered_in <= budget
    for artifact in ("SourceOutput", "BuildOutput"):
        keys = _objects(s3, artifacts, f"{name[:20]}/{artifact[:20]}/")
        assert len(keys) == 1, f"{artifact}: {keys}"
    assert _objects(s3, target, "") == ["app.txt"]
    survivors = [w for w in workers if w.process is not None and w.process.poll() is None]
    assert len(survivors) == 1


def test_a_commands_rule_whose_worker_dies_runs_again_on_another(
    spawn: Spawn, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """A Commands stage-condition rule has the same lease-based recovery as an action: its
    worker killed mid-run, the rule is re-dispatched after the lease, not after its
    20-minute timeout."""
    once = tmp_path / "faults"
    once.mkdir()
    stack: Stack = start_stack(
        spawn,
        settings_env,
        workers={"w1": ("all", 1), "w2": ("all", 1)},
        worker_env={POINTS_ENV: FaultPoint.RUNNING.value, ONCE_DIR_ENV: str(once)},
    )
    s3, cp = stack.s3(), stack.codepipeline()
    name, src, artifacts, target = (
        unique("rulefault"),
        unique("src"),
        unique("artifacts"),
        unique("target"),
    )
    put_source(s3, src, {"buildspec.yml": BUILDSPEC})
    s3.create_bucket(Bucket=target)
    definition = _pipeline(name, src, artifacts, target)
    gate = {
        "name": "Check",
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
        "commands": [f"sleep {BUILD_SECONDS}", "true"],
    }
    definition["stages"][1]["beforeEntry"] = {"conditions": [{"result": "FAIL", "rules": [gate]}]}
    cp.create_pipeline(pipeline=definition)
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    workers = [stack.processes["w1"], stack.processes["w2"]]
    wait_for(
        lambda: any(w.process is not None and w.process.poll() is not None for w in workers),
        60,
        interval=0.05,
        message="no worker died while the rule ran",
    )
    budget = LEASE + 2 * SWEEP + 3 * BUILD_SECONDS + 12.0
    wait_for(
        lambda: _status(cp, name, eid) in ("Succeeded", "Failed", "Stopped"),
        budget,
        interval=0.2,
        message=f"execution {eid} did not finish within {budget:.0f} s of the kill",
    )
    assert _status(cp, name, eid) == "Succeeded"
    [rule_run] = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "ruleExecutionDetails"
    ]
    assert rule_run["status"] == "Succeeded"
