"""Stateful property test of the transition function ``decide(view, event) -> Decision``.

A Hypothesis ``RuleBasedStateMachine`` draws a pipeline — stage conditions of all three
kinds using all three rule types, a manual approval, parallel actions, SUPERSEDED, QUEUED
or PARALLEL — and then drives it the way the store and its clients would, in any order:
starts (with repeated clientRequestTokens), worker reports (current, stale, duplicated),
Commands rule reports, lease losses, timers before and after deadlines, approvals (with
good, stale and bogus tokens), stops, retries, rollbacks, condition overrides, transition
toggles, pipeline updates and deletion. :class:`tests.unit.scheduler_world.World` checks
every invariant after every step; at the end every execution must drain to a finish.

Budget: the default profile (150 examples of up to 50 moves) takes about 10 s; the long one
(5000 examples of up to 100 moves, no per-test timeout) about 9 minutes::

    CONVEYOR_PROPERTY_PROFILE=long .venv/bin/pytest -p no:cacheprovider tests/unit/test_scheduler.py
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from engine.definition.model import ExecutionMode
from engine.execution import ExecutionStatus, ExecutionType, RetryMode, StageStatus
from engine.messages import (
    ConditionOverridden,
    PipelineDeleted,
    RetryRequested,
    RollbackRequested,
    StopRequested,
    TimerFired,
    TransitionChanged,
    WorkItem,
)
from engine.rules import ConditionKind
from tests.unit.scheduler_world import (
    BIG,
    RULE_KINDS,
    STAGES,
    CondSpec,
    FailureSpec,
    RetryModeName,
    RuleKind,
    Shape,
    StageSpec,
    World,
    build_pipeline,
    idle,
)

# ---------------------------------------------------------------------------- budget

settings.register_profile(
    "conveyor-default",
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "conveyor-long",
    max_examples=5000,
    stateful_step_count=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("CONVEYOR_PROPERTY_PROFILE", "default")
# The long profile runs for many minutes: past the suite's per-test timeout (pyproject).
pytestmark = [pytest.mark.timeout(0)] if PROFILE == "long" else []

MAX_STARTS = 7  # executions one run of the machine starts (rejected starts count)
MAX_VERSIONS = 4
MODES: tuple[ExecutionMode, ...] = ("SUPERSEDED", "QUEUED", "PARALLEL")

# ---------------------------------------------------------------------------- pipelines


def _rule_name(kind: RuleKind) -> str:
    return kind.split("-")[0]  # the three window kinds share one rule name


def conditions(results: tuple[str, ...]) -> st.SearchStrategy[CondSpec]:
    """One condition with one of ``results``; SKIP conditions take VariableCheck only."""

    @st.composite
    def build(draw: st.DrawFn) -> CondSpec:
        result = draw(st.sampled_from(results))
        if result == "SKIP":
            return CondSpec(result, ("var",))
        rules = draw(
            st.lists(st.sampled_from(RULE_KINDS), min_size=1, max_size=2, unique_by=_rule_name)
        )
        return CondSpec(result, tuple(rules))

    return build()


def failures(
    results: tuple[Literal["RETRY", "ROLLBACK"], ...],
) -> st.SearchStrategy[FailureSpec]:
    """onFailure: a bare result, or a condition gating its own or the block's result."""
    modes: tuple[RetryModeName | None, ...] = (None, "FAILED_ACTIONS", "ALL_ACTIONS")

    @st.composite
    def build(draw: st.DrawFn) -> FailureSpec:
        how = draw(st.sampled_from(["bare", "gates-block-result", "own-result"]))
        if how == "bare":
            result = draw(st.sampled_from(results))
            mode = draw(st.sampled_from(modes))
            return FailureSpec(result, mode if result == "RETRY" else None)
        rules = draw(conditions(("FAIL",))).rules  # any rule types; the result is set below
        if how == "gates-block-result":
            result = draw(st.sampled_from(results))
            return FailureSpec(result, None, CondSpec(None, rules))
        own = draw(st.sampled_from(results))
        retry_mode = draw(st.sampled_from(modes)) if own == "RETRY" else None
        return FailureSpec(None, retry_mode, CondSpec(own, rules))

    return build()


def stage_maps(mode: ExecutionMode) -> st.SearchStrategy[dict[str, StageSpec]]:
    """Conditions for Build, Approve and Deploy. PARALLEL pipelines take no ROLLBACK result
    (as on AWS, where stage rollback is not available in PARALLEL mode)."""
    parallel = mode == "PARALLEL"
    stage_specs = st.builds(
        StageSpec,
        before_entry=st.none() | conditions(("FAIL", "SKIP")),
        on_success=st.none() | conditions(("FAIL",) if parallel else ("FAIL", "ROLLBACK")),
        on_failure=st.none() | failures(("RETRY",) if parallel else ("RETRY", "ROLLBACK")),
    )
    return st.fixed_dictionaries(
        {"Build": stage_specs, "Approve": stage_specs, "Deploy": stage_specs}
    )


shapes = st.sampled_from(MODES).flatmap(
    lambda mode: st.builds(
        Shape,
        mode=st.just(mode),
        env_default=st.sampled_from(["prod", None]),
        stages=stage_maps(mode),
    )
)

# A start's variables: the one the VariableCheck rules read, missing, huge, or undeclared.
STARTS = {
    "prod": {"Env": "prod"},
    "staging": {"Env": "staging"},
    "default": {},
    "big": {"Env": BIG},
    "unknown": {"Env": "prod", "Colour": "blue"},
}


# ---------------------------------------------------------------------------- the machine


class SchedulerMachine(RuleBasedStateMachine):
    """Moves a client, a worker pool, the sweep and an operator could make, in any order."""

    w: World
    shape: Shape

    def __init__(self) -> None:
        super().__init__()
        self.skew = False
        self.rollbacks = 0
        self.tokens = 0

    @initialize(shape=shapes, full_view=st.booleans(), with_sources=st.booleans())
    def setup(self, shape: Shape, full_view: bool, with_sources: bool) -> None:
        self.shape = shape
        self.w = World(
            build_pipeline(shape), full_view=full_view, with_sources=with_sources, on_event=note
        )
        self.w.start(STARTS["prod"], token="tok-0")

    def teardown(self) -> None:
        # Liveness, unless a check already failed (its report must stay the failure).
        if hasattr(self, "w") and not self.w.broken:
            self.w.drain()

    def now(self) -> float:
        """The store's clock for the next event: a second on, or — once after
        ``clock_steps_back`` — a stamp older than the last commit (a Redis failover)."""
        now = self.w.tick()
        if self.skew:
            self.skew = False
            return now - 30.0
        return now

    def pick_work(self, data: st.DataObject) -> WorkItem:
        """Mostly an attempt that still runs; sometimes any attempt ever dispatched (a stale,
        duplicated or reordered report)."""
        running = self.w.running_work()
        if running and data.draw(st.integers(0, 4), label="current?") > 0:
            return data.draw(st.sampled_from(running), label="work")
        every = sorted(self.w.dispatched, key=lambda k: k.member())
        return data.draw(st.sampled_from(every), label="stale work")

    def pick_execution(self, data: st.DataObject, likely: list[str]) -> str:
        if likely and data.draw(st.integers(0, 4), label="likely?") > 0:
            return data.draw(st.sampled_from(likely), label="execution")
        return data.draw(st.sampled_from([*sorted(self.w.executions), "ghost"]), label="any")

    # ------------------------------------------------------------------ clients

    @precondition(lambda self: self.w.n_started < MAX_STARTS)
    @rule(
        data=st.data(),
        variables=st.sampled_from(["prod", "prod", "staging", "default", "big", "unknown"]),
        token=st.sampled_from(["none", "new", "new", "repeat", "same id"]),
    )
    def start(self, data: st.DataObject, variables: str, token: str) -> None:
        """StartPipelineExecution, sometimes with a clientRequestToken already used; with
        every execution in the view, sometimes a redelivered Started of one that exists."""
        if token == "same id" and self.w.full_view and self.w.executions:
            eid = data.draw(st.sampled_from(sorted(self.w.executions)), label="same id")
            self.w.start(STARTS[variables], execution_id=eid, now=self.now())
            return
        tok: str | None = None
        if token == "repeat" and self.w.tokens:
            tok = data.draw(st.sampled_from(sorted(self.w.tokens)), label="token")
        elif token != "none":
            self.tokens += 1
            tok = f"tok-{self.tokens}"
        self.w.start(STARTS[variables], token=tok, now=self.now())

    @rule(data=st.data(), abandon=st.booleans(), reason=st.sampled_from([None, "halt"]))
    def stop(self, data: st.DataObject, abandon: bool, reason: str | None) -> None:
        eid = self.pick_execution(data, list(self.w.run.active))
        self.w.step(StopRequested(now=self.now(), execution_id=eid, abandon=abandon, reason=reason))

    @rule(data=st.data(), mode=st.sampled_from(list(RetryMode)))
    def retry(self, data: st.DataObject, mode: RetryMode) -> None:
        failed = [
            (ex.execution_id, s.name)
            for ex in self.w.executions.values()
            if ex.status is ExecutionStatus.FAILED
            for s in ex.stages
            if s.status is StageStatus.FAILED
        ]
        if failed and data.draw(st.integers(0, 4), label="failed?") > 0:
            eid, stage = data.draw(st.sampled_from(sorted(failed)), label="failed stage")
        else:
            eid = self.pick_execution(data, [])
            stage = data.draw(st.sampled_from([*STAGES, "Nope"]), label="stage")
        self.w.step(RetryRequested(now=self.now(), execution_id=eid, stage=stage, mode=mode))

    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        succeeded = [
            (ex.execution_id, s.name)
            for ex in self.w.executions.values()
            if ex.execution_type is ExecutionType.STANDARD
            for s in ex.stages[1:]
            if s.status is StageStatus.SUCCEEDED
        ]
        free = [
            (eid, stage)
            for eid, stage in succeeded
            if idle(self.w.run, stage) and self.w.ex(eid).pipeline_version == self.w.version
        ]
        if free and data.draw(st.integers(0, 2), label="idle?") > 0:
            target, stage = data.draw(st.sampled_from(sorted(free)), label="target")
        elif succeeded and data.draw(st.integers(0, 4), label="succeeded?") > 0:
            target, stage = data.draw(st.sampled_from(sorted(succeeded)), label="target")
        else:
            target = self.pick_execution(data, [])
            stage = data.draw(st.sampled_from([*STAGES, "Nope"]), label="stage")
        if self.w.rollback_ids and data.draw(st.integers(0, 4), label="repeat?") == 0:
            rid = data.draw(st.sampled_from(self.w.rollback_ids), label="rollback id")
        else:
            self.rollbacks += 1
            rid = f"rb-{self.rollbacks}"
        self.w.step(
            RollbackRequested(
                now=self.now(), target_execution_id=target, stage=stage, rollback_id=rid
            )
        )

    @rule(
        data=st.data(),
        condition=st.sampled_from(["BEFORE_ENTRY", "ON_SUCCESS", "ON_FAILURE", "SOMETIME"]),
    )
    def override(self, data: st.DataObject, condition: str) -> None:
        evaluating = [
            (ex.execution_id, s.name, s.evaluating)
            for ex in self.w.executions.values()
            for s in ex.stages
            if s.evaluating is not None
        ]
        if evaluating and data.draw(st.integers(0, 4), label="evaluating?") > 0:
            eid, stage, kind = data.draw(st.sampled_from(sorted(evaluating)), label="evaluating")
            if data.draw(st.integers(0, 3), label="its kind?") > 0:
                condition = ConditionKind(kind).api_name
        else:
            eid = self.pick_execution(data, [])
            stage = data.draw(st.sampled_from([*STAGES, "Nope"]), label="stage")
        self.w.step(
            ConditionOverridden(
                now=self.now(), execution_id=eid, stage=stage, condition_type=condition
            )
        )

    @rule(
        stage=st.sampled_from([*STAGES, "Nope"]),
        direction=st.sampled_from(["Inbound", "Outbound"]),
        enabled=st.sampled_from([True, True, False]),
        reason=st.sampled_from(["freeze", "freeze", None]),
    )
    def toggle_transition(
        self,
        stage: str,
        direction: Literal["Inbound", "Outbound"],
        enabled: bool,
        reason: str | None,
    ) -> None:
        self.w.step(
            TransitionChanged(
                now=self.now(),
                stage=stage,
                transition_type=direction,
                enabled=enabled,
                reason=reason,
                changed_by="operator",
            )
        )

    @rule(
        data=st.data(),
        approved=st.booleans(),
        how=st.sampled_from(
            ["current"] * 5 + ["stale", "bogus", "unknown action", "unknown stage", "not approval"]
        ),
    )
    def answer_approval(self, data: st.DataObject, approved: bool, how: str) -> None:
        gates = self.w.approvals()
        if how == "current" and gates:
            _, act = data.draw(st.sampled_from(gates), label="gate")
            self.w.answer(act, approved, now=self.now())
            return
        if how in ("current", "stale") and self.w.approval_tokens:
            token = data.draw(st.sampled_from(sorted(self.w.approval_tokens)), label="token")
            _, stage, action = self.w.approval_tokens[token]
            self.w.answer_with(stage, action, token, approved, now=self.now())
            return
        stage, action = {
            "unknown action": ("Approve", "Nope"),
            "unknown stage": ("Nope", "Gate"),
            "not approval": ("Build", "A"),
        }.get(how, ("Approve", "Gate"))
        self.w.answer_with(stage, action, "bogus-token", approved, now=self.now())

    # ------------------------------------------------------------------ workers and sweep

    @precondition(lambda self: bool(self.w.dispatched))
    @rule(data=st.data(), ok=st.sampled_from([True, True, False]))
    def report(self, data: st.DataObject, ok: bool) -> None:
        """A worker reports an attempt (an action's or a Commands rule's)."""
        self.w.complete(self.pick_work(data), ok, now=self.now())

    @precondition(lambda self: bool(self.w.running_work() or self.w.approvals()))
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """Workers finish everything one execution runs, and its approval is given: the
        move that carries executions deep into the pipeline."""
        busy = sorted({k.execution_id for k in self.w.running_work()})
        busy += [ex.execution_id for ex, _ in self.w.approvals()]
        eid = data.draw(st.sampled_from(sorted(set(busy))), label="execution")
        for key in sorted(self.w.current_work(self.w.ex(eid)), key=lambda k: k.member()):
            self.w.complete(key, True, now=self.now())
        for gate in [a for a in self.w.ex(eid).running() if a.approval_token is not None]:
            self.w.answer(gate, True, now=self.now())

    @precondition(lambda self: bool(self.w.running_work() or self.w.approvals()))
    @rule()
    def advance_everyone(self) -> None:
        """The worker pool catches up: every attempt running now succeeds once and every
        approval waiting now is given."""
        for key in self.w.running_work():
            self.w.complete(key, True, now=self.now())
        for ex, gate in self.w.approvals():
            current = self.w.ex(ex.execution_id).action(gate.stage, gate.name)
            if (
                current is not None
                and current.approval_token == gate.approval_token
                and current.in_progress
            ):
                self.w.answer(current, True, now=self.now())

    @precondition(lambda self: bool(self.w.completions))
    @rule(data=st.data())
    def report_again(self, data: st.DataObject) -> None:
        """A report delivered a second time, after whatever happened since."""
        event = data.draw(st.sampled_from(self.w.completions), label="report")
        self.w.replay(event, now=self.now())

    @precondition(lambda self: bool(self.w.dispatched))
    @rule(data=st.data())
    def lose_lease(self, data: st.DataObject) -> None:
        """The worker running an attempt dies; the sweep finds its lease expired."""
        self.w.lose_lease(self.pick_work(data), now=self.now())

    @rule(data=st.data(), when=st.sampled_from(["early", "due", "late"]))
    def fire_timer(self, data: st.DataObject, when: str) -> None:
        """The sweep's timer for an execution, before, at or well after its next deadline."""
        timed = [ex.execution_id for ex in self.w.active() if ex.next_deadline() is not None]
        eid = self.pick_execution(data, timed)
        now = self.now()
        ex = self.w.executions.get(eid)
        due = ex.next_deadline() if ex is not None else None
        if due is not None and when != "early":
            now = max(now, due + (0.0 if when == "due" else 600.0))
            self.w.now = max(self.w.now, now)
        self.w.step(TimerFired(now=now, execution_id=eid))

    @rule()
    def clock_steps_back(self) -> None:
        self.skew = True

    # ------------------------------------------------------------------ the pipeline

    @precondition(lambda self: self.w.pipeline is not None and self.w.version < MAX_VERSIONS)
    @rule(data=st.data())
    def update_pipeline(self, data: st.DataObject) -> None:
        """UpdatePipeline: same stages and mode, new conditions, a new version."""
        stages = data.draw(stage_maps(self.shape.mode), label="stages")
        self.w.update_pipeline(build_pipeline(replace(self.shape, stages=stages)))

    @precondition(lambda self: self.w.pipeline is not None and self.w.n_events >= 40)
    @rule(go=st.integers(0, 4))
    def delete_pipeline(self, go: int) -> None:
        if go == 0:
            self.w.step(PipelineDeleted(now=self.now()))


SchedulerMachine.TestCase.settings = settings.get_profile(f"conveyor-{PROFILE}")
TestScheduler = SchedulerMachine.TestCase
