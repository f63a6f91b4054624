"""Property tests of the pure transition function with duplicated and reordered events."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definition import PipelineDeclaration
from engine.execution import (
    ActionResult,
    ActionStatus,
    ArtifactLocation,
    ExecutionStatus,
    StageStatus,
)
from engine.scheduler import (
    ActionCompleted,
    ApprovalAnswered,
    Dispatch,
    Effect,
    Emit,
    Event,
    LeaseExpired,
    Started,
    StopRequested,
    TimerFired,
    decide,
    new_execution,
)


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


PIPELINE = PipelineDeclaration.model_validate(
    {
        "name": "prop",
        "stages": [
            {"name": "Source", "actions": [_action("Src", "Source", "S3", 1, [], ["Src"])]},
            {
                "name": "Build",
                "actions": [
                    _action("A", "Build", "CodeBuild", 1, ["Src"], ["A"]),
                    _action("B", "Build", "CodeBuild", 1, ["Src"], ["B"]),
                    _action("C", "Test", "CodeBuild", 2, ["A"], []),
                ],
            },
            {"name": "Approve", "actions": [_action("Gate", "Approval", "Manual", 1, [], [])]},
            {"name": "Deploy", "actions": [_action("D", "Deploy", "S3", 1, ["A"], [])]},
        ],
    }
)
ORDER = [s.name for s in PIPELINE.stages]


def fresh() -> Any:
    return new_execution(
        execution_id="e-1",
        definition=PIPELINE,
        version=1,
        artifact_bucket="b",
        now=0.0,
        variables={},
    )


def result_for(stage: str, action: str, ok: bool, attempt: int) -> ActionResult:
    decl = PIPELINE.stage(stage)
    assert decl is not None
    ad = next(a for a in decl.actions if a.name == action)
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

    def __init__(self) -> None:
        self.state = fresh()
        self.dispatched: Counter[tuple[str, str, int]] = Counter()
        self.started: Counter[tuple[str, str]] = Counter()
        self.stage_started: list[str] = []
        self.accepted: dict[tuple[str, str], ActionResult] = {}
        self.pending: list[Event] = []  # deliverable events, possibly duplicated
        self.stopped = False

    def step(self, event: Event) -> None:
        before = self.state
        after, effects = decide(before, event)
        if after is before:
            assert effects == []
        self._check(before, after, event, effects)
        self.state = after

    def _check(self, before: Any, after: Any, event: Event, effects: list[Effect]) -> None:
        for eff in effects:
            if isinstance(eff, Dispatch):
                key = (eff.stage, eff.action, eff.attempt)
                self.dispatched[key] += 1
                assert self.dispatched[key] == 1, f"dispatched twice: {key}"
                assert not (self.stopped and after.stop_mode == "abandon"), "dispatch after abandon"
            elif isinstance(eff, Emit) and eff.level == "action" and eff.state == "STARTED":
                assert eff.stage is not None and eff.action is not None
                self.started[(eff.stage, eff.action)] += 1
                assert self.started[(eff.stage, eff.action)] == 1, f"started twice: {eff}"
                assert before.stop_mode is None, "action started after a stop"
            elif isinstance(eff, Emit) and eff.level == "stage" and eff.state == "STARTED":
                assert eff.stage is not None
                idx = ORDER.index(eff.stage)
                for prev in after.stages[:idx]:
                    assert prev.status is StageStatus.SUCCEEDED, f"{eff.stage} before {prev.name}"
                self.stage_started.append(eff.stage)
        # Never a lost result: an accepted completion stays recorded forever.
        if isinstance(event, ActionCompleted):
            act_before = before.action(event.stage, event.action)
            if (
                act_before.status is ActionStatus.IN_PROGRESS
                and act_before.attempt == event.attempt
            ):
                self.accepted[(event.stage, event.action)] = event.result
        for (stage, action), res in self.accepted.items():
            act = after.action(stage, action)
            assert act.result == res, f"lost result of {stage}.{action}"
        # Stages only ever move forward.
        for st_b, st_a in zip(before.stages, after.stages, strict=True):
            if st_b.status in (StageStatus.SUCCEEDED, StageStatus.FAILED, StageStatus.STOPPED):
                assert st_a.status == st_b.status
        if before.status.terminal:
            assert after == before, "a finished execution changed"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_interleavings_keep_invariants(data: st.DataObject) -> None:
    w = World()
    now = 1.0
    w.step(Started(now=now))
    w.step(Started(now=now))  # duplicated start
    for _ in range(60):
        if w.state.status.terminal:
            break
        now += 1.0
        running = [
            a for s in w.state.stages for a in s.actions if a.status is ActionStatus.IN_PROGRESS
        ]
        for a in running:
            if a.token is None:
                ok = data.draw(st.sampled_from([True, True, True, False]), label="ok")
                w.pending.append(
                    ActionCompleted(
                        now=now,
                        stage=a.stage,
                        action=a.name,
                        attempt=a.attempt,
                        result=result_for(a.stage, a.name, ok, a.attempt),
                    )
                )
        choice = data.draw(
            st.sampled_from(
                [
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
                    "stale",
                ]
            ),
            label="move",
        )
        if choice in ("deliver", "duplicate") and w.pending:
            i = data.draw(st.integers(0, len(w.pending) - 1), label="which")
            ev = w.pending[i] if choice == "duplicate" else w.pending.pop(i)
            w.step(ev)
        elif choice in ("approve", "reject"):
            gate = w.state.action("Approve", "Gate")
            token = gate.token or "nope"
            w.step(
                ApprovalAnswered(
                    now=now,
                    stage="Approve",
                    action="Gate",
                    token=token,
                    approved=choice == "approve",
                )
            )
        elif choice in ("stop", "abandon") and data.draw(st.booleans(), label="really"):
            w.stopped = True
            w.step(StopRequested(now=now, abandon=choice == "abandon"))
        elif choice == "lease" and running:
            a = data.draw(st.sampled_from(running), label="lease")
            w.step(LeaseExpired(now=now, stage=a.stage, action=a.name, attempt=a.attempt))
        elif choice == "timer":
            w.step(TimerFired(now=now + data.draw(st.sampled_from([0, 10**7]), label="dt")))
        elif choice == "stale" and running:
            a = data.draw(st.sampled_from(running), label="stale")
            w.step(
                ActionCompleted(
                    now=now,
                    stage=a.stage,
                    action=a.name,
                    attempt=a.attempt + 7,
                    result=result_for(a.stage, a.name, True, 0),
                )
            )


def run_to_end(approve: bool) -> Any:
    w = World()
    w.step(Started(now=1.0))
    t = 1.0
    while not w.state.status.terminal:
        t += 1
        running = [
            a for s in w.state.stages for a in s.actions if a.status is ActionStatus.IN_PROGRESS
        ]
        assert running, "stuck with nothing running"
        for a in running:
            if a.token:
                w.step(
                    ApprovalAnswered(
                        now=t,
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
                        now=t,
                        stage=a.stage,
                        action=a.name,
                        attempt=a.attempt,
                        result=result_for(a.stage, a.name, True, a.attempt),
                    )
                )
    return w


def test_happy_path_runs_every_stage_in_order() -> None:
    w = run_to_end(approve=True)
    assert w.state.status is ExecutionStatus.SUCCEEDED
    assert w.stage_started == ORDER
    c = w.state.action("Build", "C")
    assert [i.name for i in c.input_artifacts] == ["A"]
    assert c.resolved_configuration["ProjectName"] == "p-e-1"


def test_rejection_fails_and_nothing_deploys() -> None:
    w = run_to_end(approve=False)
    assert w.state.status is ExecutionStatus.FAILED
    assert w.state.stage("Deploy").status is None
    assert "Rejected" in (w.state.status_summary or "")


def test_failed_action_fails_stage_only_after_its_group() -> None:
    w = World()
    w.step(Started(now=1.0))
    w.step(
        ActionCompleted(
            now=2,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for("Source", "Src", True, 1),
        )
    )
    w.step(
        ActionCompleted(
            now=3, stage="Build", action="A", attempt=1, result=result_for("Build", "A", False, 1)
        )
    )
    assert w.state.stage("Build").status is StageStatus.IN_PROGRESS  # B still running
    w.step(
        ActionCompleted(
            now=4, stage="Build", action="B", attempt=1, result=result_for("Build", "B", True, 1)
        )
    )
    assert w.state.status is ExecutionStatus.FAILED
    assert w.state.action("Build", "C").status is None
    assert w.state.status_summary == "Build.A: A broke"


def test_lease_expiry_redispatches_next_attempt_and_ignores_the_old_one() -> None:
    w = World()
    w.step(Started(now=1.0))
    w.step(LeaseExpired(now=2, stage="Source", action="Src", attempt=1))
    assert w.state.action("Source", "Src").attempt == 2
    w.step(
        ActionCompleted(
            now=3,
            stage="Source",
            action="Src",
            attempt=1,
            result=result_for("Source", "Src", True, 1),
        )
    )
    assert w.state.action("Source", "Src").status is ActionStatus.IN_PROGRESS
    w.step(
        ActionCompleted(
            now=4,
            stage="Source",
            action="Src",
            attempt=2,
            result=result_for("Source", "Src", True, 2),
        )
    )
    assert w.state.artifacts["Src"].key == "Src/2"


def test_approval_times_out_after_default_seven_days() -> None:
    w = World()
    w.step(Started(now=0.0))
    for stage, action in [("Source", "Src"), ("Build", "A"), ("Build", "B"), ("Build", "C")]:
        w.step(
            ActionCompleted(
                now=1,
                stage=stage,
                action=action,
                attempt=1,
                result=result_for(stage, action, True, 1),
            )
        )
    gate = w.state.action("Approve", "Gate")
    assert gate.deadline == 1 + 7 * 24 * 3600
    w.step(TimerFired(now=gate.deadline - 1))
    assert w.state.action("Approve", "Gate").status is ActionStatus.IN_PROGRESS
    w.step(TimerFired(now=gate.deadline))
    assert w.state.status is ExecutionStatus.FAILED
