"""Property tests of the pure transition function: duplicated and reordered events, many
executions racing through one pipeline in each execution mode."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definition import PipelineDeclaration
from engine.execution import (
    ActionResult,
    ActionStatus,
    ArtifactLocation,
    ExecutionState,
    ExecutionStatus,
    StageStatus,
)
from engine.messages import (
    ActionCompleted,
    ApprovalAnswered,
    Dispatch,
    Effect,
    Emit,
    Event,
    LeaseExpired,
    RetryRequested,
    Started,
    StopRequested,
    TimerFired,
    TransitionChanged,
    new_execution,
)
from engine.run import PipelineRun
from engine.scheduler import decide


def _action(
    name: str, category: str, provider: str, run_order: int, ins: list[str], outs: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "AWS",
            "provider": provider,
            "version": "1",
        },
        "runOrder": run_order,
        "inputArtifacts": [{"name": n} for n in ins],
        "outputArtifacts": [{"name": n} for n in outs],
        "configuration": {"ProjectName": "p-#{codepipeline.PipelineExecutionId}"},
    }


def pipeline(mode: str = "SUPERSEDED", approval: bool = True) -> PipelineDeclaration:
    stages = [
        {"name": "Source", "actions": [_action("Src", "Source", "S3", 1, [], ["Src"])]},
        {
            "name": "Build",
            "actions": [
                _action("A", "Build", "CodeBuild", 1, ["Src"], ["A"]),
                _action("B", "Build", "CodeBuild", 1, ["Src"], ["B"]),
                _action("C", "Test", "CodeBuild", 2, ["A"], []),
            ],
        },
    ]
    if approval:
        stages.append(
            {"name": "Approve", "actions": [_action("Gate", "Approval", "Manual", 1, [], [])]}
        )
    stages.append({"name": "Deploy", "actions": [_action("D", "Deploy", "S3", 1, ["A"], [])]})
    return PipelineDeclaration.model_validate(
        {"name": "prop", "executionMode": mode, "stages": stages}
    )


def result_for(
    decl: PipelineDeclaration, stage: str, action: str, ok: bool, attempt: int
) -> ActionResult:
    sd = decl.stage(stage)
    assert sd is not None
    ad = next(a for a in sd.actions if a.name == action)
    return ActionResult(
        succeeded=ok,
        error_message=None if ok else f"{action} broke",
        output_artifacts=[
            ArtifactLocation(name=o.name, bucket="b", key=f"{o.name}/{attempt}")
            for o in ad.output_artifacts
        ]
        if ok
        else [],
    )


class World:
    """Drives decide() like the store would, checking invariants on every transition."""

    def __init__(self, mode: str = "SUPERSEDED", approval: bool = True) -> None:
        self.decl = pipeline(mode, approval)
        self.order = [s.name for s in self.decl.stages]
        self.mode = mode
        self.run = PipelineRun(name="prop")
        self.all: dict[str, ExecutionState] = {}
        self.dispatched: Counter[tuple[str, str, str, int]] = Counter()
        self.started: Counter[tuple[str, str, str, int]] = Counter()
        self.entered: dict[str, list[str]] = {s: [] for s in self.order}
        self.accepted: dict[tuple[str, str, str], ActionResult] = {}
        self.stopped: set[str] = set()
        self.n = 0

    def start(self, now: float) -> str:
        self.n += 1
        eid = f"e{self.n:03d}"
        ex = new_execution(
            execution_id=eid,
            definition=self.decl,
            version=1,
            artifact_bucket="b",
            now=now,
            variables={},
        )
        self.step(Started(now=now, execution=ex))
        return eid

    def ex(self, eid: str) -> ExecutionState:
        return self.run.executions.get(eid) or self.all[eid]

    def step(self, event: Event) -> None:
        before = self.run
        after, effects = decide(before, event)
        if after is before:
            assert effects == []
            return
        self._check(before, after, event, effects)
        for ex in [*after.executions.values(), *after.finished.values()]:
            self.all[ex.execution_id] = ex
        after.finished = {}
        self.run = after

    def _check(
        self, before: PipelineRun, after: PipelineRun, event: Event, effects: list[Effect]
    ) -> None:
        current = {**{e.execution_id: e for e in after.finished.values()}, **after.executions}
        for eff in effects:
            if isinstance(eff, Dispatch):
                key = (eff.execution_id, eff.stage, eff.action, eff.attempt)
                self.dispatched[key] += 1
                assert self.dispatched[key] == 1, f"dispatched twice: {key}"
            elif isinstance(eff, Emit) and eff.level == "action" and eff.state == "STARTED":
                assert eff.stage is not None and eff.action is not None
                ex = current[eff.execution_id]
                act = ex.action(eff.stage, eff.action)
                assert act is not None
                key = (eff.execution_id, eff.stage, eff.action, act.attempt)
                self.started[key] += 1
                assert self.started[key] == 1, f"group started twice: {key}"
                assert eff.execution_id not in self.stopped, "action started after a stop"
            elif isinstance(eff, Emit) and eff.level == "stage" and eff.state == "STARTED":
                assert eff.stage is not None
                ex = current[eff.execution_id]
                idx = self.order.index(eff.stage)
                if ex.execution_type == "STANDARD":
                    for prev in ex.stages[:idx]:
                        assert prev.status in (StageStatus.SUCCEEDED, StageStatus.SKIPPED), (
                            f"{eff.stage} started before {prev.name} succeeded"
                        )
                self.entered[eff.stage].append(eff.execution_id)
        # Never a lost result: an accepted completion stays recorded (until a retry resets it).
        if isinstance(event, ActionCompleted):
            ex_b = before.executions.get(event.execution_id)
            act_b = ex_b.action(event.stage, event.action) if ex_b else None
            if (
                act_b
                and act_b.status is ActionStatus.IN_PROGRESS
                and act_b.attempt == event.attempt
            ):
                ex_a = current[event.execution_id]
                act_a = ex_a.action(event.stage, event.action)
                assert act_a is not None
                retried = act_a.attempt > event.attempt  # an automatic stage retry began
                assert retried or act_a.result == event.result, "lost result"
        if isinstance(event, StopRequested):
            self.stopped.add(event.execution_id)
        # Stage locks: at most one execution inside a stage, except in PARALLEL.
        if self.mode != "PARALLEL":
            for stage in self.order:
                inside = [
                    e.execution_id
                    for e in after.executions.values()
                    if (s := e.stage(stage)) is not None
                    and s.status is StageStatus.IN_PROGRESS
                    and e.waiting_for is None
                ]
                assert len(inside) <= 1, f"two executions in {stage}: {inside}"
        for ex in after.finished.values():
            if ex.status is ExecutionStatus.SUPERSEDED:
                assert self.mode == "SUPERSEDED", "superseded outside SUPERSEDED mode"
        assert not (set(after.executions) & set(after.finished))

    def running(self) -> list[tuple[ExecutionState, Any]]:
        return [
            (ex, a)
            for ex in self.run.executions.values()
            for s in ex.stages
            for a in s.actions
            if a.status is ActionStatus.IN_PROGRESS
        ]


MOVES = [
    "start",
    "deliver",
    "deliver",
    "deliver",
    "deliver",
    "duplicate",
    "approve",
    "reject",
    "stop",
    "abandon",
    "lease",
    "timer",
    "retry",
    "disable",
    "enable",
]


@pytest.mark.parametrize("mode", ["SUPERSEDED", "QUEUED", "PARALLEL"])
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_random_interleavings_keep_invariants(mode: str, data: st.DataObject) -> None:
    w = World(mode)
    now = 1.0
    pending: list[ActionCompleted] = []
    w.start(now)
    for _ in range(80):
        now += 1.0
        for ex, a in w.running():
            if a.token is None and not any(
                p.execution_id == ex.execution_id
                and p.stage == a.stage
                and p.action == a.name
                and p.attempt == a.attempt
                for p in pending
            ):
                ok = data.draw(st.sampled_from([True, True, True, False]), label="ok")
                pending.append(
                    ActionCompleted(
                        now=now,
                        execution_id=ex.execution_id,
                        stage=a.stage,
                        action=a.name,
                        attempt=a.attempt,
                        result=result_for(w.decl, a.stage, a.name, ok, a.attempt),
                    )
                )
        move = data.draw(st.sampled_from(MOVES), label="move")
        ids = sorted(w.run.executions)
        if move == "start" and w.n < 6:
            w.start(now)
        elif move in ("deliver", "duplicate") and pending:
            i = data.draw(st.integers(0, len(pending) - 1), label="which")
            w.step(pending[i] if move == "duplicate" else pending.pop(i))
        elif move in ("approve", "reject"):
            gates = [(ex, a) for ex, a in w.running() if a.token]
            if gates:
                ex, a = data.draw(st.sampled_from(gates), label="gate")
                w.step(
                    ApprovalAnswered(
                        now=now,
                        execution_id=ex.execution_id,
                        stage=a.stage,
                        action=a.name,
                        token=a.token,
                        approved=move == "approve",
                    )
                )
        elif move in ("stop", "abandon") and ids:
            eid = data.draw(st.sampled_from(ids), label="stop")
            w.step(StopRequested(now=now, execution_id=eid, abandon=move == "abandon"))
        elif move == "lease" and w.running():
            ex, a = data.draw(st.sampled_from(w.running()), label="lease")
            w.step(
                LeaseExpired(
                    now=now,
                    execution_id=ex.execution_id,
                    stage=a.stage,
                    action=a.name,
                    attempt=a.attempt,
                )
            )
        elif move == "timer":
            w.step(TimerFired(now=now + data.draw(st.sampled_from([0, 10**7]), label="dt")))
        elif move == "retry":
            failed = [e for e in w.all.values() if e.status is ExecutionStatus.FAILED]
            if failed:
                ex = data.draw(st.sampled_from(failed), label="retry")
                stage = next((s.name for s in ex.stages if s.status is StageStatus.FAILED), None)
                if stage:
                    w.step(
                        RetryRequested(
                            now=now,
                            execution=ex,
                            stage=stage,
                            mode=data.draw(
                                st.sampled_from(["FAILED_ACTIONS", "ALL_ACTIONS"]), label="rm"
                            ),
                        )
                    )
        elif move in ("disable", "enable"):
            stage = data.draw(st.sampled_from(w.order[1:]), label="stage")
            w.step(TransitionChanged(now=now, stage=stage, enabled=move == "enable", reason="hold"))
    # Let everything drain: enable transitions, approve gates, complete all work.
    for stage in w.order:
        w.step(TransitionChanged(now=now, stage=stage, enabled=True))
    for _ in range(200):
        if not w.run.executions:
            break
        now += 1
        for ex, a in w.running():
            if a.token:
                w.step(
                    ApprovalAnswered(
                        now=now,
                        execution_id=ex.execution_id,
                        stage=a.stage,
                        action=a.name,
                        token=a.token,
                        approved=True,
                    )
                )
            else:
                w.step(
                    ActionCompleted(
                        now=now,
                        execution_id=ex.execution_id,
                        stage=a.stage,
                        action=a.name,
                        attempt=a.attempt,
                        result=result_for(w.decl, a.stage, a.name, True, a.attempt),
                    )
                )
    assert not w.run.executions, f"executions never finished: {list(w.run.executions)}"
    assert all(not lane.waiting and lane.occupant is None for lane in w.run.lanes.values())
    if mode == "QUEUED":
        starts = sorted(w.all, key=lambda e: w.all[e].start_time)
        for stage in w.order:
            # A retried execution re-enters behind newer ones: FIFO is about first passage.
            seen = [
                e
                for e in w.entered[stage]
                if w.all[e].execution_type == "STANDARD"
                and not any(s.retries for s in w.all[e].stages)
            ]
            firsts = list(dict.fromkeys(seen))
            assert firsts == [e for e in starts if e in firsts], f"FIFO broken in {stage}"


def drive(
    w: World,
    eid: str,
    now: float,
    *,
    approve: bool = True,
    fail: set[str] = frozenset(),
    until: str | None = None,
) -> float:
    """Complete eid's work in order; stop before entering ``until`` is needed."""
    for _ in range(50):
        ex = w.ex(eid)
        if ex.status.terminal:
            break
        acts = [a for s in ex.stages for a in s.actions if a.status is ActionStatus.IN_PROGRESS]
        if not acts or (until and ex.stage(until) and ex.stage(until).status is not None):
            break
        now += 1
        for a in acts:
            if a.token:
                w.step(
                    ApprovalAnswered(
                        now=now,
                        execution_id=eid,
                        stage=a.stage,
                        action=a.name,
                        token=a.token,
                        approved=approve,
                        summary="looks good",
                    )
                )
            else:
                w.step(
                    ActionCompleted(
                        now=now,
                        execution_id=eid,
                        stage=a.stage,
                        action=a.name,
                        attempt=a.attempt,
                        result=result_for(w.decl, a.stage, a.name, a.name not in fail, a.attempt),
                    )
                )
    return now


def test_happy_path_runs_every_stage_in_order() -> None:
    w = World()
    eid = w.start(1.0)
    drive(w, eid, 1.0)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.SUCCEEDED
    assert [s for s in w.order if eid in w.entered[s]] == w.order
    c = ex.action("Build", "C")
    assert c is not None and [i.name for i in c.input_artifacts] == ["A"]
    assert c.resolved_configuration["ProjectName"] == f"p-{eid}"


def test_rejection_fails_and_nothing_deploys() -> None:
    w = World()
    eid = w.start(1.0)
    drive(w, eid, 1.0, approve=False)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert ex.stage("Deploy").status is None  # type: ignore[union-attr]
    assert "Rejected" in (ex.status_summary or "")


def test_failed_action_fails_stage_only_after_its_group() -> None:
    w = World()
    eid = w.start(1.0)
    r = lambda s, a, ok: ActionCompleted(  # noqa: E731
        now=5,
        execution_id=eid,
        stage=s,
        action=a,
        attempt=1,
        result=result_for(w.decl, s, a, ok, 1),
    )
    w.step(r("Source", "Src", True))
    w.step(r("Build", "A", False))
    assert w.ex(eid).stage("Build").status is StageStatus.IN_PROGRESS  # type: ignore[union-attr]
    w.step(r("Build", "B", True))
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert ex.action("Build", "C").status is None  # type: ignore[union-attr]
    assert ex.status_summary == "Build.A: A broke"


def test_lease_expiry_redispatches_next_attempt_and_ignores_the_old_one() -> None:
    w = World()
    eid = w.start(1.0)
    w.step(LeaseExpired(now=2, execution_id=eid, stage="Source", action="Src", attempt=1))
    assert w.ex(eid).action("Source", "Src").attempt == 2  # type: ignore[union-attr]
    w.step(
        ActionCompleted(
            now=3,
            execution_id=eid,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for(w.decl, "Source", "Src", True, 1),
        )
    )
    assert w.ex(eid).action("Source", "Src").status is ActionStatus.IN_PROGRESS  # type: ignore[union-attr]
    w.step(
        ActionCompleted(
            now=4,
            execution_id=eid,
            stage="Source",
            action="Src",
            attempt=2,
            result=result_for(w.decl, "Source", "Src", True, 2),
        )
    )
    assert w.ex(eid).artifacts["Src"].key == "Src/2"


def test_approval_times_out_after_default_seven_days() -> None:
    w = World()
    eid = w.start(0.0)
    drive(w, eid, 0.0, until="Approve")
    gate = w.ex(eid).action("Approve", "Gate")
    assert gate is not None and gate.deadline is not None
    w.step(TimerFired(now=gate.deadline - 1))
    assert w.ex(eid).status is ExecutionStatus.IN_PROGRESS
    w.step(TimerFired(now=gate.deadline))
    assert w.ex(eid).status is ExecutionStatus.FAILED


def test_superseded_waiting_execution_is_replaced_by_a_newer_one() -> None:
    w = World("SUPERSEDED", approval=False)
    first = w.start(1.0)
    # first finishes Source and Build's group 1 stays running: Build is locked.
    w.step(
        ActionCompleted(
            now=2,
            execution_id=first,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for(w.decl, "Source", "Src", True, 1),
        )
    )
    second = w.start(3.0)
    w.step(
        ActionCompleted(
            now=4,
            execution_id=second,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for(w.decl, "Source", "Src", True, 1),
        )
    )
    assert w.ex(second).waiting_for == "Build"
    third = w.start(5.0)
    w.step(
        ActionCompleted(
            now=6,
            execution_id=third,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for(w.decl, "Source", "Src", True, 1),
        )
    )
    assert w.ex(second).status is ExecutionStatus.SUPERSEDED
    assert w.ex(third).waiting_for == "Build"
    drive(w, first, 10)
    assert w.ex(first).status is ExecutionStatus.SUCCEEDED
    drive(w, third, 20)
    assert w.ex(third).status is ExecutionStatus.SUCCEEDED


def test_queued_executions_pass_in_arrival_order() -> None:
    w = World("QUEUED", approval=False)
    ids = [w.start(float(i)) for i in range(1, 5)]
    now = 10.0
    for _ in range(40):
        if not w.run.executions:
            break
        now = drive(w, sorted(w.run.executions)[0], now)
        for eid in list(w.run.executions):
            ex = w.ex(eid)
            if ex.current_stage >= 0 and ex.waiting_for is None:
                now = drive(w, eid, now)
    assert all(w.ex(e).status is ExecutionStatus.SUCCEEDED for e in ids)
    for stage in w.order:
        assert w.entered[stage] == ids


def test_disabled_transition_holds_and_enabling_releases() -> None:
    w = World("SUPERSEDED", approval=False)
    w.step(TransitionChanged(now=0.5, stage="Build", enabled=False, reason="freeze"))
    eid = w.start(1.0)
    drive(w, eid, 1.0)
    assert w.ex(eid).waiting_for == "Build"
    assert w.run.lanes["Build"].waiting == [eid]
    w.step(TransitionChanged(now=9, stage="Build", enabled=True))
    assert w.ex(eid).waiting_for is None
    drive(w, eid, 10)
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED


def test_retry_failed_actions_keeps_succeeded_sibling() -> None:
    w = World(approval=False)
    eid = w.start(1.0)
    drive(w, eid, 1.0, fail={"A"})
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    b_result = ex.action("Build", "B").result  # type: ignore[union-attr]
    w.step(RetryRequested(now=50, execution=ex, stage="Build", mode="FAILED_ACTIONS"))
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.IN_PROGRESS
    assert ex.action("Build", "A").attempt == 2  # type: ignore[union-attr]
    assert ex.action("Build", "B").result == b_result  # type: ignore[union-attr]
    drive(w, eid, 60)
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED


def test_limit_of_active_executions_in_parallel_mode() -> None:
    w = World("PARALLEL", approval=False)
    for i in range(50):
        w.start(float(i))
    assert len(w.run.executions) == 50
    w.start(99.0)
    assert len(w.run.executions) == 50


def _with_stage_fields(mode: str = "SUPERSEDED", **deploy_fields: Any) -> World:
    w = World(mode, approval=False)
    raw = w.decl.to_aws()
    raw["stages"][-1].update(deploy_fields)
    raw["variables"] = [{"name": "Env", "defaultValue": "prod"}]
    w.decl = PipelineDeclaration.model_validate(raw)
    return w


def test_on_failure_rollback_redeploys_the_last_successful_artifacts() -> None:
    w = _with_stage_fields(onFailure={"result": "ROLLBACK"})
    good = w.start(1.0)
    drive(w, good, 1.0)
    assert w.ex(good).status is ExecutionStatus.SUCCEEDED
    bad = w.start(20.0)
    drive(w, bad, 20.0, fail={"D"})
    assert w.ex(bad).status is ExecutionStatus.FAILED
    [rollback] = [e for e in w.run.executions.values() if e.execution_type == "ROLLBACK"]
    assert rollback.rollback_target == good and rollback.trigger_type == "AutomatedRollback"
    deploy = rollback.action("Deploy", "D")
    assert deploy is not None and deploy.status is ActionStatus.IN_PROGRESS
    assert deploy.input_artifacts == [w.ex(good).artifacts["A"]]
    drive(w, rollback.execution_id, 40.0)
    done = w.ex(rollback.execution_id)
    assert done.status is ExecutionStatus.SUCCEEDED
    assert done.stage("Build").status is None  # type: ignore[union-attr]


def test_on_failure_retry_runs_the_stage_once_more() -> None:
    w = _with_stage_fields(
        onFailure={"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}}
    )
    eid = w.start(1.0)
    drive(w, eid, 1.0, fail={"D"})  # fails, retried automatically, fails again
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert ex.action("Deploy", "D").attempt == 2  # type: ignore[union-attr]


def _rule(name: str, provider: str, config: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
        "configuration": config,
    }


@pytest.mark.parametrize(
    ("value", "result", "status"),
    [
        ("prod", "FAIL", StageStatus.SUCCEEDED),
        ("staging", "FAIL", StageStatus.FAILED),
        ("staging", "SKIP", StageStatus.SKIPPED),
    ],
)
def test_before_entry_variable_check(value: str, result: str, status: StageStatus) -> None:
    w = _with_stage_fields(
        beforeEntry={
            "conditions": [
                {
                    "result": result,
                    "rules": [
                        _rule(
                            "EnvIsProd",
                            "VariableCheck",
                            {"Variable": "#{variables.Env}", "Value": value, "Operator": "EQ"},
                        )
                    ],
                }
            ]
        }
    )
    eid = w.start(1.0)
    drive(w, eid, 1.0)
    ex = w.ex(eid)
    assert ex.stage("Deploy").status is status  # type: ignore[union-attr]
    ran = ex.action("Deploy", "D").status is not None  # type: ignore[union-attr]
    assert ran == (status is StageStatus.SUCCEEDED)
    expected = ExecutionStatus.FAILED if status is StageStatus.FAILED else ExecutionStatus.SUCCEEDED
    assert ex.status is expected


def test_closed_deployment_window_keeps_the_stage_from_entering() -> None:
    # Only at 03:00 UTC on the 1st of January: closed at epoch 1e6 (Jan 12 1970).
    w = _with_stage_fields(
        beforeEntry={
            "conditions": [
                {
                    "result": "FAIL",
                    "rules": [
                        _rule(
                            "Window", "DeploymentWindow", {"Cron": "* 0 3 1 1 ?", "TimeZone": "UTC"}
                        )
                    ],
                }
            ]
        }
    )
    eid = w.start(1_000_000.0)
    drive(w, eid, 1_000_000.0)
    ex = w.ex(eid)
    assert ex.stage("Deploy").status is StageStatus.FAILED  # type: ignore[union-attr]
    assert ex.action("Deploy", "D").status is None  # type: ignore[union-attr]
    assert "entry condition not met" in (ex.status_summary or "")


def test_condition_level_on_failure_result_engages_when_its_rules_pass() -> None:
    w = _with_stage_fields(
        onFailure={
            "conditions": [
                {
                    "result": "ROLLBACK",
                    "rules": [
                        _rule(
                            "Always",
                            "VariableCheck",
                            {"Variable": "#{variables.Env}", "Value": "prod", "Operator": "EQ"},
                        )
                    ],
                }
            ]
        }
    )
    good = w.start(1.0)
    drive(w, good, 1.0)
    bad = w.start(20.0)
    drive(w, bad, 20.0, fail={"D"})
    assert w.ex(bad).status is ExecutionStatus.FAILED
    rollbacks = [e for e in w.run.executions.values() if e.execution_type == "ROLLBACK"]
    assert [r.rollback_target for r in rollbacks] == [good]


def test_automatic_retry_checks_the_entry_condition_again() -> None:
    w = _with_stage_fields(
        beforeEntry={
            "conditions": [
                {
                    "result": "FAIL",
                    "rules": [
                        _rule(
                            "Gate",
                            "VariableCheck",
                            {"Variable": "#{variables.Env}", "Value": "staging", "Operator": "EQ"},
                        )
                    ],
                }
            ]
        },
        onFailure={"result": "RETRY"},
    )
    eid = w.start(1.0)
    drive(w, eid, 1.0)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    deploy = ex.action("Deploy", "D")
    assert deploy is not None and deploy.status is None  # the gate held on the retry too
    assert not any(k[1] == "Deploy" for k in w.dispatched)


def test_a_stale_retry_snapshot_cannot_revive_a_finished_retry() -> None:
    w = World(approval=False)
    eid = w.start(1.0)
    drive(w, eid, 1.0, fail={"A"})
    failed = w.ex(eid)
    w.step(RetryRequested(now=50, execution=failed, stage="Build", mode="FAILED_ACTIONS"))
    drive(w, eid, 60)
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED
    # The store re-reads the execution under its WATCH, so decide sees the finished one:
    w.step(RetryRequested(now=90, execution=w.ex(eid), stage="Build", mode="FAILED_ACTIONS"))
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED


def test_a_commands_rule_that_never_reports_times_out_and_fails_the_entry() -> None:
    w = _with_stage_fields(
        beforeEntry={
            "conditions": [
                {
                    "result": "FAIL",
                    "rules": [
                        {
                            "name": "Smoke",
                            "commands": ["true"],
                            "timeoutInMinutes": 5,
                            "ruleTypeId": {
                                "category": "Rule",
                                "owner": "AWS",
                                "provider": "Commands",
                                "version": "1",
                            },
                        }
                    ],
                }
            ]
        }
    )
    eid = w.start(1.0)
    drive(w, eid, 1.0)
    st = w.ex(eid).stage("Deploy")
    assert st is not None and st.evaluating == "beforeEntry"
    [rule] = st.rules
    assert rule.deadline is not None
    w.step(TimerFired(now=rule.deadline - 1))
    assert w.ex(eid).status is ExecutionStatus.IN_PROGRESS
    w.step(TimerFired(now=rule.deadline))
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert ex.action("Deploy", "D").status is None  # type: ignore[union-attr]
