"""Example-based tests of ``decide``: one situation per rule, named after what a
CodePipeline user does. Every step still goes through :class:`World`, so the invariants of
the property test hold in each of them too.

The first part refuses requests — one test per :class:`RejectionCode`, each with the AWS
situation that causes it; the rest pins down behaviour: stage conditions, retries,
rollbacks, execution modes, leases, timers, deletion and the sweep's view of what runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from engine.approvals import ApprovalPolicy
from engine.auth.principals import Principal, Role
from engine.definition.model import ExecutionMode
from engine.execution import (
    ActionState,
    ActionStatus,
    ExecutionState,
    ExecutionStatus,
    ExecutionType,
    RetryMode,
    RuleRun,
    RuleStatus,
    StageState,
    StageStatus,
    TriggerType,
    new_execution,
)
from engine.ids import action_execution_id
from engine.messages import (
    ConditionOverridden,
    Dispatch,
    EventState,
    PipelineDeleted,
    RetryRequested,
    Revoke,
    RollbackRequested,
    Started,
    StopRequested,
    TimerFired,
    TransitionChanged,
    WorkItem,
    WorkKind,
)
from engine.run import PipelineRun
from engine.scheduler import (
    MAX_ACTIVE_EXECUTIONS,
    MAX_LEASE_LOSSES,
    MAX_RESOLVED_CONFIGURATION_BYTES,
    Decision,
    RejectionCode,
    View,
    current_dispatch,
    decide,
)
from tests.unit.scheduler_world import (
    BIG,
    PIPELINE,
    STAGES,
    CondSpec,
    FailureSpec,
    Shape,
    StageSpec,
    World,
    build_pipeline,
    timeout_minutes,
)

PROD = {"Env": "prod"}


def world(
    mode: ExecutionMode = "SUPERSEDED",
    *,
    env_default: str | None = "prod",
    full_view: bool = False,
    with_sources: bool = True,
    **stages: StageSpec,
) -> World:
    shape = Shape(mode=mode, env_default=env_default, stages=stages)
    return World(build_pipeline(shape), full_view=full_view, with_sources=with_sources)


def start(
    w: World,
    variables: dict[str, str] | None = None,
    *,
    token: str | None = None,
    execution_id: str | None = None,
) -> str:
    d = w.start(PROD if variables is None else variables, token=token, execution_id=execution_id)
    assert d.rejection is None and d.subject is not None, d.rejection
    return d.subject


def work(w: World, eid: str, name: str) -> WorkItem:
    """The running attempt of action (or rule) ``name`` of ``eid``."""
    found = [k for k in w.current_work(w.ex(eid)) if k.name == name or _rule_name(w, k) == name]
    assert len(found) == 1, f"{name} does not run in {eid}: {w.current_work(w.ex(eid))}"
    return found[0]


def _rule_name(w: World, key: WorkItem) -> str | None:
    if key.kind is not WorkKind.RULE:
        return None
    st = w.ex(key.execution_id).stage(key.stage)
    rr = st.rule_run(key.name) if st is not None else None
    return rr.rule if rr is not None else None


def refused(d: Decision) -> RejectionCode:
    assert d.rejection is not None, f"accepted: {d}"
    return d.rejection.code


def fail_build(w: World, eid: str) -> None:
    """Run ``eid`` to Build and fail action A there."""
    w.drive(eid, fail={"A"}, until="Approve")
    assert w.ex(eid).status is ExecutionStatus.FAILED


def succeed(w: World, eid: str) -> None:
    w.drive(eid)
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED, w.ex(eid).status_summary


def stage_state(ex: ExecutionState, stage: str) -> StageState:
    found = ex.stage(stage)
    assert found is not None
    return found


def action_state(ex: ExecutionState, stage: str, action: str) -> ActionState:
    found = ex.action(stage, action)
    assert found is not None
    return found


def stage_status(w: World, eid: str, stage: str) -> StageStatus | None:
    st = w.ex(eid).stage(stage)
    assert st is not None
    return st.status


COMMANDS_GATE = StageSpec(before_entry=CondSpec("FAIL", ("commands",)))

# ---------------------------------------------------------------------------- refusals
#
# Each scenario returns the decision that refuses; ``test_every_rejection_code`` checks
# that together they cover every code ``decide`` can return.


def pipeline_deleted_then_started() -> Decision:
    """StartPipelineExecution on a pipeline that was deleted."""
    w = world()
    start(w)
    w.step(PipelineDeleted(now=w.tick()))
    return w.start(PROD)


def pipeline_deleted_then_transition_enabled() -> Decision:
    w = world()
    w.step(PipelineDeleted(now=w.tick()))
    return w.step(TransitionChanged(now=w.tick(), stage="Build", enabled=True))


def stop_unknown_execution() -> Decision:
    """StopPipelineExecution with an id the pipeline never ran."""
    w = world()
    start(w)
    return w.step(StopRequested(now=w.tick(), execution_id="never-ran"))


def execution_of_another_pipeline() -> Decision:
    """An execution id that belongs to another pipeline: not found in this one."""
    w = world()
    other = new_execution(
        execution_id="theirs",
        definition=w.decl.model_copy(update={"name": "other"}),
        version=1,
        digest="d",
        artifact_bucket="b",
        variables=PROD,
        timeout_minutes=timeout_minutes,
    )
    view = View(run=w.run, executions={"theirs": other}, pipeline=w.pipeline)
    return decide(view, StopRequested(now=w.tick(), execution_id="theirs"))


def retry_unknown_stage() -> Decision:
    """RetryStageExecution naming a stage the pipeline does not have."""
    w = world()
    eid = start(w)
    fail_build(w, eid)
    return w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Nope", mode=RetryMode.FAILED_ACTIONS)
    )


def approval_unknown_action() -> Decision:
    """PutApprovalResult for an action the approval stage does not have."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    [(_, gate)] = w.approvals()
    assert gate.approval_token is not None
    return w.answer_with("Approve", "Gat", gate.approval_token, True)


def start_with_undeclared_variable() -> Decision:
    """StartPipelineExecution with a variable the pipeline does not declare."""
    return world().start({"Env": "prod", "Colour": "blue"})


def start_without_required_variable() -> Decision:
    """A declared variable with no default and no value."""
    return world(env_default=None).start({})


def approval_of_a_build_action() -> Decision:
    """PutApprovalResult naming an action that is not an approval."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    [(_, gate)] = w.approvals()
    assert gate.approval_token is not None
    return w.answer_with("Build", "A", gate.approval_token, True)


def disable_without_reason() -> Decision:
    """DisableStageTransition requires a reason."""
    w = world()
    return w.step(TransitionChanged(now=w.tick(), stage="Build", enabled=False))


def outbound_of_the_last_stage() -> Decision:
    """The last stage has no outbound transition."""
    w = world()
    return w.step(
        TransitionChanged(
            now=w.tick(), stage="Deploy", transition_type="Outbound", enabled=False, reason="x"
        )
    )


def stop_finished_execution() -> Decision:
    """StopPipelineExecution on an execution that already succeeded."""
    w = world()
    eid = start(w)
    succeed(w, eid)
    return w.step(StopRequested(now=w.tick(), execution_id=eid))


def second_stop_and_wait() -> Decision:
    """A second StopPipelineExecution (without abandon) while the first still waits for a
    running build."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Build")
    assert not w.step(StopRequested(now=w.tick(), execution_id=eid)).rejection
    assert w.ex(eid).status is ExecutionStatus.STOPPING
    return w.step(StopRequested(now=w.tick(), execution_id=eid, reason="again"))


def retry_of_a_superseded_attempt() -> Decision:
    """RetryStageExecution of an execution that is no longer the latest in the stage."""
    w = world()
    first = start(w)
    fail_build(w, first)
    second = start(w)
    w.drive(second, until="Build")
    assert w.run.latest["Build"] == second
    return w.step(
        RetryRequested(
            now=w.tick(), execution_id=first, stage="Build", mode=RetryMode.FAILED_ACTIONS
        )
    )


def override_in_a_stage_a_newer_execution_entered() -> Decision:
    """PARALLEL: OverrideStageCondition for an execution that is no longer the latest to
    enter the stage."""
    w = world("PARALLEL", Build=COMMANDS_GATE)
    first, second = start(w), start(w)
    for eid in (first, second):
        w.complete(work(w, eid, "Src"), True)
    assert stage_state(w.ex(first), "Build").evaluating == "beforeEntry"
    return w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=first, stage="Build", condition_type="BEFORE_ENTRY"
        )
    )


def retry_of_a_succeeded_stage() -> Decision:
    w = world()
    eid = start(w)
    succeed(w, eid)
    return w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Deploy", mode=RetryMode.ALL_ACTIONS)
    )


def retry_after_pipeline_update() -> Decision:
    """RetryStageExecution after UpdatePipeline: AWS says start a new execution."""
    w = world()
    eid = start(w)
    fail_build(w, eid)
    w.update_pipeline(build_pipeline(Shape()))
    return w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Build", mode=RetryMode.FAILED_ACTIONS)
    )


def start_built_on_an_older_version() -> Decision:
    """A start built from the pipeline as it was before an UpdatePipeline that committed
    first: the service builds it again on the new version."""
    w = world()
    older = new_execution(
        execution_id="stale",
        definition=w.decl,
        version=1,
        digest="digest-1",
        artifact_bucket="b",
        variables=dict(PROD),
        timeout_minutes=timeout_minutes,
    )
    w.update_pipeline(build_pipeline(Shape()))
    return w.step(Started(now=w.tick(), execution=older))


def fifty_first_queued_start() -> Decision:
    """QUEUED: a 51st active execution is refused."""
    w = world("QUEUED")
    for _ in range(MAX_ACTIVE_EXECUTIONS):
        start(w)
    return w.start(PROD)


def retry_at_the_parallel_limit() -> Decision:
    """PARALLEL: retrying a failed execution would make it the 51st active one."""
    w = world("PARALLEL")
    failed = start(w)
    fail_build(w, failed)
    for _ in range(MAX_ACTIVE_EXECUTIONS):
        start(w)
    return w.step(
        RetryRequested(now=w.tick(), execution_id=failed, stage="Build", mode=RetryMode.ALL_ACTIONS)
    )


def rollback_while_the_stage_runs() -> Decision:
    """RollbackStage while another execution is deploying in that stage."""
    w = world()
    good = start(w)
    succeed(w, good)
    busy = start(w)
    w.drive(busy, until="Deploy")
    assert stage_state(w.ex(busy), "Deploy").status is StageStatus.IN_PROGRESS
    return w.step(
        RollbackRequested(now=w.tick(), target_execution_id=good, stage="Deploy", rollback_id="r1")
    )


def rollback_of_the_source_stage() -> Decision:
    w = world()
    good = start(w)
    succeed(w, good)
    return w.step(
        RollbackRequested(now=w.tick(), target_execution_id=good, stage="Source", rollback_id="r1")
    )


def rollback_to_a_rollback() -> Decision:
    w = world()
    good = start(w)
    succeed(w, good)
    w.step(
        RollbackRequested(now=w.tick(), target_execution_id=good, stage="Deploy", rollback_id="r1")
    )
    succeed(w, "r1")
    return w.step(
        RollbackRequested(now=w.tick(), target_execution_id="r1", stage="Deploy", rollback_id="r2")
    )


def rollback_to_an_older_pipeline_version() -> Decision:
    w = world()
    good = start(w)
    succeed(w, good)
    w.update_pipeline(build_pipeline(Shape()))
    return w.step(
        RollbackRequested(now=w.tick(), target_execution_id=good, stage="Deploy", rollback_id="r1")
    )


def rollback_to_a_stage_that_never_succeeded() -> Decision:
    w = world()
    bad = start(w)
    fail_build(w, bad)
    return w.step(
        RollbackRequested(now=w.tick(), target_execution_id=bad, stage="Deploy", rollback_id="r1")
    )


def override_when_nothing_is_evaluated() -> Decision:
    """OverrideStageCondition for a stage that evaluates no condition right now."""
    w = world(Build=COMMANDS_GATE)
    eid = start(w)
    return w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=eid, stage="Build", condition_type="BEFORE_ENTRY"
        )
    )


def override_on_failure() -> Decision:
    """onFailure conditions cannot be overridden (only BEFORE_ENTRY and ON_SUCCESS)."""
    gate = FailureSpec("RETRY", None, CondSpec(None, ("commands",)))
    w = world(Build=StageSpec(on_failure=gate))
    eid = start(w)
    w.drive(eid, until="Build")
    w.complete(work(w, eid, "A"), False)
    w.complete(work(w, eid, "B"), True)
    assert stage_state(w.ex(eid), "Build").evaluating == "onFailure"
    return w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=eid, stage="Build", condition_type="ON_FAILURE"
        )
    )


def approval_answered_twice() -> Decision:
    """PutApprovalResult again after the approval was answered."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    [(_, gate)] = w.approvals()
    w.answer(gate, True)
    assert gate.approval_token is not None
    return w.answer_with("Approve", "Gate", gate.approval_token, False)


def approval_with_an_unknown_token() -> Decision:
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    return w.answer_with("Approve", "Gate", "not-a-token", True)


def approval_with_the_token_of_an_earlier_run() -> Decision:
    """After a retry the approval runs again under a new token; the old one is invalid."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    [(_, gate)] = w.approvals()
    old = gate.approval_token
    assert old is not None
    w.answer(gate, False)
    w.step(
        RetryRequested(
            now=w.tick(), execution_id=eid, stage="Approve", mode=RetryMode.FAILED_ACTIONS
        )
    )
    [(_, again)] = w.approvals()
    assert again.approval_token not in (None, old)
    return w.answer_with("Approve", "Gate", old, True)


ALICE = Principal("alice", frozenset({Role.APPROVER}))


def approval_by_someone_not_listed() -> Decision:
    """The stage's approver list does not name the principal."""
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    [(_, gate)] = w.approvals()
    assert gate.approval_token is not None
    policy = ApprovalPolicy(stage_approvers={"Approve": frozenset({"bob"})})
    return w.answer_with(
        "Approve", "Gate", gate.approval_token, True, principal=ALICE, policy=policy
    )


def approval_by_the_starter_under_separation_of_duties() -> Decision:
    w = world()
    d = w.start(PROD, trigger_detail="arn:aws:iam::111122223333:user/alice")
    assert d.subject is not None
    w.drive(d.subject, until="Approve")
    [(_, gate)] = w.approvals()
    assert gate.approval_token is not None
    policy = ApprovalPolicy(separation_of_duties=True)
    return w.answer_with(
        "Approve", "Gate", gate.approval_token, True, principal=ALICE, policy=policy
    )


REFUSALS: list[tuple[RejectionCode, Callable[[], Decision]]] = [
    (RejectionCode.PIPELINE_NOT_FOUND, pipeline_deleted_then_started),
    (RejectionCode.PIPELINE_NOT_FOUND, pipeline_deleted_then_transition_enabled),
    (RejectionCode.STALE_VERSION, start_built_on_an_older_version),
    (RejectionCode.EXECUTION_NOT_FOUND, stop_unknown_execution),
    (RejectionCode.EXECUTION_NOT_FOUND, execution_of_another_pipeline),
    (RejectionCode.STAGE_NOT_FOUND, retry_unknown_stage),
    (RejectionCode.ACTION_NOT_FOUND, approval_unknown_action),
    (RejectionCode.INVALID, start_with_undeclared_variable),
    (RejectionCode.INVALID, start_without_required_variable),
    (RejectionCode.INVALID, approval_of_a_build_action),
    (RejectionCode.INVALID, disable_without_reason),
    (RejectionCode.INVALID, outbound_of_the_last_stage),
    (RejectionCode.NOT_STOPPABLE, stop_finished_execution),
    (RejectionCode.DUPLICATE_STOP, second_stop_and_wait),
    (RejectionCode.NOT_LATEST, retry_of_a_superseded_attempt),
    (RejectionCode.NOT_LATEST, override_in_a_stage_a_newer_execution_entered),
    (RejectionCode.STAGE_NOT_RETRYABLE, retry_of_a_succeeded_stage),
    (RejectionCode.STAGE_NOT_RETRYABLE, retry_after_pipeline_update),
    (RejectionCode.LIMIT_EXCEEDED, fifty_first_queued_start),
    (RejectionCode.LIMIT_EXCEEDED, retry_at_the_parallel_limit),
    (RejectionCode.UNABLE_TO_ROLLBACK, rollback_while_the_stage_runs),
    (RejectionCode.UNABLE_TO_ROLLBACK, rollback_of_the_source_stage),
    (RejectionCode.UNABLE_TO_ROLLBACK, rollback_to_a_rollback),
    (RejectionCode.UNABLE_TO_ROLLBACK, rollback_to_an_older_pipeline_version),
    (RejectionCode.UNABLE_TO_ROLLBACK, rollback_to_a_stage_that_never_succeeded),
    (RejectionCode.CONDITION_NOT_OVERRIDABLE, override_when_nothing_is_evaluated),
    (RejectionCode.CONDITION_NOT_OVERRIDABLE, override_on_failure),
    (RejectionCode.APPROVAL_ALREADY_COMPLETED, approval_answered_twice),
    (RejectionCode.INVALID_APPROVAL_TOKEN, approval_with_an_unknown_token),
    (RejectionCode.INVALID_APPROVAL_TOKEN, approval_with_the_token_of_an_earlier_run),
    (RejectionCode.ACCESS_DENIED, approval_by_someone_not_listed),
    (RejectionCode.ACCESS_DENIED, approval_by_the_starter_under_separation_of_duties),
]


@pytest.mark.parametrize(
    ("code", "scenario"), REFUSALS, ids=[f"{c.value}-{s.__name__}" for c, s in REFUSALS]
)
def test_refusal(code: RejectionCode, scenario: Callable[[], Decision]) -> None:
    d = scenario()
    assert refused(d) is code, d.rejection
    assert not d.changed and d.effects == [] and d.executions == {}


def test_every_rejection_code_has_a_situation() -> None:
    assert {code for code, _ in REFUSALS} == set(RejectionCode)


def test_a_repeated_stop_may_escalate_to_abandon() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, until="Build")
    w.step(StopRequested(now=w.tick(), execution_id=eid))
    d = w.step(StopRequested(now=w.tick(), execution_id=eid, abandon=True, reason="now"))
    assert d.rejection is None and w.ex(eid).status is ExecutionStatus.STOPPED
    assert {e.action for e in d.effects if isinstance(e, Revoke)} == {"A", "B"}
    assert refused(w.step(StopRequested(now=w.tick(), execution_id=eid, abandon=True))) is (
        RejectionCode.NOT_STOPPABLE
    )


# ---------------------------------------------------------------------------- starts


def test_a_repeated_client_request_token_starts_nothing() -> None:
    w = world()
    first = start(w, token="t-1")
    d = w.start(PROD, token="t-1")
    assert not d.changed and d.subject == first and len(w.executions) == 1


def test_a_redelivered_start_of_an_existing_execution_changes_nothing() -> None:
    w = world(full_view=True)
    eid = start(w)
    d = w.start(PROD, execution_id=eid)
    assert not d.changed and d.subject == eid


@pytest.mark.parametrize("with_sources", [True, False], ids=["from-json", "from-records"])
def test_happy_path_runs_every_stage_in_order(with_sources: bool) -> None:
    w = world(with_sources=with_sources)
    eid = start(w)
    succeed(w, eid)
    entered = [e.stage for e in w.emitted if e.level == "stage" and e.state is EventState.STARTED]
    assert entered == ["Source", "Build", "Approve", "Deploy"]
    c = w.ex(eid).action("Build", "C")
    assert c is not None and [i.name for i in c.input_artifacts] == ["AOut"]
    assert c.resolved_configuration["ProjectName"] == "test-main"
    a = w.ex(eid).action("Build", "A")
    assert a is not None and a.resolved_configuration["ProjectName"] == f"p-{eid}"
    assert w.ex(eid).source_revisions == [
        {"actionName": "Src", "revisionId": "rev-1", "revisionSummary": "a change"}
    ]


def test_a_rejected_approval_fails_and_nothing_deploys() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, approve=False)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED and "Rejected" in (ex.status_summary or "")
    assert stage_status(w, eid, "Deploy") is None
    gate = ex.action("Approve", "Gate")
    assert gate is not None and gate.approved_by == "tester"


def test_a_failed_action_fails_its_stage_only_after_its_group() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, until="Build")
    w.complete(work(w, eid, "A"), False)
    assert stage_status(w, eid, "Build") is StageStatus.IN_PROGRESS
    w.complete(work(w, eid, "B"), True)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert ex.status_summary == "Build.A: A broke on attempt 1"
    assert action_state(ex, "Build", "C").status is None


def test_a_configuration_over_100kb_fails_without_dispatch() -> None:
    w = world()
    eid = start(w, {"Env": BIG})
    w.drive(eid, until="Build")
    a = w.ex(eid).action("Build", "A")
    assert a is not None and a.status is ActionStatus.FAILED and a.result is not None
    assert a.result.error_code == "ResolvedConfigurationSizeExceeded"
    assert str(MAX_RESOLVED_CONFIGURATION_BYTES) in (a.result.error_message or "")
    assert WorkItem(PIPELINE, eid, "Build", "A", a.attempt) not in w.dispatched
    w.complete(work(w, eid, "B"), True)
    assert w.ex(eid).status is ExecutionStatus.FAILED


# ---------------------------------------------------------------------------- workers


def test_a_lost_lease_redispatches_the_next_attempt_and_ignores_the_old_one() -> None:
    w = world()
    eid = start(w)
    first = work(w, eid, "Src")
    d = w.lose_lease(first)
    assert [e.attempt for e in d.effects if isinstance(e, Dispatch)] == [2]
    assert not w.complete(first, True).changed  # the dead worker's late report
    w.complete(work(w, eid, "Src"), True)
    assert w.ex(eid).artifacts["SrcOut"].key == f"{eid}/SrcOut/2"


def test_an_action_whose_worker_dies_three_times_fails() -> None:
    w = world()
    eid = start(w)
    for _ in range(MAX_LEASE_LOSSES):
        w.lose_lease(work(w, eid, "Src"))
    ex = w.ex(eid)
    src = ex.action("Source", "Src")
    assert src is not None and src.result is not None and src.result.error_code == "WorkerLost"
    assert ex.status is ExecutionStatus.FAILED


def test_a_commands_rule_whose_worker_dies_three_times_fails_its_condition() -> None:
    w = world(Build=COMMANDS_GATE)
    eid = start(w)
    w.drive(eid, until="Build")
    for attempt in range(1, MAX_LEASE_LOSSES + 1):
        key = work(w, eid, "Smoke")
        assert key.attempt == attempt
        d = w.lose_lease(key)
    assert not any(isinstance(e, Dispatch) for e in d.effects)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED and "died 3 times" in (ex.status_summary or "")
    assert [rr.status for rr in stage_state(ex, "Build").rules] == [RuleStatus.FAILED]


def test_stale_and_duplicated_rule_reports_change_nothing() -> None:
    w = world(Build=COMMANDS_GATE)
    eid = start(w)
    w.drive(eid, until="Build")
    first = work(w, eid, "Smoke")
    w.lose_lease(first)
    assert not w.complete(first, False).changed  # the lost attempt reports after all
    assert not w.lose_lease(first).changed  # and the sweep finds its lease again
    second = work(w, eid, "Smoke")
    assert w.complete(second, True).changed
    assert not w.complete(second, True).changed
    assert action_state(w.ex(eid), "Build", "A").status is ActionStatus.IN_PROGRESS


# ---------------------------------------------------------------------------- timers


def test_an_approval_times_out_after_seven_days_not_before() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, until="Approve")
    gate = w.ex(eid).action("Approve", "Gate")
    assert gate is not None and gate.deadline is not None
    assert gate.start_time is not None
    assert gate.deadline - gate.start_time == 7 * 24 * 3600
    assert not w.step(TimerFired(now=gate.deadline - 1, execution_id=eid)).changed
    d = w.step(TimerFired(now=gate.deadline, execution_id=eid))
    assert w.ex(eid).status is ExecutionStatus.FAILED
    assert not any(isinstance(e, Revoke) for e in d.effects)  # no worker holds an approval
    assert refused(w.answer_with("Approve", "Gate", gate.approval_token or "", True)) is (
        RejectionCode.APPROVAL_ALREADY_COMPLETED
    )


def test_a_build_times_out_at_its_own_timeout() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, until="Build")
    a = w.ex(eid).action("Build", "A")
    assert a is not None and a.deadline is not None and a.start_time is not None
    assert a.deadline - a.start_time == 5 * 60  # timeoutInMinutes: 5
    w.step(TimerFired(now=a.deadline, execution_id=eid))
    a = w.ex(eid).action("Build", "A")
    assert a is not None and a.result is not None and a.result.error_code == "TimedOut"
    assert w.ex(eid).status is ExecutionStatus.IN_PROGRESS  # B still runs
    assert not w.step(TimerFired(now=w.tick(), execution_id="never-ran")).changed


def test_a_commands_rule_that_never_reports_times_out_and_fails_the_entry() -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("commands5",))))
    eid = start(w)
    w.drive(eid, until="Deploy")
    st = w.ex(eid).stage("Deploy")
    assert st is not None and st.evaluating == "beforeEntry"
    [rule] = st.rules
    assert rule.deadline is not None and rule.deadline - rule.start_time == 5 * 60
    assert not w.step(TimerFired(now=rule.deadline - 1, execution_id=eid)).changed
    d = w.step(TimerFired(now=rule.deadline, execution_id=eid))
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED and "timed out" in (ex.status_summary or "")
    assert action_state(ex, "Deploy", "D").status is None
    assert not any(isinstance(e, Dispatch) for e in d.effects)


# ---------------------------------------------------------------------------- modes


def test_superseded_waiting_execution_is_replaced_by_a_newer_one() -> None:
    w = world("SUPERSEDED")
    first = start(w)
    w.drive(first, until="Build")  # first holds Build
    second = start(w)
    w.complete(work(w, second, "Src"), True)
    assert w.ex(second).waiting_for == "Build"
    third = start(w)
    w.complete(work(w, third, "Src"), True)
    assert w.ex(second).status is ExecutionStatus.SUPERSEDED
    assert w.ex(third).waiting_for == "Build"
    succeed(w, first)
    succeed(w, third)


def test_a_retried_older_execution_loses_to_a_newer_one_waiting() -> None:
    """SUPERSEDED: retrying an older failed execution while a newer one waits at the same
    stage supersedes the retried one at once."""
    w = world("SUPERSEDED")
    old = start(w)
    fail_build(w, old)
    w.step(TransitionChanged(now=w.tick(), stage="Build", enabled=False, reason="freeze"))
    new = start(w)
    w.complete(work(w, new, "Src"), True)
    assert w.ex(new).waiting_for == "Build"
    d = w.step(
        RetryRequested(now=w.tick(), execution_id=old, stage="Build", mode=RetryMode.FAILED_ACTIONS)
    )
    assert d.rejection is None
    assert w.ex(old).status is ExecutionStatus.SUPERSEDED
    assert w.run.lanes["Build"].waiting == [new]


def test_an_execution_that_skips_a_stage_supersedes_the_one_it_catches_up_with() -> None:
    """SUPERSEDED: the newer execution skips Build (its entry condition says SKIP) while the
    older one leaves Build for a locked Approve: the newer one wins the Approve lane."""
    skip_unless_prod = StageSpec(before_entry=CondSpec("SKIP", ("var",)))
    w = world("SUPERSEDED", Build=skip_unless_prod)
    holder = start(w)
    w.drive(holder, until="Approve")  # holds Approve (the approval waits)
    older = start(w)
    w.drive(older, until="Build")
    newer = start(w, {"Env": "staging"})
    w.complete(work(w, newer, "Src"), True)
    assert w.ex(newer).waiting_for == "Build"
    w.drive(older, until="Approve")  # older leaves Build: newer enters, skips, and waits
    assert w.ex(older).status is ExecutionStatus.SUPERSEDED
    assert stage_status(w, newer, "Build") is StageStatus.SKIPPED
    assert w.run.lanes["Approve"].waiting == [newer]


def test_queued_executions_pass_each_stage_in_arrival_order() -> None:
    w = world("QUEUED")
    ids = [start(w) for _ in range(4)]
    w.drain()
    assert all(w.ex(e).status is ExecutionStatus.SUCCEEDED for e in ids)
    for stage in ("Source", "Build", "Approve", "Deploy"):
        assert w.first_entries[stage] == ids


SKIP_BUILD_UNLESS_PROD = StageSpec(before_entry=CondSpec("SKIP", ("var",)))


def _skip_through(mode: ExecutionMode) -> None:
    """Started(e01, Env=prod); Started(e02, Env=staging); ActionCompleted(e01, Source.Src);
    ActionCompleted(e02, Source.Src) - e02 waits at Build (beforeEntry: SKIP unless Env is
    prod); ActionCompleted(e01, Build.A), (e01, Build.B), (e01, Build.C): e01 must take
    Approve before e02, admitted to Build as e01 leaves it, skips Build and asks for
    Approve. (Found by the property test: e02 used to enter Approve first.)"""
    w = world(mode, Build=SKIP_BUILD_UNLESS_PROD)
    first, second = start(w), start(w, {"Env": "staging"})
    w.complete(work(w, first, "Src"), True)
    w.complete(work(w, second, "Src"), True)
    assert w.ex(second).waiting_for == "Build"
    for name in ("A", "B", "C"):
        w.complete(work(w, first, name), True)
    assert w.run.lanes["Approve"].occupants == [first]
    assert w.run.lanes["Approve"].waiting == [second]


def test_queued_no_execution_overtakes_by_skipping() -> None:
    """QUEUED: executions enter every stage in the order they started, even when a later
    one skips a stage the moment the earlier one leaves it."""
    _skip_through("QUEUED")


def test_superseded_no_execution_overtakes_by_skipping() -> None:
    """SUPERSEDED: a newer execution may replace an older one, but the older one must not
    end up running a stage after the newer one (it would deploy the older revision last)."""
    _skip_through("SUPERSEDED")


def test_switching_a_queued_pipeline_to_parallel_lets_the_queue_in() -> None:
    """UpdatePipeline from QUEUED to PARALLEL: the next execution to arrive at a stage
    enters it together with the ones that queued there."""
    w = world("QUEUED")
    first, queued = start(w), start(w)
    assert w.ex(queued).waiting_for == "Source"
    w.update_pipeline(build_pipeline(Shape(mode="PARALLEL")))
    third = start(w)
    assert w.run.mode == "PARALLEL"
    assert set(w.run.lanes["Source"].occupants) == {first, queued, third}
    w.drain()


def test_a_disabled_transition_holds_and_enabling_releases() -> None:
    w = world()
    w.step(
        TransitionChanged(
            now=w.tick(), stage="Source", transition_type="Outbound", enabled=False, reason="freeze"
        )
    )
    assert not w.run.transition("Build").enabled  # Source's outbound is Build's inbound
    eid = start(w)
    w.drive(eid)
    assert w.ex(eid).waiting_for == "Build" and w.run.lanes["Build"].waiting == [eid]
    w.step(TransitionChanged(now=w.tick(), stage="Build", enabled=True))
    assert w.ex(eid).waiting_for is None
    succeed(w, eid)


def test_stopping_a_waiting_execution_takes_it_out_of_the_queue() -> None:
    w = world("QUEUED")
    first, second = start(w), start(w)
    d = w.step(StopRequested(now=w.tick(), execution_id=second))
    assert w.ex(second).status is ExecutionStatus.STOPPED
    assert w.run.lanes["Source"].waiting == [] and d.effects
    succeed(w, first)


# ---------------------------------------------------------------------------- retries


def test_retry_failed_actions_keeps_the_succeeded_sibling() -> None:
    w = world()
    eid = start(w)
    fail_build(w, eid)
    b = w.ex(eid).action("Build", "B")
    assert b is not None
    w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Build", mode=RetryMode.FAILED_ACTIONS)
    )
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.IN_PROGRESS
    assert action_state(ex, "Build", "A").run == 2
    assert ex.action("Build", "B") == b  # untouched: same run, same result
    succeed(w, eid)


def test_retry_failed_actions_after_a_later_group_failed_skips_the_groups_that_passed() -> None:
    w = world()
    eid = start(w)
    w.drive(eid, fail={"C"}, until="Approve")
    assert w.ex(eid).status is ExecutionStatus.FAILED
    d = w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Build", mode=RetryMode.FAILED_ACTIONS)
    )
    assert [e.action for e in d.effects if isinstance(e, Dispatch)] == ["C"]
    assert stage_state(w.ex(eid), "Build").group == 1
    succeed(w, eid)


def test_retry_all_actions_runs_every_action_again() -> None:
    w = world()
    eid = start(w)
    fail_build(w, eid)
    w.step(
        RetryRequested(now=w.tick(), execution_id=eid, stage="Build", mode=RetryMode.ALL_ACTIONS)
    )
    ex = w.ex(eid)
    assert [action_state(ex, "Build", n).run for n in "AB"] == [2, 2]
    succeed(w, eid)


def test_every_attempt_of_an_automatic_retry_has_its_own_action_execution_id() -> None:
    """onFailure RETRY: the failed action runs again under a new action execution id, and
    ListActionExecutions (``runs()``) lists both runs."""
    w = world(Deploy=StageSpec(on_failure=FailureSpec("RETRY", "FAILED_ACTIONS")))
    eid = start(w)
    w.drive(eid, fail={"D"})  # fails, is retried automatically, fails again
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    d = ex.action("Deploy", "D")
    assert d is not None
    runs = d.runs()
    assert [r.action_execution_id for r in runs] == [
        action_execution_id(eid, "Deploy", "D", 1),
        action_execution_id(eid, "Deploy", "D", 2),
    ]
    assert [r.status for r in runs] == [ActionStatus.FAILED, ActionStatus.FAILED]
    assert [r.result.error_message for r in runs if r.result] == [
        "D broke on attempt 1",
        "D broke on attempt 2",
    ]
    resumed = [e for e in w.emitted if e.level == "stage" and e.state is EventState.RESUMED]
    assert [e.stage for e in resumed] == ["Deploy"]


def test_an_automatic_retry_of_all_actions_reruns_the_succeeded_ones() -> None:
    w = world(Build=StageSpec(on_failure=FailureSpec("RETRY", "ALL_ACTIONS")))
    eid = start(w)
    w.drive(eid, until="Build")
    w.complete(work(w, eid, "B"), True)
    w.complete(work(w, eid, "A"), False)
    ex = w.ex(eid)
    assert [action_state(ex, "Build", n).run for n in "AB"] == [2, 2]
    b = ex.action("Build", "B")
    assert b is not None and b.previous[0].status is ActionStatus.SUCCEEDED


def test_an_automatic_retry_checks_the_entry_condition_again() -> None:
    w = world(
        Deploy=StageSpec(
            before_entry=CondSpec("FAIL", ("var",)), on_failure=FailureSpec("RETRY", None)
        )
    )
    eid = start(w, {"Env": "staging"})
    w.drive(eid)
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.FAILED
    assert action_state(ex, "Deploy", "D").status is None
    assert len(stage_state(ex, "Deploy").rules) == 1
    assert stage_state(ex, "Deploy").retries == 1


def test_an_overridden_entry_gate_is_not_checked_again_on_an_automatic_retry() -> None:
    w = world(
        Deploy=StageSpec(
            before_entry=CondSpec("FAIL", ("commands",)), on_failure=FailureSpec("RETRY", None)
        )
    )
    eid = start(w)
    w.drive(eid, until="Deploy")
    w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=eid, stage="Deploy", condition_type="BEFORE_ENTRY"
        )
    )
    smoke = stage_state(w.ex(eid), "Deploy").rules[0]
    assert smoke.status is RuleStatus.ABANDONED
    d = w.complete(work(w, eid, "D"), False)
    assert [e.work for e in d.effects if isinstance(e, Dispatch)] == [WorkKind.ACTION]
    st = w.ex(eid).stage("Deploy")
    assert (
        st is not None
        and st.retries == 0
        and [rr.status for rr in st.rules] == [RuleStatus.ABANDONED]
    )
    assert action_state(w.ex(eid), "Deploy", "D").run == 2


# ---------------------------------------------------------------------------- conditions


@pytest.mark.parametrize(
    ("env", "result", "status"),
    [
        ("prod", "FAIL", StageStatus.SUCCEEDED),
        ("staging", "FAIL", StageStatus.FAILED),
        ("staging", "SKIP", StageStatus.SKIPPED),
    ],
)
def test_before_entry_variable_check(env: str, result: str, status: StageStatus) -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec(result, ("var",))))
    eid = start(w, {"Env": env})
    w.drive(eid)
    ex = w.ex(eid)
    assert stage_status(w, eid, "Deploy") is status
    assert (action_state(ex, "Deploy", "D").status is not None) == (status is StageStatus.SUCCEEDED)
    failed = status is StageStatus.FAILED
    assert ex.status is (ExecutionStatus.FAILED if failed else ExecutionStatus.SUCCEEDED)


def test_an_open_deployment_window_lets_the_stage_in() -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("window-open",))))
    eid = start(w)
    w.drive(eid)
    assert action_state(w.ex(eid), "Deploy", "D").status is not None
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED


def test_a_window_that_never_opens_again_fails_the_stage() -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("window-closed",))))
    eid = start(w)
    w.drive(eid)
    ex = w.ex(eid)
    assert action_state(ex, "Deploy", "D").status is None
    assert ex.status is ExecutionStatus.FAILED
    assert "it does not open again" in (ex.status_summary or "")


def _held_at_window(w: World, eid: str) -> RuleRun:
    """The Deploy stage is held, in progress, by its waiting window rule."""
    ex = w.ex(eid)
    assert ex.status is ExecutionStatus.IN_PROGRESS
    assert stage_status(w, eid, "Deploy") is StageStatus.IN_PROGRESS
    assert action_state(ex, "Deploy", "D").status is None
    (rr,) = ex.stages[STAGES.index("Deploy")].rules
    assert rr.status is RuleStatus.IN_PROGRESS
    assert rr.summary is not None and rr.summary.startswith("waiting for deployment window")
    return rr


def test_a_closed_deployment_window_holds_the_stage_until_it_opens() -> None:
    """AWS holds the stage rather than failing it; the execution's timer looks again when
    the window opens (the world's clock starts at 22:13 UTC, mornings open at 00:00)."""
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("window-mornings",))))
    eid = start(w)
    w.drive(eid)
    rr = _held_at_window(w, eid)
    opens = rr.deadline
    assert opens is not None and opens == w.ex(eid).next_deadline()
    assert datetime.fromtimestamp(opens, UTC).strftime("%H:%M:%S") == "00:00:00"
    assert "it opens at 2023-11-15 00:00" in (rr.summary or "")
    # Early: nothing changes; no work is dispatched for a rule the engine decides.
    assert not w.step(TimerFired(now=opens - 1, execution_id=eid)).changed
    assert not w.running_work()
    d = w.step(TimerFired(now=opens, execution_id=eid))
    assert any(isinstance(e, Dispatch) and e.action == "D" for e in d.effects)
    (rr,) = w.ex(eid).stages[STAGES.index("Deploy")].rules
    assert rr.status is RuleStatus.SUCCEEDED and rr.deadline is None
    assert rr.summary is not None and rr.summary.startswith("inside deployment window")
    w.drive(eid)
    assert w.ex(eid).status is ExecutionStatus.SUCCEEDED


def test_a_window_closed_again_when_the_timer_fires_waits_for_the_next_opening() -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("window-mornings",))))
    eid = start(w)
    w.drive(eid)
    opens = _held_at_window(w, eid).deadline
    assert opens is not None
    late = opens + 13 * 3600  # the sweep was down all morning: 13:00, closed again
    w.step(TimerFired(now=late, execution_id=eid))
    rr = _held_at_window(w, eid)
    assert rr.deadline == opens + 24 * 3600


@pytest.mark.parametrize("how", ["override", "stop"])
def test_a_held_stage_is_released_by_an_override_or_a_stop(how: str) -> None:
    w = world(Deploy=StageSpec(before_entry=CondSpec("FAIL", ("window-mornings",))))
    eid = start(w)
    w.drive(eid)
    _held_at_window(w, eid)
    if how == "override":
        d = w.step(
            ConditionOverridden(
                now=w.tick(), execution_id=eid, stage="Deploy", condition_type="BEFORE_ENTRY"
            )
        )
        assert any(isinstance(e, Dispatch) and e.action == "D" for e in d.effects)
    else:
        d = w.step(StopRequested(now=w.tick(), execution_id=eid))
        assert w.ex(eid).status is ExecutionStatus.STOPPED
    assert not any(isinstance(e, Revoke) for e in d.effects)  # no worker ever ran it
    (rr,) = w.ex(eid).stages[STAGES.index("Deploy")].rules
    assert rr.status is RuleStatus.ABANDONED


def test_overriding_an_entry_gate_starts_the_stage() -> None:
    w = world(Build=StageSpec(before_entry=CondSpec("FAIL", ("var", "commands"))))
    eid = start(w, {"Env": "staging"})  # the VariableCheck fails, the Commands rule runs
    w.drive(eid, until="Build")
    rule = work(w, eid, "Smoke")
    d = w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=eid, stage="Build", condition_type="BEFORE_ENTRY"
        )
    )
    assert {e.action for e in d.effects if isinstance(e, Dispatch)} == {"A", "B"}
    rules = {rr.rule: rr.status for rr in stage_state(w.ex(eid), "Build").rules}
    assert rules == {"EnvIsProd": RuleStatus.FAILED, "Smoke": RuleStatus.ABANDONED}
    assert not w.complete(rule, False).changed  # the rule's late report is stale now
    succeed(w, eid)


def test_a_failed_success_condition_rolls_back_and_its_override_succeeds() -> None:
    on_success = StageSpec(on_success=CondSpec("ROLLBACK", ("commands",)))
    w = world(Deploy=on_success)
    good = start(w)
    w.drive(good, until="Deploy")
    w.complete(work(w, good, "D"), True)
    w.step(
        ConditionOverridden(
            now=w.tick(), execution_id=good, stage="Deploy", condition_type="ON_SUCCESS"
        )
    )
    assert w.ex(good).status is ExecutionStatus.SUCCEEDED
    bad = start(w)
    w.drive(bad, until="Deploy")
    w.complete(work(w, bad, "D"), True)
    w.drive(bad, rules_pass=False)
    assert w.ex(bad).status is ExecutionStatus.FAILED
    assert "success condition not met" in (w.ex(bad).status_summary or "")
    [rollback] = [w.ex(r) for r in w.rollback_ids]
    assert rollback.trigger_type is TriggerType.AUTOMATED_ROLLBACK
    assert rollback.rollback_target == good and rollback.trigger_detail == bad


def test_a_failed_success_condition_with_fail_does_not_roll_back() -> None:
    w = world(Deploy=StageSpec(on_success=CondSpec("FAIL", ("window-closed",))))
    good = start(w)
    w.drive(good)
    assert w.ex(good).status is ExecutionStatus.FAILED and not w.rollback_ids


def test_on_failure_rollback_redeploys_the_last_successful_artifacts() -> None:
    w = world(Deploy=StageSpec(on_failure=FailureSpec("ROLLBACK")))
    good = start(w)
    succeed(w, good)
    bad = start(w)
    w.drive(bad, fail={"D"})
    assert w.ex(bad).status is ExecutionStatus.FAILED
    [rid] = w.rollback_ids
    rollback = w.ex(rid)
    assert rollback.execution_type is ExecutionType.ROLLBACK and rollback.rollback_target == good
    deploy = rollback.action("Deploy", "D")
    assert deploy is not None and deploy.status is ActionStatus.IN_PROGRESS
    assert deploy.input_artifacts == [w.ex(good).artifacts["AOut"]]
    # A rollback that fails in turn does not roll back again.
    w.drive(rid, fail={"D"})
    assert w.ex(rid).status is ExecutionStatus.FAILED and w.rollback_ids == [rid]
    assert stage_status(w, rid, "Build") is None


def test_on_failure_rollback_with_nothing_to_go_back_to_just_fails() -> None:
    w = world(Deploy=StageSpec(on_failure=FailureSpec("ROLLBACK")))
    bad = start(w)
    w.drive(bad, fail={"D"})
    assert w.ex(bad).status is ExecutionStatus.FAILED and not w.rollback_ids


@pytest.mark.parametrize(("rules_pass", "rolled_back"), [(True, True), (False, False)])
def test_an_on_failure_condition_gates_its_result(rules_pass: bool, rolled_back: bool) -> None:
    gated = FailureSpec(None, None, CondSpec("ROLLBACK", ("commands",)))
    w = world(Deploy=StageSpec(on_failure=gated))
    good = start(w)
    succeed(w, good)
    bad = start(w)
    w.drive(bad, fail={"D"}, rules_pass=rules_pass)
    assert w.ex(bad).status is ExecutionStatus.FAILED
    assert bool(w.rollback_ids) == rolled_back


def test_a_manual_rollback_redeploys_and_a_repeated_request_is_recognised() -> None:
    w = world()
    good = start(w)
    succeed(w, good)
    newer = start(w)
    succeed(w, newer)
    request = RollbackRequested(
        now=w.tick(), target_execution_id=good, stage="Deploy", rollback_id="r1"
    )
    d = w.step(request)
    assert d.subject == "r1" and w.ex("r1").trigger_type is TriggerType.MANUAL_ROLLBACK
    again = w.step(request.model_copy(update={"now": w.tick()}))
    assert not again.changed and again.subject == "r1"
    succeed(w, "r1")
    assert w.ex("r1").artifacts == w.ex(good).artifacts


def test_no_manual_rollback_in_parallel_mode() -> None:
    """RollbackStage is not available in PARALLEL mode (AWS user guide, execution modes)."""
    w = world("PARALLEL")
    good = start(w)
    succeed(w, good)
    d = w.step(
        RollbackRequested(now=w.tick(), target_execution_id=good, stage="Deploy", rollback_id="r1")
    )
    assert d.rejection is not None and d.rejection.code is RejectionCode.UNABLE_TO_ROLLBACK


# ---------------------------------------------------------------------------- deletion


def test_deleting_the_pipeline_abandons_and_revokes_what_runs() -> None:
    w = world("PARALLEL", Deploy=StageSpec(before_entry=CondSpec("FAIL", ("commands",))))
    building, approving, gated, queued = start(w), start(w), start(w), start(w)
    w.drive(building, until="Build")
    w.drive(approving, until="Approve")
    w.drive(gated, until="Deploy")
    w.step(TransitionChanged(now=w.tick(), stage="Build", enabled=False, reason="hold"))
    w.complete(work(w, queued, "Src"), True)
    assert w.ex(queued).waiting_for == "Build"
    active = set(w.run.active)
    d = w.step(PipelineDeleted(now=w.tick()))
    revoked = {
        (e.execution_id, e.action if e.work is WorkKind.ACTION else "rule")
        for e in d.effects
        if isinstance(e, Revoke)
    }
    assert revoked == {(building, "A"), (building, "B"), (gated, "rule")}
    assert {e.execution_id for e in d.effects if isinstance(e, Revoke)} <= active
    assert {
        eid for eid, ex in d.executions.items() if ex.status is ExecutionStatus.STOPPED
    } == active
    assert not d.run.active and not d.run.lanes
    gate = d.executions[approving].action("Approve", "Gate")
    assert gate is not None and gate.status is ActionStatus.ABANDONED


def test_deleting_a_pipeline_whose_execution_record_is_gone() -> None:
    """An active id whose record could not be loaded is dropped from the run record."""
    run = PipelineRun(name=PIPELINE, active=["lost"])
    w = world()
    d = decide(View(run=run, executions={}, pipeline=w.pipeline), PipelineDeleted(now=1.0))
    assert d.changed and d.run.active == [] and d.effects == []


# ---------------------------------------------------------------------------- the sweep


def test_current_dispatch_sends_again_only_the_attempt_that_still_runs() -> None:
    w = world(Build=COMMANDS_GATE)
    eid = start(w)
    src = work(w, eid, "Src")
    assert current_dispatch(w.ex(eid), src) == w.dispatched[src]
    assert current_dispatch(None, src) is None
    w.complete(src, True)
    assert current_dispatch(w.ex(eid), src) is None
    rule = work(w, eid, "Smoke")
    assert current_dispatch(w.ex(eid), rule) == w.dispatched[rule]
    w.lose_lease(rule)
    assert current_dispatch(w.ex(eid), rule) is None
    assert current_dispatch(None, rule) is None
    assert current_dispatch(w.ex(eid), work(w, eid, "Smoke")) is not None


def test_decide_refuses_on_a_copy_and_never_touches_the_view() -> None:
    """A refusal after a handler started changing things leaves no trace (and the same
    view gives the same answer again)."""
    w = world()
    eid = start(w)
    view = w.view(RetryRequested(execution_id=eid, stage="Build", mode=RetryMode.FAILED_ACTIONS))
    event = RetryRequested(
        now=w.tick(), execution_id=eid, stage="Build", mode=RetryMode.FAILED_ACTIONS
    )
    before = (view.run.model_dump(), {k: v.model_dump() for k, v in view.executions.items()})
    first, second = decide(view, event), decide(view, event)
    assert first == second and first.rejection is not None
    assert (
        view.run.model_dump(),
        {k: v.model_dump() for k, v in view.executions.items()},
    ) == before
