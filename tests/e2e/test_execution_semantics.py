"""Execution semantics through boto3 against `conveyor api` with real workers.

Execution modes (SUPERSEDED, QUEUED, PARALLEL), stop and abandon, stage retry, disabled
transitions, automatic rollback, stage conditions and S3 source polling. One stack serves
the whole module: every test makes pipelines (and buckets) of its own names.

Builds that must hold still wait on gate files this test writes (``go-<execution id>``;
each build gets the execution id as ``EID`` from ``#{codepipeline.PipelineExecutionId}``
in its EnvironmentVariables, as a CodePipeline user would pass it), so the tests decide
exactly when a build finishes instead of hoping a sleep is long enough.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from engine.store import Store
from tests.conftest import REPO_ROOT, SPAWNED, _foreign_conveyor_vars
from tests.helpers import log_contains, wait_for
from tests.stack import (
    Stack,
    action,
    put_source,
    s3_source_stage,
    start_stack,
    unique,
    wait_status,
    zip_bytes,
)
from workers import devstack
from workers.devstack import Service

TERMINAL = {"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"}
# Beat polls S3 sources this often here; only the polling test's pipeline has polling on.
POLL_ENV = {"CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS": "1"}
# Two provider worker processes of two slots each: builds can run side by side, so
# ordering is the engine's doing, never a single worker's.
WORKERS = {"all-1": ("all", 2), "all-2": ("all", 2)}
# A gated build gives up after this many tenths of a second (the test has failed by then).
GATE_TICKS = 900


# ---------------------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def stack(
    settings_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One stack for the module: engine, two provider workers, beat (polling every 1 s)."""
    for url in (settings_env["CONVEYOR_REDIS_URL"], settings_env["CONVEYOR_BROKER_URL"]):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    logs = tmp_path_factory.mktemp("semantics-logs")
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k not in _foreign_conveyor_vars(os.environ, settings_env)
    }
    spawned: list[Service] = []

    def spawn(*args: str, name: str | None = None, env: Mapping[str, str] | None = None) -> Service:
        label = name or args[0]
        full_env = {**base_env, **settings_env, **POLL_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
        service = devstack.start_process(
            label,
            [sys.executable, "-m", "workers.cli", *args],
            full_env,
            logs / f"{len(spawned) + 1:02d}-{label}.log",
            cwd=REPO_ROOT,
        )
        spawned.append(service)
        return service

    try:
        yield start_stack(spawn, settings_env, workers=WORKERS)
    finally:
        devstack.stop_all(reversed(spawned))


@pytest.fixture(autouse=True)
def _process_logs_on_failure(request: pytest.FixtureRequest, stack: Stack) -> None:
    """A failing test's report carries the tail of every stack process's log."""
    request.node.stash[SPAWNED] = list(stack.processes.values())


@pytest.fixture
def marks(build_writable: Path) -> Path:
    """Where builds leave markers and wait for gates (workers run on this machine)."""
    return build_writable


# ---------------------------------------------------------------------------- definitions


def buildspec(marks: Path, *, outputs: bool = False) -> str:
    """Runs ``step-$STEP.sh`` from the source; ``MARKS`` and ``EID`` are set for it."""
    text = (
        "version: 0.2\n"
        "env:\n"
        "  variables:\n"
        f"    MARKS: {marks}\n"
        "phases:\n"
        "  build:\n"
        "    commands:\n"
        '      - bash "step-$STEP.sh"\n'
    )
    if outputs:
        text += "artifacts:\n  base-directory: out\n  files:\n    - '**/*'\n"
    return text


def gate(name: str) -> str:
    """Shell lines: mark ``<name>-$EID`` started, then wait for ``go-$EID``."""
    return (
        f'touch "$MARKS/{name}-$EID"\n'
        f"for i in $(seq {GATE_TICKS}); do\n"
        '  if [ -f "$MARKS/go-$EID" ]; then exit 0; fi\n'
        "  sleep 0.1\n"
        "done\n"
        "echo gate never opened; exit 1\n"
    )


def build(
    name: str,
    step: str,
    *,
    category: str = "Build",
    run_order: int = 1,
    ins: tuple[str, ...] = ("SourceOutput",),
    outs: tuple[str, ...] = (),
    primary: str | None = None,
) -> dict[str, Any]:
    config = {
        "ProjectName": name.lower(),
        "EnvironmentVariables": json.dumps(
            [
                {"name": "STEP", "value": step, "type": "PLAINTEXT"},
                {"name": "EID", "value": "#{codepipeline.PipelineExecutionId}"},
            ]
        ),
    }
    if primary:
        config["PrimarySource"] = primary
    return action(
        name, category, "CodeBuild", run_order=run_order, config=config, ins=ins, outs=outs
    )


def stage(name: str, *actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "actions": list(actions), **extra}


def pipeline(
    name: str, src: str, *stages: dict[str, Any], mode: str = "SUPERSEDED", poll: bool = False
) -> dict[str, Any]:
    source = s3_source_stage(src)
    if not poll:  # beat polls every second here: only the polling test wants it
        source["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "pipelineType": "V2",
        "executionMode": mode,
        "stages": [source, *stages],
    }


def create(stack: Stack, definition: dict[str, Any], files: dict[str, str]) -> str:
    """Upload the source, create the pipeline; returns its name."""
    put_source(
        stack.s3(), definition["stages"][0]["actions"][0]["configuration"]["S3Bucket"], files
    )
    stack.codepipeline().create_pipeline(pipeline=definition)
    return str(definition["name"])


# ---------------------------------------------------------------------------- reading state


def start(cp: Any, name: str) -> str:
    return str(cp.start_pipeline_execution(name=name)["pipelineExecutionId"])


def finish(cp: Any, name: str, eid: str, timeout: float = 90) -> str:
    return wait_status(cp, name, eid, TERMINAL, timeout)


def execution(cp: Any, name: str, eid: str) -> dict[str, Any]:
    out: dict[str, Any] = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)[
        "pipelineExecution"
    ]
    return out


def summaries(cp: Any, name: str) -> list[dict[str, Any]]:
    pages = cp.get_paginator("list_pipeline_executions").paginate(pipelineName=name)
    return [s for page in pages for s in page["pipelineExecutionSummaries"]]


def action_runs(cp: Any, name: str, eid: str | None = None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"pipelineName": name}
    if eid:
        kwargs["filter"] = {"pipelineExecutionId": eid}
    pages = cp.get_paginator("list_action_executions").paginate(**kwargs)
    return [d for page in pages for d in page["actionExecutionDetails"]]


def by_action(cp: Any, name: str, eid: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest run of each action (ListActionExecutions lists newest first)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for d in action_runs(cp, name, eid):
        latest.setdefault((d["stageName"], d["actionName"]), d)
    return latest


def stage_state(cp: Any, name: str, stage_name: str) -> dict[str, Any]:
    for s in cp.get_pipeline_state(name=name)["stageStates"]:
        if s["stageName"] == stage_name:
            return dict(s)
    raise AssertionError(f"no stage {stage_name} in {name}")


def epoch(t: Any) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def pipeline_events(stack: Stack, eid: str) -> list[str]:
    """The pipeline-level states the event stream recorded for one execution, in order."""
    store = Store.from_url(stack.env["CONVEYOR_REDIS_URL"])
    try:
        events = store.events.read(count=100_000)
    finally:
        store.r.close()
    return [
        e["detail"]["state"]
        for _, e in events
        if e["detail"].get("execution-id") == eid and "stage" not in e["detail"]
    ]


def stream(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    """The whole event stream: (stream id, event), in commit order."""
    store = Store.from_url(stack.env["CONVEYOR_REDIS_URL"])
    try:
        return store.events.read(count=100_000)
    finally:
        store.r.close()


def stage_events(stack: Stack, eid: str, after: str = "0") -> list[tuple[str, str]]:
    """(stage, state) of one execution's stage events recorded after stream id ``after``."""
    return [
        (e["detail"]["stage"], e["detail"]["state"])
        for rid, e in stream(stack)
        if e["detail"].get("execution-id") == eid
        and "stage" in e["detail"]
        and "action" not in e["detail"]
        and (after == "0" or _stream_order(rid) > _stream_order(after))
    ]


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def released(marks: Path, eid: str) -> None:
    (marks / f"go-{eid}").touch()


def started(marks: Path, name: str, eid: str, timeout: float = 60) -> None:
    wait_for(
        lambda: (marks / f"{name}-{eid}").exists(),
        timeout,
        message=f"{name} never started for {eid}",
    )


class Occupancy(threading.Thread):
    """Samples ListActionExecutions while a test runs: which executions are InProgress in
    each stage at once. ``peak[stage]`` is the most seen together."""

    def __init__(self, stack: Stack, name: str) -> None:
        super().__init__(daemon=True)
        self.cp, self.name = stack.codepipeline(), name
        self.peak: dict[str, int] = defaultdict(int)
        self.together: list[tuple[str, set[str]]] = []
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.15):
            inside: dict[str, set[str]] = defaultdict(set)
            with contextlib.suppress(Exception):  # the API under load: skip a sample
                for d in action_runs(self.cp, self.name):
                    if d["status"] == "InProgress":
                        inside[d["stageName"]].add(d["pipelineExecutionId"])
                self.samples += 1
            for st, eids in inside.items():
                self.peak[st] = max(self.peak[st], len(eids))
                if len(eids) > 1:
                    self.together.append((st, eids))

    def __enter__(self) -> Occupancy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(10)


def stage_intervals(
    cp: Any, name: str, eids: list[str]
) -> dict[str, list[tuple[float, float, str]]]:
    """Per stage: (first action start, last action update, execution) of each execution."""
    spans: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for eid in eids:
        for d in action_runs(cp, name, eid):
            s, e = epoch(d["startTime"]), epoch(d["lastUpdateTime"])
            lo, hi = spans[d["stageName"]].get(eid, (s, e))
            spans[d["stageName"]][eid] = (min(lo, s), max(hi, e))
    return {st: sorted((lo, hi, eid) for eid, (lo, hi) in per.items()) for st, per in spans.items()}


def assert_one_at_a_time(intervals: dict[str, list[tuple[float, float, str]]]) -> None:
    for st, rows in intervals.items():
        for (_, end, a), (begin, _, b) in pairwise(rows):
            assert begin >= end, f"{a} and {b} were inside {st} together: {rows}"


# ---------------------------------------------------------------------------- 1. SUPERSEDED

SLOW_FINAL = {"step-slow.sh": gate("slow"), "step-final.sh": 'touch "$MARKS/final-$EID"\n'}


def test_superseded_newer_execution_replaces_the_one_waiting_and_stages_hold_one(
    stack: Stack, marks: Path
) -> None:
    cp = stack.codepipeline()
    name = create(
        stack,
        pipeline(
            unique("sup"),
            unique("src"),
            stage("Slow", build("Slow", "slow")),
            stage("Final", build("Final", "final")),
        ),
        {"buildspec.yml": buildspec(marks), **SLOW_FINAL},
    )
    with Occupancy(stack, name) as occupancy:
        first = start(cp, name)
        started(marks, "slow", first)
        second = start(cp, name)
        # The second passes Source and waits at Slow's inbound: Slow holds the first.
        wait_for(
            lambda: (
                stage_state(cp, name, "Slow").get("inboundExecution", {}).get("pipelineExecutionId")
                == second
            ),
            60,
            message="the second execution never waited before Slow",
        )
        third = start(cp, name)
        assert finish(cp, name, second) == "Superseded"
        assert third in execution(cp, name, second).get("statusSummary", "")
        slow = stage_state(cp, name, "Slow")
        assert slow["latestExecution"] == {
            "pipelineExecutionId": first,
            "status": "InProgress",
            "type": "STANDARD",
        }
        assert slow["inboundExecution"]["pipelineExecutionId"] == third
        released(marks, first)
        assert finish(cp, name, first) == "Succeeded"
        started(marks, "slow", third)  # only now, once the first has left Slow
        released(marks, third)
        assert finish(cp, name, third) == "Succeeded"

    assert {("Source", "Fetch")} == set(by_action(cp, name, second))
    assert not (marks / f"slow-{second}").exists()
    assert (marks / f"final-{first}").exists() and (marks / f"final-{third}").exists()
    assert occupancy.samples >= 3 and not occupancy.together, occupancy.together
    assert_one_at_a_time(stage_intervals(cp, name, [first, second, third]))


# ---------------------------------------------------------------------------- 2. QUEUED

RECORD = 'echo "$EID" >> "$MARKS/$STEP"\n'


def test_queued_executions_all_succeed_and_pass_every_stage_in_start_order(
    stack: Stack, marks: Path
) -> None:
    cp = stack.codepipeline()
    name = create(
        stack,
        pipeline(
            unique("queued"),
            unique("src"),
            stage("Build", build("Compile", "compile")),
            stage("Package", build("Package", "package")),
            mode="QUEUED",
        ),
        {"buildspec.yml": buildspec(marks), "step-compile.sh": RECORD, "step-package.sh": RECORD},
    )
    with Occupancy(stack, name) as occupancy:
        eids = [start(cp, name) for _ in range(10)]
        for eid in eids:
            assert finish(cp, name, eid, timeout=120) == "Succeeded"

    intervals = stage_intervals(cp, name, eids)
    assert set(intervals) == {"Source", "Build", "Package"}
    for st, rows in intervals.items():
        assert [eid for _, _, eid in rows] == eids, f"{st} was not passed in start order"
    assert_one_at_a_time(intervals)
    assert occupancy.samples >= 3 and not occupancy.together, occupancy.together
    for step in ("compile", "package"):
        assert (marks / step).read_text().split() == eids, f"{step} ran out of order"
    assert {s["executionMode"] for s in summaries(cp, name)} == {"QUEUED"}


# ---------------------------------------------------------------------------- 3. PARALLEL

# Each build waits until the other has started too: run one at a time, they would never end.
RENDEZVOUS = (
    'touch "$MARKS/rv-$EID"\n'
    f"for i in $(seq {GATE_TICKS}); do\n"
    '  if [ "$(ls "$MARKS" | grep -c ^rv-)" -ge 2 ]; then sleep 2; exit 0; fi\n'
    "  sleep 0.1\n"
    "done\n"
    "echo alone; exit 1\n"
)


def test_parallel_executions_run_the_same_stage_at_the_same_time(stack: Stack, marks: Path) -> None:
    cp = stack.codepipeline()
    name = create(
        stack,
        pipeline(
            unique("par"), unique("src"), stage("Build", build("Slow", "rv")), mode="PARALLEL"
        ),
        {"buildspec.yml": buildspec(marks), "step-rv.sh": RENDEZVOUS},
    )
    with Occupancy(stack, name) as occupancy:
        eids = [start(cp, name), start(cp, name)]
        assert [finish(cp, name, eid) for eid in eids] == ["Succeeded", "Succeeded"]

    (s1, e1, _), (s2, e2, _) = stage_intervals(cp, name, eids)["Build"]
    assert s2 < e1 and s1 < e2, "the two builds did not overlap"
    assert occupancy.peak["Build"] == 2, dict(occupancy.peak)
    assert {s["executionMode"] for s in summaries(cp, name)} == {"PARALLEL"}


# ---------------------------------------------------------------------------- 4. stop


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_and_abandon_kills_the_build_and_stop_and_wait_lets_it_finish(
    stack: Stack, marks: Path
) -> None:
    cp = stack.codepipeline()
    # Stop and abandon: the build's shell and its sleep must die with it.
    sleeper = (
        "version: 0.2\nphases:\n  build:\n    commands:\n"
        f'      - echo $$ > "{marks}/pid-$EID" && sleep 300\n'
    )
    name = create(
        stack,
        pipeline(unique("abandon"), unique("src"), stage("Build", build("Sleep", "none"))),
        {"buildspec.yml": sleeper},
    )
    eid = start(cp, name)
    pid_file = marks / f"pid-{eid}"
    wait_for(
        lambda: pid_file.exists() and pid_file.read_text().strip(),
        60,
        message="the build never recorded its pid",
    )
    shell = psutil.Process(int(pid_file.read_text()))
    sleep = wait_for(lambda: shell.children(), 10, message="no sleep under the build's shell")
    pids = [shell.pid, *(p.pid for p in sleep)]
    assert not any(_gone(p) for p in pids)

    cp.stop_pipeline_execution(
        pipelineName=name, pipelineExecutionId=eid, abandon=True, reason="abandon it"
    )
    assert finish(cp, name, eid, timeout=30) == "Stopped"
    states = pipeline_events(stack, eid)
    assert states[-2:] == ["STOPPING", "STOPPED"], states
    summary = next(s for s in summaries(cp, name) if s["pipelineExecutionId"] == eid)
    assert summary["stopTrigger"] == {"reason": "abandon it"}
    assert by_action(cp, name, eid)[("Build", "Sleep")]["status"] == "Abandoned"
    assert stage_state(cp, name, "Build")["latestExecution"]["status"] == "Stopped"
    wait_for(
        lambda: all(_gone(p) for p in pids),
        10,
        message=f"the abandoned build's processes {pids} outlived it",
    )
    with pytest.raises(cp.exceptions.PipelineExecutionNotStoppableException):
        cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)

    # Stop and wait: the running action finishes, nothing after it starts.
    name = create(
        stack,
        pipeline(
            unique("stopwait"),
            unique("src"),
            stage("Build", build("Hold", "hold"), build("Later", "later", run_order=2)),
            stage("After", build("After", "later")),
        ),
        {
            "buildspec.yml": buildspec(marks),
            "step-hold.sh": gate("hold"),
            "step-later.sh": 'touch "$MARKS/later-$EID"\n',
        },
    )
    eid = start(cp, name)
    started(marks, "hold", eid)
    cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=eid, reason="wait for it")
    assert execution(cp, name, eid)["status"] == "Stopping"
    with pytest.raises(cp.exceptions.DuplicatedStopRequestException):
        cp.stop_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    assert by_action(cp, name, eid)[("Build", "Hold")]["status"] == "InProgress"
    released(marks, eid)
    assert finish(cp, name, eid) == "Stopped"
    runs = by_action(cp, name, eid)
    assert set(runs) == {("Source", "Fetch"), ("Build", "Hold")}
    assert runs[("Build", "Hold")]["status"] == "Succeeded"
    assert not (marks / f"later-{eid}").exists()
    states = pipeline_events(stack, eid)
    assert states.index("STOPPING") < states.index("STOPPED"), states


# ---------------------------------------------------------------------------- 5. retry

RETRY_STEPS = {
    "step-good.sh": 'echo run >> "$MARKS/good-$EID"\nmkdir -p out\necho "$EID" > out/good.txt\n',
    # Fails until the test lets it pass.
    "step-flaky.sh": 'echo run >> "$MARKS/flaky-$EID"\ntest -f "$MARKS/flaky-may-pass"\n',
    # Uses the artifact the first attempt of Good produced.
    "step-after.sh": 'test "$(cat "$CODEBUILD_SRC_DIR_GoodOut/good.txt")" = "$EID"\n'
    'touch "$MARKS/after-$EID"\n',
}


def test_retry_failed_actions_reruns_only_the_failed_one_and_only_for_the_latest(
    stack: Stack, marks: Path
) -> None:
    cp = stack.codepipeline()
    name = create(
        stack,
        pipeline(
            unique("retry"),
            unique("src"),
            stage(
                "Build",
                build("Good", "good", outs=("GoodOut",)),
                build("Flaky", "flaky", category="Test"),
            ),
            stage(
                "After",
                build("After", "after", ins=("SourceOutput", "GoodOut"), primary="SourceOutput"),
            ),
        ),
        {"buildspec.yml": buildspec(marks, outputs=True), **RETRY_STEPS},
    )
    older = start(cp, name)
    assert finish(cp, name, older) == "Failed"
    newer = start(cp, name)
    assert finish(cp, name, newer) == "Failed"
    # The newer execution has entered Build since: the older may not be retried there.
    with pytest.raises(cp.exceptions.NotLatestPipelineExecutionException):
        cp.retry_stage_execution(
            pipelineName=name,
            stageName="Build",
            pipelineExecutionId=older,
            retryMode="FAILED_ACTIONS",
        )

    before = by_action(cp, name, newer)
    assert before[("Build", "Good")]["status"] == "Succeeded"
    assert before[("Build", "Flaky")]["status"] == "Failed"
    assert ("After", "After") not in before
    (marks / "flaky-may-pass").touch()
    answer = cp.retry_stage_execution(
        pipelineName=name,
        stageName="Build",
        pipelineExecutionId=newer,
        retryMode="FAILED_ACTIONS",
    )
    assert answer["pipelineExecutionId"] == newer
    assert finish(cp, name, newer) == "Succeeded"

    after = by_action(cp, name, newer)
    assert after[("Build", "Good")] == before[("Build", "Good")]  # untouched, same artifact
    assert (marks / f"good-{newer}").read_text().split() == ["run"]
    assert (marks / f"flaky-{newer}").read_text().split() == ["run", "run"]
    assert after[("Build", "Flaky")]["status"] == "Succeeded"
    # Each run of the retried action is listed under its own id, as on AWS.
    flaky = [d for d in action_runs(cp, name, newer) if d["actionName"] == "Flaky"]
    assert [d["status"] for d in flaky] == ["Succeeded", "Failed"]
    assert len({d["actionExecutionId"] for d in flaky}) == 2
    assert after[("After", "After")]["status"] == "Succeeded"
    assert (marks / f"after-{newer}").exists()
    retry = stage_state(cp, name, "Build")["retryStageMetadata"]
    assert retry["manualStageRetryAttempt"] == 1
    assert retry["latestRetryTrigger"] == "ManualStageRetry"
    assert execution(cp, name, older)["status"] == "Failed"  # the older stays as it was


# ---------------------------------------------------------------------------- 6. transitions


def test_disabled_inbound_transition_holds_the_execution_until_enabled(
    stack: Stack, marks: Path
) -> None:
    cp = stack.codepipeline()
    name = create(
        stack,
        pipeline(
            unique("gate"),
            unique("src"),
            stage("Build", build("Compile", "mark")),
            stage("Deploy", build("Ship", "mark")),
        ),
        {"buildspec.yml": buildspec(marks), "step-mark.sh": 'touch "$MARKS/$STEP-$EID"\n'},
    )
    reason = "change freeze until the audit is over"
    cp.disable_stage_transition(
        pipelineName=name, stageName="Deploy", transitionType="Inbound", reason=reason
    )
    eid = start(cp, name)

    def at_deploy() -> dict[str, Any]:
        state = stage_state(cp, name, "Deploy")
        return state if "inboundExecution" in state else {}

    deploy = wait_for(at_deploy, 60, message="the execution never reached Deploy's inbound")
    assert deploy["inboundExecution"]["pipelineExecutionId"] == eid
    assert deploy["inboundTransitionState"]["enabled"] is False
    assert deploy["inboundTransitionState"]["disabledReason"] == reason
    assert "latestExecution" not in deploy
    assert stage_state(cp, name, "Build")["latestExecution"]["status"] == "Succeeded"

    # Up to the moment the transition is enabled, the stream recorded Build succeeding and
    # nothing of Deploy: the execution waited behind the disabled transition.
    before_enable = stream(stack)[-1][0]
    assert stage_events(stack, eid) == [
        ("Source", "STARTED"),
        ("Source", "SUCCEEDED"),
        ("Build", "STARTED"),
        ("Build", "SUCCEEDED"),
    ]
    assert execution(cp, name, eid)["status"] == "InProgress"
    cp.enable_stage_transition(pipelineName=name, stageName="Deploy", transitionType="Inbound")
    assert finish(cp, name, eid) == "Succeeded"
    assert by_action(cp, name, eid)[("Deploy", "Ship")]["status"] == "Succeeded"
    assert stage_events(stack, eid, after=before_enable) == [
        ("Deploy", "STARTED"),
        ("Deploy", "SUCCEEDED"),
    ]
    deploy = stage_state(cp, name, "Deploy")
    assert deploy["inboundTransitionState"]["enabled"] is True
    assert "inboundExecution" not in deploy


# ---------------------------------------------------------------------------- 7. rollback

ROLLBACK_STEPS = {
    "step-build.sh": (
        'mkdir -p out\ncp VERSION out/\necho "version $(cat VERSION)" > out/index.html\n'
    ),
    "step-check.sh": 'test "$(cat VERSION)" != 2 || { echo "version 2 is broken"; exit 1; }\n',
}


def test_failed_deploy_rolls_back_automatically_to_the_last_good_execution(
    stack: Stack, marks: Path
) -> None:
    cp, s3 = stack.codepipeline(), stack.s3()
    site = unique("site")
    s3.create_bucket(Bucket=site)
    definition = pipeline(
        unique("rollback"),
        unique("src"),
        stage("Build", build("Build", "build", outs=("BuildOutput",))),
        stage(
            "Deploy",
            action(
                "Upload",
                "Deploy",
                "S3",
                config={"BucketName": site, "Extract": "true"},
                ins=("BuildOutput",),
            ),
            build("Check", "check", category="Test", run_order=2),
            onFailure={"result": "ROLLBACK"},
        ),
    )
    src = definition["stages"][0]["actions"][0]["configuration"]["S3Bucket"]
    files = {"buildspec.yml": buildspec(marks, outputs=True), **ROLLBACK_STEPS}
    name = create(stack, definition, {**files, "VERSION": "1"})

    def site_index() -> bytes:
        return bytes(s3.get_object(Bucket=site, Key="index.html")["Body"].read())

    good = start(cp, name)
    assert finish(cp, name, good) == "Succeeded"
    assert site_index() == b"version 1\n"

    put_source(s3, src, {**files, "VERSION": "2"})
    bad = start(cp, name)
    assert finish(cp, name, bad) == "Failed"
    runs = by_action(cp, name, bad)
    assert runs[("Deploy", "Upload")]["status"] == "Succeeded"  # v2 went out first
    assert runs[("Deploy", "Check")]["status"] == "Failed"

    def rollback() -> dict[str, Any]:
        return next((s for s in summaries(cp, name) if s.get("executionType") == "ROLLBACK"), {})

    found = wait_for(rollback, 30, message="no rollback execution started")
    rid = found["pipelineExecutionId"]
    assert finish(cp, name, rid) == "Succeeded"
    found = rollback()
    assert found["trigger"]["triggerType"] == "AutomatedRollback"
    assert found["rollbackMetadata"] == {"rollbackTargetPipelineExecutionId": good}
    rolled = by_action(cp, name, rid)
    assert set(rolled) == {("Deploy", "Upload"), ("Deploy", "Check")}  # that stage alone
    assert (
        rolled[("Deploy", "Upload")]["input"]["inputArtifacts"]
        == (by_action(cp, name, good)[("Deploy", "Upload")]["input"]["inputArtifacts"])
    )
    assert site_index() == b"version 1\n"
    assert s3.get_object(Bucket=site, Key="VERSION")["Body"].read() == b"1"
    assert len([s for s in summaries(cp, name) if s.get("executionType") == "ROLLBACK"]) == 1


# ---------------------------------------------------------------------------- 8. conditions


def _window_stage(cron: str) -> dict[str, Any]:
    rule = {
        "name": "Window",
        "ruleTypeId": {
            "category": "Rule",
            "owner": "AWS",
            "provider": "DeploymentWindow",
            "version": "1",
        },
        "configuration": {"Cron": cron, "TimeZone": "UTC"},
    }
    return stage(
        "Release",
        build("Ship", "mark"),
        beforeEntry={"conditions": [{"result": "FAIL", "rules": [rule]}]},
    )


def _window_rule(cp: Any, name: str, eid: str) -> dict[str, Any]:
    [rule] = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "ruleExecutionDetails"
    ]
    assert (rule["pipelineExecutionId"], rule["stageName"], rule["ruleName"]) == (
        eid,
        "Release",
        "Window",
    )
    return dict(rule)


def _held(cp: Any, name: str, eid: str) -> dict[str, Any]:
    """Wait until the Release stage is held by its waiting window rule; that rule."""

    def waiting() -> dict[str, Any] | None:
        rules = cp.list_rule_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
        for rule in rules["ruleExecutionDetails"]:
            if rule["status"] == "InProgress" and rule.get("output"):
                return dict(rule)
        return None

    return wait_for(waiting, 60, interval=0.3, message=f"{name} never waited for its window")


def test_deployment_window_holds_a_closed_stage_and_passes_an_open_one(
    stack: Stack, marks: Path
) -> None:
    """As AWS's rule reference describes: a closed window holds the stage, in progress,
    until the window opens (or the condition is overridden); it does not fail it. A window
    that never opens again does fail it."""
    cp = stack.codepipeline()
    files = {"buildspec.yml": buildspec(marks), "step-mark.sh": 'touch "$MARKS/$STEP-$EID"\n'}
    now = datetime.now(UTC)
    if now.second > 45:  # leave the next test minute enough room to be seen closed first
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    # Only minute (now + 30) of each hour: closed for the next 29 minutes at least.
    closed_minute = (now.minute + 30) % 60
    closed = create(
        stack,
        pipeline(unique("closed"), unique("src"), _window_stage(f"* {closed_minute} * * * ?")),
        files,
    )
    # Opens at the next minute: the stage moves on by itself when the window opens.
    soon = create(
        stack,
        pipeline(
            unique("soon"), unique("src"), _window_stage(f"* {(now.minute + 1) % 60} * * * ?")
        ),
        files,
    )
    opened = create(
        stack, pipeline(unique("open"), unique("src"), _window_stage("* * * * * ?")), files
    )
    never = create(
        stack, pipeline(unique("never"), unique("src"), _window_stage("* * * * * ? 1999")), files
    )
    shut, later, ran, gone = start(cp, closed), start(cp, soon), start(cp, opened), start(cp, never)

    # Held: the execution and the stage in progress, the rule waiting and saying until when.
    rule = _held(cp, closed, shut)
    summary = rule["output"]["executionResult"]["externalExecutionSummary"]
    assert summary.startswith("waiting for deployment window"), summary
    assert ": it opens at " in summary, summary
    assert execution(cp, closed, shut)["status"] == "InProgress"
    release = stage_state(cp, closed, "Release")
    assert release["latestExecution"]["status"] == "InProgress"
    assert release["beforeEntryConditionState"]["latestExecution"]["status"] == "InProgress"
    assert set(by_action(cp, closed, shut)) == {("Source", "Fetch")}
    _held(cp, soon, later)

    # Overriding the entry condition lets the held execution in at once.
    cp.override_stage_condition(
        pipelineName=closed,
        stageName="Release",
        pipelineExecutionId=shut,
        conditionType="BEFORE_ENTRY",
    )
    assert finish(cp, closed, shut) == "Succeeded"
    assert (marks / f"mark-{shut}").exists()
    assert _window_rule(cp, closed, shut)["status"] == "Abandoned"

    # Time moves: the window opens and the held stage goes on by itself.
    assert finish(cp, soon, later, timeout=120) == "Succeeded"
    assert _window_rule(cp, soon, later)["status"] == "Succeeded"

    assert finish(cp, opened, ran) == "Succeeded"
    assert (marks / f"mark-{ran}").exists()
    assert (_window_rule(cp, opened, ran)["status"]) == "Succeeded"
    assert by_action(cp, opened, ran)[("Release", "Ship")]["status"] == "Succeeded"

    assert finish(cp, never, gone) == "Failed"
    failed = execution(cp, never, gone)["statusSummary"]
    assert "entry condition not met" in failed and "does not open again" in failed, failed
    assert _window_rule(cp, never, gone)["status"] == "Failed"


def test_list_rule_types_describes_the_rules_conditions_can_use(stack: Stack) -> None:
    types = stack.codepipeline().list_rule_types()["ruleTypes"]
    by_provider = {t["id"]["provider"]: t for t in types}
    assert {"DeploymentWindow", "VariableCheck", "Commands"} <= set(by_provider)
    assert all(t["id"]["category"] == "Rule" and t["id"]["owner"] == "AWS" for t in types)
    window = {p["name"]: p for p in by_provider["DeploymentWindow"]["ruleConfigurationProperties"]}
    assert window["Cron"]["required"] is True
    assert window["TimeZone"]["required"] is False


# ---------------------------------------------------------------------------- 9. polling


def test_a_new_source_object_version_starts_exactly_one_polled_execution(
    stack: Stack, marks: Path
) -> None:
    cp, s3 = stack.codepipeline(), stack.s3()
    definition = pipeline(
        unique("poll"), unique("src"), stage("Build", build("Mark", "mark")), poll=True
    )
    src = definition["stages"][0]["actions"][0]["configuration"]["S3Bucket"]
    files = {"buildspec.yml": buildspec(marks), "step-mark.sh": 'touch "$MARKS/$STEP-$EID"\n'}
    name = create(stack, definition, files)
    first = s3.head_object(Bucket=src, Key="app.zip")["VersionId"]
    beat_log = stack.processes["beat"].log_path
    assert beat_log is not None
    wait_for(
        lambda: log_contains(beat_log, f"pipeline {name}: Source.Fetch baseline revision {first}"),
        30,
        message="beat never took the source's baseline",
    )
    assert summaries(cp, name) == []  # a baseline starts nothing

    body = zip_bytes({**files, "VERSION": "2"})
    second = s3.put_object(Bucket=src, Key="app.zip", Body=body)["VersionId"]
    [polled] = wait_for(lambda: summaries(cp, name), 30, message="no execution was polled")
    eid = polled["pipelineExecutionId"]
    assert polled["trigger"]["triggerType"] == "PollForSourceChanges"
    assert polled["sourceRevisions"][0]["actionName"] == "Fetch"
    assert polled["sourceRevisions"][0]["revisionId"] == second
    assert finish(cp, name, eid) == "Succeeded"

    # It built what that version held.
    fetched = by_action(cp, name, eid)[("Source", "Fetch")]["output"]["outputArtifacts"][0]
    loc = fetched["s3location"]
    artifact = s3.get_object(Bucket=loc["bucket"], Key=loc["key"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(artifact)) as zf:
        assert zf.read("VERSION") == b"2"

    # Beat went on polling (every second) while that execution ran and after: version 2
    # was seen again and again. A third version then starts exactly one more execution, and
    # the stream holds exactly two starts, one per version.
    third = s3.put_object(Bucket=src, Key="app.zip", Body=zip_bytes({**files, "VERSION": "3"}))
    newest = wait_for(
        lambda: [x for x in summaries(cp, name) if x["pipelineExecutionId"] != eid],
        30,
        message="the third version was never polled",
    )
    assert [x["sourceRevisions"][0]["revisionId"] for x in newest] == [third["VersionId"]]
    assert finish(cp, name, newest[0]["pipelineExecutionId"]) == "Succeeded"
    starts = [
        e["detail"]["execution-id"]
        for _, e in stream(stack)
        if e["detail"]["pipeline"] == name
        and e["detail-type"] == "CodePipeline Pipeline Execution State Change"
        and e["detail"]["state"] == "STARTED"
    ]
    assert starts == [eid, newest[0]["pipelineExecutionId"]]
