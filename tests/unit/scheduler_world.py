"""A model of how the store drives ``decide``, checking every rule of the transition function
after every step. Used by the stateful property test (``test_scheduler.py``) and by the
example-based tests (``test_scheduler_rules.py``, ``test_scheduler_clock.py``).

:class:`World` does what :mod:`engine.store.runs` does inside its compare-and-set: it builds
the :class:`View` (the executions the event names, every execution waiting in a lane, every
active one for a deletion, with the JSON they were read from — or, with ``full_view``, every
execution it knows), calls ``decide``, merges the :class:`Decision`, and after a deletion
drops every record as the store does. Around each call it checks:

* purity: the view and the event are unchanged, a second call gives an equal decision;
* the outcome: a refusal or a no-op changes nothing and has no effects; every event comes to
  what a small oracle of CodePipeline's rules says (which rejection, whether anything
  changed, which subject); the clock never runs backwards;
* the effects: no attempt dispatched twice, and each one dispatched is the current one
  (``current_dispatch`` agrees, then and later); revocations only of attempts that ran; no
  action run started twice and no start after a stop request; the event stream says exactly
  what changed (pipeline, action); stages entered in order, only through open transitions,
  outside PARALLEL first come first served; an accepted result is kept; at most one
  automatic retry per failure; ``latest`` and rollback targets follow what happened;
* the state: ``run.active`` is exactly the unfinished executions; each is either waiting in
  one lane (``waiting_for`` names it) or occupies its current stage (and only that stage is
  InProgress); outside PARALLEL at most one occupant and nobody waiting behind a newer one;
  finished executions are in no lane and run nothing; running actions are in the running
  group with a deadline and a dispatch (approvals with a token); worker rules in progress
  have a deadline and a dispatch, and the only engine rule in progress is a DeploymentWindow
  waiting for its window, with a deadline (its timer) and no dispatch; action execution ids
  are unique, derived from the run number and never change; a rollback execution runs its
  one stage; at most 50 active.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.approvals import ApprovalPolicy
from engine.auth.principals import Principal
from engine.definition import ActionDeclaration, PipelineDeclaration, check
from engine.definition.model import ExecutionMode
from engine.execution import (
    ActionResult,
    ActionRun,
    ActionState,
    ActionStatus,
    ArtifactLocation,
    ExecutionState,
    ExecutionStatus,
    ExecutionType,
    RuleRun,
    RuleStatus,
    StageStatus,
    StopMode,
    new_execution,
)
from engine.ids import action_execution_id
from engine.messages import (
    ActionCompleted,
    ApprovalAnswered,
    ConditionOverridden,
    Dispatch,
    Emit,
    Event,
    EventState,
    LeaseExpired,
    PipelineDeleted,
    RetryRequested,
    Revoke,
    RollbackRequested,
    RuleCompleted,
    Started,
    StopRequested,
    TimerFired,
    TransitionChanged,
    WorkItem,
    WorkKind,
)
from engine.rules import ConditionKind
from engine.run import PipelineRun
from engine.scheduler import (
    MAX_ACTIVE_EXECUTIONS,
    Decision,
    PipelineInfo,
    RejectionCode,
    View,
    current_dispatch,
    decide,
)
from providers.base import Category
from tests.unit._fake_providers import fake_registry

PIPELINE = "prop"
STAGES = ("Source", "Build", "Approve", "Deploy")
# 2023-11-14 22:13:20 UTC: outside the "mornings" deployment window, which opens at 00:00.
BASE_NOW = 1_700_000_000.0
# A variable value that makes an action's resolved configuration exceed AWS's 100 KB quota.
BIG = "x" * (100 * 1024 + 1)

RuleKind = Literal[
    "var", "window-open", "window-closed", "window-mornings", "commands", "commands5"
]
RULE_KINDS: tuple[RuleKind, ...] = (
    "var",
    "window-open",
    "window-closed",
    "window-mornings",
    "commands",
    "commands5",
)
CRONS = {
    "window-open": "* * * * * ?",
    "window-closed": "* * * * * ? 1999",  # only in 1999: never again
    "window-mornings": "* * 0-11 * * ?",  # 00:00-11:59 UTC
}


# ---------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class CondSpec:
    """One condition: its result (None: an onFailure condition taking its block's) and rules."""

    result: str | None
    rules: tuple[RuleKind, ...]


RetryModeName = Literal["FAILED_ACTIONS", "ALL_ACTIONS"]


@dataclass(frozen=True)
class FailureSpec:
    result: Literal["RETRY", "ROLLBACK"] | None
    retry_mode: RetryModeName | None = None
    condition: CondSpec | None = None


@dataclass(frozen=True)
class StageSpec:
    before_entry: CondSpec | None = None
    on_success: CondSpec | None = None
    on_failure: FailureSpec | None = None


@dataclass(frozen=True)
class Shape:
    """A pipeline of the four stages above; conditions on Build, Approve and Deploy."""

    mode: ExecutionMode = "SUPERSEDED"
    env_default: str | None = "prod"
    stages: Mapping[str, StageSpec] = field(default_factory=dict)


def rule_decl(kind: RuleKind) -> dict[str, Any]:
    def typed(provider: str) -> dict[str, str]:
        return {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"}

    if kind == "var":
        return {
            "name": "EnvIsProd",
            "ruleTypeId": typed("VariableCheck"),
            "configuration": {"Variable": "#{variables.Env}", "Value": "prod", "Operator": "EQ"},
        }
    if kind.startswith("window"):
        return {
            "name": "Window",
            "ruleTypeId": typed("DeploymentWindow"),
            "configuration": {"Cron": CRONS[kind], "TimeZone": "UTC"},
        }
    out: dict[str, Any] = {
        "name": "Smoke" if kind == "commands" else "Smoke5",
        "ruleTypeId": typed("Commands"),
        "commands": ["make smoke"],
    }
    if kind == "commands5":
        out["timeoutInMinutes"] = 5
    return out


def _condition(spec: CondSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"rules": [rule_decl(k) for k in spec.rules]}
    if spec.result is not None:
        out["result"] = spec.result
    return out


def _stage_fields(spec: StageSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.before_entry is not None:
        out["beforeEntry"] = {"conditions": [_condition(spec.before_entry)]}
    if spec.on_success is not None:
        out["onSuccess"] = {"conditions": [_condition(spec.on_success)]}
    failure = spec.on_failure
    if failure is not None:
        block: dict[str, Any] = {}
        if failure.result is not None:
            block["result"] = failure.result
        if failure.retry_mode is not None:
            block["retryConfiguration"] = {"retryMode": failure.retry_mode}
        if failure.condition is not None:
            block["conditions"] = [_condition(failure.condition)]
        out["onFailure"] = block
    return out


def _action(
    name: str,
    category: str,
    provider: str,
    *,
    run_order: int = 1,
    ins: Iterable[str] = (),
    outs: Iterable[str] = (),
    config: Mapping[str, str] | None = None,
    **extra: Any,
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
        "configuration": dict(config or {}),
        **extra,
    }


def raw_pipeline(shape: Shape) -> dict[str, Any]:
    """The CodePipeline JSON of ``shape``: parallel actions A and B then C in Build, a manual
    approval, a deployment; #{variables.Env} resolved into A's and the approval's
    configuration."""
    stages: list[dict[str, Any]] = [
        {
            "name": "Source",
            "actions": [
                _action(
                    "Src",
                    "Source",
                    "S3",
                    outs=["SrcOut"],
                    config={"S3Bucket": "src", "S3ObjectKey": "app.zip"},
                    namespace="SourceVariables",
                )
            ],
        },
        {
            "name": "Build",
            "actions": [
                _action(
                    "A",
                    "Build",
                    "CodeBuild",
                    ins=["SrcOut"],
                    outs=["AOut"],
                    config={
                        "ProjectName": "p-#{codepipeline.PipelineExecutionId}",
                        "EnvironmentVariables": "#{variables.Env}",
                    },
                    timeoutInMinutes=5,
                ),
                _action(
                    "B",
                    "Build",
                    "CodeBuild",
                    ins=["SrcOut"],
                    outs=["BOut"],
                    config={"ProjectName": "lint"},
                ),
                _action(
                    "C",
                    "Test",
                    "CodeBuild",
                    run_order=2,
                    ins=["AOut"],
                    config={"ProjectName": "test-#{SourceVariables.Branch}"},
                ),
            ],
        },
        {
            "name": "Approve",
            "actions": [
                _action(
                    "Gate", "Approval", "Manual", config={"CustomData": "ship #{variables.Env}?"}
                )
            ],
        },
        {
            "name": "Deploy",
            "actions": [
                _action(
                    "D",
                    "Deploy",
                    "S3",
                    ins=["AOut"],
                    config={"BucketName": "site", "Extract": "true"},
                )
            ],
        },
    ]
    for stage in stages:
        spec = shape.stages.get(stage["name"])
        if spec is not None:
            stage.update(_stage_fields(spec))
    variable: dict[str, str] = {"name": "Env"}
    if shape.env_default is not None:
        variable["defaultValue"] = shape.env_default
    return {
        "name": PIPELINE,
        "pipelineType": "V2",
        "executionMode": shape.mode,
        "variables": [variable],
        "stages": stages,
    }


def build_pipeline(shape: Shape) -> PipelineDeclaration:
    """The declaration of ``shape``, which must pass the definition checks: the machine
    never runs a pipeline CodePipeline would refuse."""
    decl = PipelineDeclaration.model_validate(raw_pipeline(shape))
    problems = check(decl, fake_registry())
    assert not problems, [str(p) for p in problems]
    return decl


def timeout_minutes(action: ActionDeclaration) -> int:
    """What the service's provider registry answers: the action's own, else the default."""
    if action.timeout_in_minutes:
        return action.timeout_in_minutes
    category = action.action_type_id.category
    if category is Category.APPROVAL:
        return 7 * 24 * 60
    return 90 if category is Category.DEPLOY else 60


def result_for(ex: ExecutionState, stage: str, action: str, attempt: int, ok: bool) -> ActionResult:
    """A worker's report of one attempt: outputs keyed by attempt, so results are told apart."""
    if not ok:
        return ActionResult(
            succeeded=False, error_code="Boom", error_message=f"{action} broke on attempt {attempt}"
        )
    ad = ex.action_decl(stage, action)
    source = ad.action_type_id.category is Category.SOURCE
    return ActionResult(
        succeeded=True,
        summary=f"{action} #{attempt}",
        output_artifacts=[
            ArtifactLocation(name=o.name, bucket="b", key=f"{ex.execution_id}/{o.name}/{attempt}")
            for o in ad.output_artifacts
        ],
        output_variables={"Branch": "main"} if ad.namespace else {},
        revision_id=f"rev-{attempt}" if source else None,
        revision_summary="a change" if source else None,
    )


# ---------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    """What the rules say a request must come to: refused with ``code``, or accepted;
    ``changed`` and ``subject`` are checked when ``check_changed``/``check_subject``."""

    code: RejectionCode | None = None
    changed: bool = True
    check_changed: bool = True
    subject: str | None = None
    check_subject: bool = False


ACCEPTED_ANYHOW = Expect(check_changed=False)


def _refuse(code: RejectionCode) -> Expect:
    return Expect(code=code, changed=False)


def idle(run: PipelineRun, stage: str) -> bool:
    """Whether nobody is in or waiting for ``stage`` (without ``run.lane``, which would add
    the lane to the record)."""
    lane = run.lanes.get(stage)
    return lane is None or lane.idle


def _work_key(eff: Dispatch | Revoke) -> WorkItem:
    return eff.item(PIPELINE)


# ---------------------------------------------------------------------------- the world


class World:
    """The pipeline's run record and every execution, driven through ``decide`` as the
    store drives it, with every invariant checked on every step."""

    def __init__(
        self,
        decl: PipelineDeclaration,
        *,
        full_view: bool = False,
        with_sources: bool = True,
        now: float = BASE_NOW,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.decl = decl
        self.version = 1
        self.pipeline: PipelineInfo | None = PipelineInfo(1, decl)
        self.mode: ExecutionMode = decl.execution_mode
        self.run = PipelineRun(name=PIPELINE)
        self.executions: dict[str, ExecutionState] = {}
        self.deleted: dict[str, ExecutionState] = {}  # removed with the pipeline
        self.full_view = full_view
        self.with_sources = with_sources
        self.now = now
        self.on_event = on_event
        self.n_started = 0
        self.n_events = 0
        self.tokens: dict[str, str] = {}  # clientRequestToken -> execution id
        self.approval_tokens: dict[str, tuple[str, str, str]] = {}  # token -> (ex, stage, action)
        self.dispatched: dict[WorkItem, Dispatch] = {}
        self.work_of: dict[str, list[WorkItem]] = {}  # execution id -> its dispatched work
        self.runs_started: set[tuple[str, str, str, int]] = set()  # (ex, stage, action, run)
        self.runs_seen: dict[tuple[str, str, str], list[ActionRun]] = {}
        # Execution id -> the action runs in progress when its stop was accepted.
        self.stopped: dict[str, set[tuple[str, str, int]]] = {}
        self.retried: set[str] = set()  # manually retried executions (FIFO no longer applies)
        self.start_order: dict[str, int] = {}
        self.first_entries: dict[str, list[str]] = {s: [] for s in STAGES}
        self.last_entered: dict[str, str] = {}  # stage -> the last execution to enter it
        self.last_succeeded: dict[str, str] = {}  # stage -> last STANDARD one to succeed it
        self.auto_retries: Counter[tuple[str, str]] = Counter()  # since the last manual one
        self.completions: list[ActionCompleted | RuleCompleted] = []  # sent, for replays
        self.rollback_ids: list[str] = []
        self.emitted: list[Emit] = []
        self.broken = False  # a check failed: the state is not to be driven further

    # ------------------------------------------------------------------ reading

    def ex(self, execution_id: str) -> ExecutionState:
        return self.executions[execution_id]

    def active(self) -> list[ExecutionState]:
        return [self.executions[e] for e in self.run.active]

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now

    def current_work(self, ex: ExecutionState) -> set[WorkItem]:
        """The attempts ``ex`` waits on a worker for: its running non-approval actions and
        its worker-run rules in progress."""
        if ex.status.terminal:
            return set()
        out = {
            WorkItem(PIPELINE, ex.execution_id, a.stage, a.name, a.attempt)
            for a in ex.running()
            if a.approval_token is None
        }
        out |= {
            WorkItem(
                PIPELINE, ex.execution_id, rr.stage, rr.rule_execution_id, rr.attempt, WorkKind.RULE
            )
            for st in ex.stages
            for rr in st.rules
            if rr.in_progress and rr.attempt > 0  # a waiting window rule runs nowhere
        }
        return out

    def running_work(self) -> list[WorkItem]:
        return sorted(
            (k for ex in self.active() for k in self.current_work(ex)), key=lambda k: k.member()
        )

    def approvals(self) -> list[tuple[ExecutionState, ActionState]]:
        return [
            (ex, a) for ex in self.active() for a in ex.running() if a.approval_token is not None
        ]

    # ------------------------------------------------------------------ driving

    def view(self, event: Event, token_owner: str | None = None) -> View:
        """What the store loads for ``event`` (or everything, with ``full_view``), with the
        JSON each execution was read from (unless ``with_sources`` is off)."""
        if self.full_view:
            loaded = dict(self.executions)
        else:
            ids = [*event.execution_ids(), *self.run.waiting_ids()]
            if event.loads_active:
                ids += self.run.active
            loaded = {e: self.executions[e] for e in ids if e in self.executions}
        # The store also hands over the JSON it read each execution from.
        sources = {e: ex.model_dump_json() for e, ex in loaded.items()} if self.with_sources else {}
        return View(
            run=self.run,
            executions=loaded,
            pipeline=self.pipeline,
            token_owner=token_owner,
            sources=sources,
        )

    def step(self, event: Event, *, token_owner: str | None = None) -> Decision:
        """Apply ``event`` as the store would and check every invariant."""
        self.broken = True  # until every check below has passed
        self.n_events += 1
        if self.on_event is not None:
            self.on_event(f"{self.n_events}: {_describe(event, token_owner)}")
        view = self.view(event, token_owner)
        expect = self.expect(view, event)
        before = _fingerprint(view, event)
        decision = decide(view, event)
        assert _fingerprint(view, event) == before, "decide changed the view it was given"
        again = decide(view, event)
        assert again == decision, "decide gave two different decisions for one input"
        self._check_decision(view, event, decision, expect)
        for eid in decision.executions:
            self.start_order.setdefault(eid, len(self.start_order))
        self._check_effects(view, event, decision)
        self._check_outcome(view, event, decision)
        self._merge(event, decision)
        self.check_state()
        self.broken = False
        return decision

    def start(
        self,
        variables: Mapping[str, str] | None = None,
        *,
        token: str | None = None,
        execution_id: str | None = None,
        now: float | None = None,
        trigger_detail: str | None = None,
    ) -> Decision:
        """StartPipelineExecution of the current pipeline version; a repeated
        clientRequestToken reaches ``decide`` with its owner, as the store's token index
        gives it."""
        decl = self.pipeline.declaration if self.pipeline is not None else self.decl
        version = self.pipeline.version if self.pipeline is not None else self.version
        if execution_id is None:
            self.n_started += 1
            execution_id = f"e{self.n_started:02d}"
        ex = new_execution(
            execution_id=execution_id,
            definition=decl,
            version=version,
            digest=f"digest-{version}",
            artifact_bucket="b",
            variables=dict(variables or {}),
            timeout_minutes=timeout_minutes,
            client_request_token=token,
            trigger_detail=trigger_detail,
        )
        at = self.tick() if now is None else now
        owner = self.tokens.get(token) if token is not None else None
        return self.step(Started(now=at, execution=ex), token_owner=owner)

    def update_pipeline(self, decl: PipelineDeclaration) -> None:
        """UpdatePipeline: a new version; executions keep the version they started with."""
        assert self.pipeline is not None, "a deleted pipeline cannot be updated"
        self.version += 1
        self.decl = decl
        self.mode = decl.execution_mode
        self.pipeline = PipelineInfo(self.version, decl)

    def complete(self, key: WorkItem, ok: bool, now: float | None = None) -> Decision:
        """The worker's report of one dispatched attempt (current or stale)."""
        at = self.tick() if now is None else now
        event: ActionCompleted | RuleCompleted
        if key.kind is WorkKind.RULE:
            event = RuleCompleted(
                now=at,
                execution_id=key.execution_id,
                stage=key.stage,
                rule_execution_id=key.name,
                attempt=key.attempt,
                succeeded=ok,
                summary="smoke passed" if ok else "smoke failed",
            )
        else:
            ex = self.executions.get(key.execution_id) or self.deleted[key.execution_id]
            result = result_for(ex, key.stage, key.name, key.attempt, ok)
            event = ActionCompleted(
                now=at,
                execution_id=key.execution_id,
                stage=key.stage,
                action=key.name,
                attempt=key.attempt,
                result=result,
            )
        self.completions.append(event)
        return self.step(event)

    def replay(self, event: ActionCompleted | RuleCompleted, now: float | None = None) -> Decision:
        """A report delivered again (the worker's retry, a redelivered callback)."""
        at = self.tick() if now is None else now
        return self.step(event.model_copy(update={"now": at}))

    def lose_lease(self, key: WorkItem, now: float | None = None) -> Decision:
        at = self.tick() if now is None else now
        return self.step(
            LeaseExpired(
                now=at,
                execution_id=key.execution_id,
                stage=key.stage,
                name=key.name,
                attempt=key.attempt,
                work=key.kind,
            )
        )

    def answer(self, act: ActionState, approved: bool, *, now: float | None = None) -> Decision:
        """PutApprovalResult with the approval's current token."""
        assert act.approval_token is not None
        return self.answer_with(act.stage, act.name, act.approval_token, approved, now=now)

    def answer_with(
        self,
        stage: str,
        action: str,
        token: str,
        approved: bool,
        *,
        now: float | None = None,
        principal: Principal | None = None,
        policy: ApprovalPolicy | None = None,
    ) -> Decision:
        """PutApprovalResult as the service sends it: the execution is the one the token
        index names (None for a token no execution issued)."""
        at = self.tick() if now is None else now
        owner = self.approval_tokens.get(token)
        return self.step(
            ApprovalAnswered(
                now=at,
                execution_id=owner[0] if owner else None,
                stage=stage,
                action=action,
                token=token,
                approved=approved,
                summary="looks good" if approved else "not today",
                answered_by="tester",
                principal=principal,
                policy=policy or ApprovalPolicy(),
            )
        )

    def drive(
        self,
        execution_id: str,
        *,
        approve: bool = True,
        fail: Iterable[str] = (),
        rules_pass: bool = True,
        until: str | None = None,
        max_steps: int = 60,
    ) -> None:
        """Complete everything ``execution_id`` runs (failing the actions in ``fail``)
        until it finishes, waits on nothing it runs itself, or has reached ``until``."""
        failing = set(fail)
        stop_at = STAGES.index(until) if until is not None else len(STAGES)
        for _ in range(max_steps):
            ex = self.executions[execution_id]
            if ex.current_stage >= stop_at:
                return
            work = sorted(self.current_work(ex), key=lambda k: k.member())
            gates = [a for a in ex.running() if a.approval_token is not None]
            if ex.status.terminal or not (work or gates):
                return
            for key in work:
                ok = rules_pass if key.kind is WorkKind.RULE else key.name not in failing
                self.complete(key, ok)
            for gate in gates:
                self.answer(gate, approve)
        raise AssertionError(f"{execution_id} still runs after {max_steps} rounds")

    def drain(self, max_rounds: int = 400) -> None:
        """Liveness: with every transition enabled, every approval approved and every
        attempt succeeding, every execution finishes and every lane empties."""
        if self.pipeline is not None:
            for stage in STAGES:
                if not self.run.transition(stage).enabled:
                    self.step(TransitionChanged(now=self.tick(), stage=stage, enabled=True))
        for _ in range(max_rounds):
            if not self.run.active:
                break
            progressed = False
            for eid in list(self.run.active):
                for key in sorted(self.current_work(self.ex(eid)), key=lambda k: k.member()):
                    self.complete(key, True)
                    progressed = True
                for gate in [a for a in self.ex(eid).running() if a.approval_token is not None]:
                    self.answer(gate, True)
                    progressed = True
            if not progressed:
                progressed = self._wait_for_windows()
            assert progressed, "executions are stuck with nothing running: " + "; ".join(
                _where(ex) for ex in self.active()
            )
        assert not self.run.active, f"executions never finished: {self.run.active}"
        for name, lane in self.run.lanes.items():
            assert lane.idle, f"lane {name} not empty after every execution finished: {lane}"

    def _wait_for_windows(self) -> bool:
        """Time passes to the earliest closed deployment window's opening, and its timer
        fires: a held stage moves on when its window opens. Whether one was waiting."""
        waiting = [
            (rr.deadline, ex.execution_id)
            for ex in self.active()
            for rr in _running_rules(ex)
            if rr.attempt == 0 and rr.deadline is not None
        ]
        if not waiting:
            return False
        due, eid = min(waiting)
        self.now = max(self.now, due)
        self.step(TimerFired(now=self.now, execution_id=eid))
        return True

    # ------------------------------------------------------------------ the oracle

    def expect(self, view: View, event: Event) -> Expect:
        """What CodePipeline's rules say ``event`` must come to, from the state before it."""
        known = self.executions
        now = max(event.now, view.run.clock)
        pipeline = view.pipeline
        if isinstance(event, Started):
            return self._expect_start(view, event)
        if isinstance(event, ActionCompleted):
            item = WorkItem(PIPELINE, event.execution_id, event.stage, event.action, event.attempt)
            return Expect(changed=self._is_current(item))
        if isinstance(event, RuleCompleted):
            item = WorkItem(
                PIPELINE,
                event.execution_id,
                event.stage,
                event.rule_execution_id,
                event.attempt,
                WorkKind.RULE,
            )
            return Expect(changed=self._is_current(item))
        if isinstance(event, LeaseExpired):
            item = WorkItem(
                PIPELINE, event.execution_id, event.stage, event.name, event.attempt, event.work
            )
            return Expect(changed=self._is_current(item))
        if isinstance(event, TimerFired):
            ex = known.get(event.execution_id)
            due = ex.next_deadline() if ex is not None and not ex.status.terminal else None
            return Expect(changed=due is not None and due <= now)
        if isinstance(event, StopRequested):
            ex = known.get(event.execution_id)
            if ex is None:
                return _refuse(RejectionCode.EXECUTION_NOT_FOUND)
            if ex.status.terminal:
                return _refuse(RejectionCode.NOT_STOPPABLE)
            if ex.stop_mode is StopMode.ABANDON or (ex.stop_mode is not None and not event.abandon):
                return _refuse(RejectionCode.DUPLICATE_STOP)
            return Expect(subject=ex.execution_id, check_subject=True)
        if isinstance(event, RetryRequested):
            return self._expect_retry(view, event)
        if isinstance(event, RollbackRequested):
            return self._expect_rollback(view, event)
        if isinstance(event, ConditionOverridden):
            ex = known.get(event.execution_id)
            if ex is None:
                return _refuse(RejectionCode.EXECUTION_NOT_FOUND)
            st = ex.stage(event.stage)
            if st is None:
                return _refuse(RejectionCode.STAGE_NOT_FOUND)
            kind = ConditionKind.from_api(event.condition_type)
            if kind not in (ConditionKind.BEFORE_ENTRY, ConditionKind.ON_SUCCESS):
                return _refuse(RejectionCode.CONDITION_NOT_OVERRIDABLE)
            if st.evaluating is not kind:
                return _refuse(RejectionCode.CONDITION_NOT_OVERRIDABLE)
            if view.run.latest.get(event.stage) != ex.execution_id:
                return _refuse(RejectionCode.NOT_LATEST)
            return Expect()
        if isinstance(event, ApprovalAnswered):
            return self._expect_answer(view, event)
        if isinstance(event, TransitionChanged):
            if pipeline is None:
                return _refuse(RejectionCode.PIPELINE_NOT_FOUND)
            names = [s.name for s in pipeline.declaration.stages]
            if event.stage not in names:
                return _refuse(RejectionCode.STAGE_NOT_FOUND)
            if event.transition_type == "Outbound" and names[-1] == event.stage:
                return _refuse(RejectionCode.INVALID)
            if not event.enabled and not event.reason:
                return _refuse(RejectionCode.INVALID)
            return ACCEPTED_ANYHOW  # re-setting the same state at the same clock is a no-op
        assert isinstance(event, PipelineDeleted)
        return Expect(changed=bool(view.run.active or view.run.lanes))

    def _is_current(self, item: WorkItem) -> bool:
        ex = self.executions.get(item.execution_id)
        return ex is not None and item in self.current_work(ex)

    def _expect_start(self, view: View, event: Started) -> Expect:
        if view.pipeline is None:
            return _refuse(RejectionCode.PIPELINE_NOT_FOUND)
        if view.token_owner is not None:
            return Expect(changed=False, subject=view.token_owner, check_subject=True)
        eid = event.execution.execution_id
        if eid in view.executions:
            return Expect(changed=False, subject=eid, check_subject=True)
        if event.execution.pipeline_version != view.pipeline.version:
            return _refuse(RejectionCode.STALE_VERSION)
        declared = {v.name for v in event.execution.decl.variables}
        if set(event.execution.variables) - declared or declared - set(event.execution.variables):
            return _refuse(RejectionCode.INVALID)
        if self.mode in ("QUEUED", "PARALLEL") and len(view.run.active) >= MAX_ACTIVE_EXECUTIONS:
            return _refuse(RejectionCode.LIMIT_EXCEEDED)
        return Expect(subject=eid, check_subject=True)

    def _expect_retry(self, view: View, event: RetryRequested) -> Expect:
        ex = self.executions.get(event.execution_id)
        if ex is None:
            return _refuse(RejectionCode.EXECUTION_NOT_FOUND)
        st = ex.stage(event.stage)
        if st is None:
            return _refuse(RejectionCode.STAGE_NOT_FOUND)
        if view.run.latest.get(event.stage) != ex.execution_id:
            return _refuse(RejectionCode.NOT_LATEST)
        if ex.status is not ExecutionStatus.FAILED or st.status is not StageStatus.FAILED:
            return _refuse(RejectionCode.STAGE_NOT_RETRYABLE)
        if view.pipeline is None:
            return _refuse(RejectionCode.PIPELINE_NOT_FOUND)
        if ex.pipeline_version != view.pipeline.version:
            return _refuse(RejectionCode.STAGE_NOT_RETRYABLE)
        if self.mode in ("QUEUED", "PARALLEL") and len(view.run.active) >= MAX_ACTIVE_EXECUTIONS:
            return _refuse(RejectionCode.LIMIT_EXCEEDED)
        return Expect(subject=ex.execution_id, check_subject=True)

    def _expect_rollback(self, view: View, event: RollbackRequested) -> Expect:
        if view.pipeline is None:
            return _refuse(RejectionCode.PIPELINE_NOT_FOUND)
        names = [s.name for s in view.pipeline.declaration.stages]
        if event.stage not in names:
            return _refuse(RejectionCode.STAGE_NOT_FOUND)
        if names[0] == event.stage or view.pipeline.declaration.execution_mode == "PARALLEL":
            return _refuse(RejectionCode.UNABLE_TO_ROLLBACK)  # no stage rollback in PARALLEL
        target = self.executions.get(event.target_execution_id)
        if target is None:
            return _refuse(RejectionCode.EXECUTION_NOT_FOUND)
        if event.rollback_id in self.executions:
            return Expect(changed=False, subject=event.rollback_id, check_subject=True)
        st = target.stage(event.stage)
        if (
            target.execution_type is not ExecutionType.STANDARD
            or target.pipeline_version != view.pipeline.version
            or st is None
            or st.status is not StageStatus.SUCCEEDED
            or not idle(view.run, event.stage)
        ):
            return _refuse(RejectionCode.UNABLE_TO_ROLLBACK)
        return Expect(subject=event.rollback_id, check_subject=True)

    def _expect_answer(self, view: View, event: ApprovalAnswered) -> Expect:
        if view.pipeline is None:
            return _refuse(RejectionCode.PIPELINE_NOT_FOUND)
        sd = view.pipeline.declaration.stage(event.stage)
        if sd is None:
            return _refuse(RejectionCode.STAGE_NOT_FOUND)
        ad = next((a for a in sd.actions if a.name == event.action), None)
        if ad is None:
            return _refuse(RejectionCode.ACTION_NOT_FOUND)
        if ad.action_type_id.category is not Category.APPROVAL:
            return _refuse(RejectionCode.INVALID)
        ex = self.executions.get(event.execution_id or "")
        act = ex.action(event.stage, event.action) if ex is not None else None
        if ex is None or act is None or act.approval_token != event.token:
            return _refuse(RejectionCode.INVALID_APPROVAL_TOKEN)
        if event.principal is not None:
            name, policy = event.principal.name, event.policy
            listed = policy.stage_approvers.get(event.stage, policy.approvers)
            started_by = ex.trigger_detail or ""
            if (listed is not None and name not in listed) or (
                policy.separation_of_duties and started_by.endswith(f":user/{name}")
            ):
                return _refuse(RejectionCode.ACCESS_DENIED)
        if not act.in_progress or ex.status.terminal:
            return _refuse(RejectionCode.APPROVAL_ALREADY_COMPLETED)
        return Expect()

    # ------------------------------------------------------------------ per transition

    def _check_decision(self, view: View, event: Event, d: Decision, expect: Expect) -> None:
        code = d.rejection.code if d.rejection is not None else None
        assert code == expect.code, f"expected {expect.code}, got {d.rejection}"
        if d.rejection is not None:
            assert d.run is view.run, "a refusal changed the run record"
            assert not d.changed and d.executions == {} and d.effects == [], (
                "a refusal changed something"
            )
            return
        if expect.check_changed:
            assert d.changed == expect.changed, f"expected changed={expect.changed}: {d}"
        if expect.check_subject:
            assert d.subject == expect.subject, f"subject {d.subject}, expected {expect.subject}"
        if not d.changed:
            assert d.effects == [] and d.executions == {}, "no change, yet effects"
            assert d.run == view.run, "no change, yet a new run record"
            return
        assert d.run.clock == max(event.now, view.run.clock), "the clock ran backwards"
        for eid, ex in d.executions.items():
            old = view.executions.get(eid)
            assert ex.definition is not None, f"{eid} lost its definition"
            assert old is None or (ex is not old and ex != old), f"{eid} reported but unchanged"
            if old is None:
                assert eid not in self.executions, f"{eid} was created twice"
            assert ex.last_update_time >= d.run.clock, f"{eid} dated before the transition"

    def _check_effects(self, view: View, event: Event, d: Decision) -> None:
        after = {**self.executions, **d.executions}
        started_now: Counter[tuple[str, str, str]] = Counter()
        for eff in d.effects:
            if isinstance(eff, Dispatch):
                key = _work_key(eff)
                assert key not in self.dispatched, f"dispatched twice: {key}"
                ex = after[eff.execution_id]
                assert current_dispatch(ex, key) == eff, f"dispatched but not current: {key}"
                stop = self.stopped.get(eff.execution_id)
                if stop is not None:
                    act = ex.action(eff.stage, eff.action)
                    assert eff.work is WorkKind.ACTION and act is not None, (
                        f"a rule started after the stop of {eff.execution_id}: {key}"
                    )
                    assert (eff.stage, eff.action, act.run) in stop, (
                        f"{eff.stage}.{eff.action} started after the stop of {eff.execution_id}"
                    )
            elif isinstance(eff, Revoke):
                key = _work_key(eff)
                assert key in self.dispatched, f"revoked what was never dispatched: {key}"
                assert current_dispatch(after[eff.execution_id], key) is None, (
                    f"revoked an attempt that still runs: {key}"
                )
            else:
                self._check_emit(eff, d, after, started_now)
        if isinstance(event, ActionCompleted | ApprovalAnswered):
            self._check_result_kept(view, event, d, after)
        self._check_event_stream(event, d)
        if isinstance(event, PipelineDeleted):
            revoked = {_work_key(e) for e in d.effects if isinstance(e, Revoke)}
            running = {k for eid in view.run.active for k in self.current_work(self.ex(eid))}
            assert revoked == running, f"deletion revoked {revoked}, but {running} ran"

    def _check_event_stream(self, event: Event, d: Decision) -> None:
        """The EventBridge stream says exactly what changed: an execution STARTED once,
        RESUMED by a retry, STOPPING on a stop, one final state each time it finishes (the
        one it has); every action run that starts or ends says so once, with its status."""
        emits: dict[str, list[Emit]] = {}
        for eff in d.effects:
            if isinstance(eff, Emit):
                emits.setdefault(eff.execution_id, []).append(eff)
        assert set(emits) <= set(d.executions), "an event about an execution that did not change"
        for eid, ex in d.executions.items():
            before = self.executions.get(eid)
            mine = emits.get(eid, [])
            pipeline = [e.state for e in mine if e.level == "pipeline"]
            resumed = isinstance(event, RetryRequested) and event.execution_id == eid
            stopping = (
                isinstance(event, StopRequested)
                and event.execution_id == eid
                and before is not None
                and before.status is ExecutionStatus.IN_PROGRESS
            )
            finished = ex.status.terminal and (
                before is None or not before.status.terminal or resumed
            )
            expected = (
                ([EventState.STARTED] if before is None else [])
                + ([EventState.RESUMED] if resumed else [])
                + ([EventState.STOPPING] if stopping else [])
                + ([_FINAL_STATE[ex.status]] if finished else [])
            )
            assert pipeline == expected, f"{eid}: pipeline events {pipeline}, expected {expected}"
            for st in ex.stages:
                for act in st.actions:
                    old = before.action(st.name, act.name) if before is not None else None
                    self._check_action_events(eid, act, old, mine)

    def _check_action_events(
        self, eid: str, act: ActionState, old: ActionState | None, emits: list[Emit]
    ) -> None:
        mine = [
            e.state
            for e in emits
            if e.level == "action" and e.stage == act.stage and e.action == act.name
        ]
        was = {r.action_execution_id: r.status for r in old.runs()} if old is not None else {}
        ended = [
            _ACTION_STATE[r.status]
            for r in act.runs()
            if r.status.terminal and not (was.get(r.action_execution_id) or _NOT_STARTED).terminal
        ]
        starts = act.run - (old.run if old is not None else 0)
        assert mine.count(EventState.STARTED) == starts, f"{eid} {act.stage}.{act.name}: {mine}"
        assert sorted(s for s in mine if s is not EventState.STARTED) == sorted(ended), (
            f"{eid} {act.stage}.{act.name}: events {mine}, runs that ended {ended}"
        )

    def _check_emit(
        self,
        eff: Emit,
        d: Decision,
        after: Mapping[str, ExecutionState],
        started_now: Counter[tuple[str, str, str]],
    ) -> None:
        self.emitted.append(eff)
        ex = after[eff.execution_id]
        if eff.level == "stage" and eff.state is EventState.SUCCEEDED:
            assert eff.stage is not None
            if ex.execution_type is ExecutionType.STANDARD:
                self.last_succeeded[eff.stage] = ex.execution_id
        if eff.state is EventState.SUPERSEDED:
            assert self.mode == "SUPERSEDED", f"superseded in {self.mode} mode"
        if eff.level == "action" and eff.state is EventState.STARTED:
            assert eff.stage is not None and eff.action is not None
            assert eff.execution_id not in self.stopped, (
                f"{eff.stage}.{eff.action} started after the stop of {eff.execution_id}"
            )
            act = ex.action(eff.stage, eff.action)
            assert act is not None
            # The n-th start in this transition is run (runs before + n): an automatic
            # retry may start a second run of an action that failed in the same transition.
            started_now[(eff.execution_id, eff.stage, eff.action)] += 1
            old = self.executions.get(eff.execution_id)
            old_act = old.action(eff.stage, eff.action) if old is not None else None
            number = (old_act.run if old_act else 0) + started_now[
                (eff.execution_id, eff.stage, eff.action)
            ]
            assert number <= act.run, f"{eff.stage}.{eff.action} started more runs than it has"
            run = (eff.execution_id, eff.stage, eff.action, number)
            assert run not in self.runs_started, f"action run started twice: {run}"
            self.runs_started.add(run)
        if eff.level == "stage" and eff.state is EventState.STARTED:
            assert eff.stage is not None
            assert d.run.transition(eff.stage).enabled, f"entered {eff.stage} while disabled"
            self.last_entered[eff.stage] = ex.execution_id
            idx = [s.name for s in ex.stages].index(eff.stage)
            if ex.execution_type is ExecutionType.STANDARD:
                for prev in ex.stages[:idx]:
                    assert prev.status in (StageStatus.SUCCEEDED, StageStatus.SKIPPED), (
                        f"{ex.execution_id} entered {eff.stage} before {prev.name} "
                        f"succeeded ({prev.status})"
                    )
                self._check_order(ex.execution_id, eff.stage)

    def _check_order(self, execution_id: str, stage: str) -> None:
        """Outside PARALLEL, executions first enter each stage in the order they started:
        QUEUED passes them one by one; in SUPERSEDED a newer one may replace an older one,
        never run ahead of it, or the older revision would be deployed last. (A manual retry
        lets an execution re-enter behind newer ones, so retried ones are left out.)"""
        entries = self.first_entries[stage]
        if execution_id in entries:
            return
        if self.mode != "PARALLEL" and execution_id not in self.retried:
            ahead = [e for e in entries if e not in self.retried]
            mine = self.start_order[execution_id]
            assert all(self.start_order[e] < mine for e in ahead), (
                f"{self.mode}: {execution_id} entered {stage} after executions that started "
                f"after it ({[e for e in ahead if self.start_order[e] > mine]})"
            )
        entries.append(execution_id)

    def _check_outcome(self, view: View, event: Event, d: Decision) -> None:
        """What an accepted event must have done, read from the state after it."""
        after = {**self.executions, **d.executions}
        if isinstance(event, PipelineDeleted) or not d.changed:
            return
        assert d.run.latest == self.last_entered, (
            f"run.latest {d.run.latest} is not the last to enter {self.last_entered}"
        )
        snapshots = {stage: snap.execution_id for stage, snap in d.run.snapshots.items()}
        assert snapshots == self.last_succeeded, (
            f"rollback targets {snapshots}, but the last to succeed {self.last_succeeded}"
        )
        now = max(event.now, view.run.clock)
        if isinstance(event, TimerFired) and event.execution_id in after:
            due = after[event.execution_id].next_deadline()
            assert due is None or due > now, f"a deadline at {due} passed at {now} unnoticed"
        if isinstance(event, StopRequested):
            ex = after[event.execution_id]
            assert not [a for a in ex.running() if a.approval_token], "a stop waits on a person"
            assert not event.abandon or ex.status is ExecutionStatus.STOPPED
        if isinstance(event, TransitionChanged):
            names = list(STAGES)
            target = event.stage
            if event.transition_type == "Outbound":
                target = names[names.index(event.stage) + 1]
            assert d.run.transition(target).enabled is event.enabled
        resumed: Counter[tuple[str, str]] = Counter(
            (e.execution_id, e.stage or "")
            for e in d.effects
            if isinstance(e, Emit) and e.level == "stage" and e.state is EventState.RESUMED
        )
        if isinstance(event, RetryRequested):
            key = (event.execution_id, event.stage)
            resumed[key] -= 1  # the manual retry's own RESUMED
            self.auto_retries[key] = 0
        for key, n in resumed.items():
            self.auto_retries[key] += n
            assert self.auto_retries[key] <= 1, f"{key} retried automatically twice"
        for eid, ex in d.executions.items():
            was = self.executions.get(eid)
            if ex.status is ExecutionStatus.SUPERSEDED and (was is None or not was.status.terminal):
                winner = after[(ex.status_summary or "").rsplit(" ", 1)[-1]]
                assert (winner.start_time, winner.execution_id) > (ex.start_time, eid), (
                    f"{eid} superseded by the older {winner.execution_id}"
                )
            for st in ex.stages:
                for act in st.actions:
                    if act.approval_token is None:
                        continue
                    owner = self.approval_tokens.get(act.approval_token)
                    assert owner in (None, (eid, st.name, act.name)), f"token reused: {owner}"
                    old = was.action(st.name, act.name) if was is not None else None
                    if old is not None and old.run != act.run:
                        assert act.approval_token not in self.approval_tokens, (
                            "a new run kept its token"
                        )

    def _check_result_kept(
        self,
        view: View,
        event: ActionCompleted | ApprovalAnswered,
        d: Decision,
        after: Mapping[str, ExecutionState],
    ) -> None:
        """An accepted result is never lost: the run it was for holds it afterwards (in
        ``runs()``, even when a stage retry started the action again at once)."""
        if d.rejection is not None or not d.changed or event.execution_id is None:
            return
        before = view.executions.get(event.execution_id)
        act_b = before.action(event.stage, event.action) if before is not None else None
        if act_b is None or not act_b.in_progress:
            return
        if isinstance(event, ActionCompleted):
            if act_b.attempt != event.attempt:
                return
            expected_ok = event.result.succeeded
        else:
            expected_ok = event.approved
        act_a = after[event.execution_id].action(event.stage, event.action)
        assert act_a is not None
        run = next(
            (r for r in act_a.runs() if r.action_execution_id == act_b.action_execution_id), None
        )
        assert run is not None and run.result is not None, "an accepted result was lost"
        assert run.result.succeeded == expected_ok
        if isinstance(event, ActionCompleted):
            assert run.result == event.result, "an accepted result was changed"

    # ------------------------------------------------------------------ merging

    def _merge(self, event: Event, d: Decision) -> None:
        if isinstance(event, PipelineDeleted):
            self._delete(d)  # the store removes the records whatever decide said
            return
        if not d.changed:
            return
        for eid, ex in d.executions.items():
            if eid not in self.executions and ex.execution_type is ExecutionType.ROLLBACK:
                self.rollback_ids.append(eid)
            self.executions[eid] = ex
            for st in ex.stages:
                for act in st.actions:
                    if act.approval_token is not None:
                        self.approval_tokens[act.approval_token] = (eid, st.name, act.name)
        self.run = d.run
        if isinstance(event, Started) and event.execution.client_request_token:
            self.tokens[event.execution.client_request_token] = event.execution.execution_id
        if isinstance(event, RetryRequested):
            self.retried.add(event.execution_id)
        if isinstance(event, StopRequested):
            ex = self.executions[event.execution_id]
            self.stopped[event.execution_id] = {(a.stage, a.name, a.run) for a in ex.running()}
        for eff in d.effects:
            if isinstance(eff, Dispatch):
                key = _work_key(eff)
                self.dispatched[key] = eff
                self.work_of.setdefault(eff.execution_id, []).append(key)
        for eid, ex in d.executions.items():
            current = self.current_work(ex)
            for key in self.work_of.get(eid, []):
                found = current_dispatch(ex, key)
                assert (found is not None) == (key in current), (
                    f"current_dispatch disagrees about {key}: {found}"
                )
                assert found is None or found == self.dispatched[key]

    def _delete(self, d: Decision) -> None:
        """DeletePipeline: every active execution was abandoned (each attempt a worker runs
        revoked); then the store removes every record of the pipeline, as here."""
        for eid in self.run.active:
            ex = d.executions.get(eid)
            assert ex is not None and ex.status.terminal, f"deletion left {eid} running"
            assert not ex.running() and not _running_rules(ex), f"deletion left work in {eid}"
        assert d.rejection is None and not d.run.active and not d.run.lanes
        self.pipeline = None
        self.deleted.update(self.executions)
        self.deleted.update(d.executions)
        self.executions = {}
        self.run = PipelineRun(name=PIPELINE)
        self.last_entered = {}
        self.last_succeeded = {}

    # ------------------------------------------------------------------ the state

    def check_state(self) -> None:
        run = self.run
        unfinished = {e for e, ex in self.executions.items() if not ex.status.terminal}
        assert len(run.active) == len(set(run.active)), f"run.active repeats: {run.active}"
        assert set(run.active) == unfinished, (
            f"run.active {sorted(run.active)} != unfinished {sorted(unfinished)}"
        )
        if self.mode in ("QUEUED", "PARALLEL"):
            assert len(run.active) <= MAX_ACTIVE_EXECUTIONS
        placed: dict[str, list[tuple[str, str]]] = {}
        for name, lane in run.lanes.items():
            if self.mode != "PARALLEL":
                assert len(lane.occupants) <= 1, f"{name} has occupants {lane.occupants}"
            if self.mode == "SUPERSEDED":
                assert len(lane.waiting) <= 1, f"{name} has {lane.waiting} waiting (SUPERSEDED)"
            if self.mode != "PARALLEL":
                self._check_queue(name, lane.occupants, lane.waiting)
            for eid in lane.occupants:
                placed.setdefault(eid, []).append((name, "in"))
            for eid in lane.waiting:
                placed.setdefault(eid, []).append((name, "waiting"))
        assert set(placed) <= unfinished, (
            f"finished executions in lanes: {set(placed) - unfinished}"
        )
        ids: dict[str, tuple[str, str, str, int]] = {}
        for eid, ex in self.executions.items():
            self._check_execution(ex, placed.get(eid, []))
            self._check_runs(ex, ids)
        for stage, eid in run.latest.items():
            assert eid in self.executions, f"latest in {stage} is unknown: {eid}"

    def _check_queue(self, stage: str, occupants: list[str], waiting: list[str]) -> None:
        """Outside PARALLEL nobody waits behind a newer execution (standard, never retried
        by hand): QUEUED would pass it out of order, SUPERSEDED run the older one last."""

        def ordered(eid: str) -> bool:
            ex = self.executions[eid]
            return ex.execution_type is ExecutionType.STANDARD and eid not in self.retried

        for inside in filter(ordered, occupants):
            late = [
                w for w in waiting if ordered(w) and self.start_order[w] < self.start_order[inside]
            ]
            assert not late, f"{late} wait at {stage} behind the newer {inside}"

    def _check_execution(self, ex: ExecutionState, placed: list[tuple[str, str]]) -> None:
        eid = ex.execution_id
        in_progress = [s.name for s in ex.stages if s.status is StageStatus.IN_PROGRESS]
        if ex.status is ExecutionStatus.SUPERSEDED:
            assert self.mode == "SUPERSEDED", f"{eid} superseded in {self.mode} mode"
        if ex.execution_type is ExecutionType.ROLLBACK:
            others = [s for s in ex.stages if s.name != ex.only_stage and s.status is not None]
            assert not others, f"rollback {eid} ran {[s.name for s in others]}"
        if ex.status.terminal:
            assert not placed
            assert not ex.running(), f"finished {eid} still runs {ex.running()}"
            assert not _running_rules(ex), f"finished {eid} still evaluates rules"
            assert ex.waiting_for is None, f"finished {eid} waits for {ex.waiting_for}"
            assert not in_progress, f"finished {eid} still in stage {in_progress}"
            return
        assert (ex.stop_mode is None) == (ex.status is ExecutionStatus.IN_PROGRESS)
        assert ex.current_stage >= 0, f"active {eid} never entered a stage"
        current = ex.stages[ex.current_stage]
        if ex.waiting_for is not None:
            assert current.name == ex.waiting_for
            assert placed == [(ex.waiting_for, "waiting")], f"{eid} waits at {placed}"
            assert not in_progress, f"waiting {eid} has stages in progress: {in_progress}"
            assert not ex.running() and not _running_rules(ex)
        else:
            assert placed == [(current.name, "in")], f"{eid} in {current.name} but placed {placed}"
            assert in_progress == [current.name], f"{eid} in {current.name}: {in_progress}"
        groups = ex.stage_decl(current.name).groups()
        for act in ex.running():
            assert act.stage == current.name and ex.waiting_for is None
            assert current.group < len(groups)
            assert [a.name for a in current.actions].index(act.name) in groups[current.group], (
                f"{act.stage}.{act.name} runs outside the running group"
            )
            assert act.deadline is not None, f"{act.stage}.{act.name} runs without a deadline"
            assert act.action_execution_id is not None
            is_approval = ex.action_decl(act.stage, act.name).action_type_id.category is (
                Category.APPROVAL
            )
            assert (act.approval_token is not None) == is_approval
            if not is_approval:
                key = WorkItem(PIPELINE, eid, act.stage, act.name, act.attempt)
                assert key in self.dispatched, f"{key} runs but was never dispatched"
        for rr in _running_rules(ex):
            assert rr.stage == current.name and current.evaluating is rr.kind, (
                f"rule {rr.rule} runs while {current.name} evaluates {current.evaluating}"
            )
            if rr.attempt == 0:  # the engine's own: only a closed window waits, timed
                assert rr.provider == "DeploymentWindow", f"engine rule {rr.rule} left running"
                assert rr.deadline is not None, f"window {rr.rule} waits with no timer"
                continue
            assert rr.provider == "Commands", f"engine rule {rr.rule} left in progress"
            assert rr.deadline is not None, f"worker rule {rr.rule} runs without a deadline"
            key = WorkItem(PIPELINE, eid, rr.stage, rr.rule_execution_id, rr.attempt, WorkKind.RULE)
            assert key in self.dispatched, f"{key} runs but was never dispatched"

    def _check_runs(self, ex: ExecutionState, ids: dict[str, tuple[str, str, str, int]]) -> None:
        """Every run of every action has its own action execution id, derived from its run
        number, and an earlier run's record never changes."""
        for st in ex.stages:
            for act in st.actions:
                runs = act.runs()
                assert len(runs) == act.run, f"{st.name}.{act.name}: {len(runs)} runs != {act.run}"
                for i, r in enumerate(runs, start=1):
                    where = (ex.execution_id, st.name, act.name, i)
                    assert r.action_execution_id not in ids, (
                        f"action execution id reused: {where} and {ids[r.action_execution_id]}"
                    )
                    ids[r.action_execution_id] = where
                    assert r.action_execution_id == action_execution_id(
                        ex.execution_id, st.name, act.name, i
                    )
                key = (ex.execution_id, st.name, act.name)
                seen = self.runs_seen.get(key, [])
                # The last run seen may have moved on since; every one before it is final.
                assert runs[: max(len(seen) - 1, 0)] == seen[:-1], (
                    f"an earlier run of {key} changed"
                )
                assert [r.action_execution_id for r in runs[: len(seen)]] == [
                    r.action_execution_id for r in seen
                ], f"the runs of {key} changed ids"
                self.runs_seen[key] = runs


_FINAL_STATE = {
    ExecutionStatus.SUCCEEDED: EventState.SUCCEEDED,
    ExecutionStatus.FAILED: EventState.FAILED,
    ExecutionStatus.STOPPED: EventState.STOPPED,
    ExecutionStatus.SUPERSEDED: EventState.SUPERSEDED,
    ExecutionStatus.CANCELLED: EventState.CANCELED,
}
_ACTION_STATE = {
    ActionStatus.SUCCEEDED: EventState.SUCCEEDED,
    ActionStatus.FAILED: EventState.FAILED,
    ActionStatus.ABANDONED: EventState.ABANDONED,
}
_NOT_STARTED = ActionStatus.IN_PROGRESS  # "not terminal yet", for runs that are new


def _running_rules(ex: ExecutionState) -> list[RuleRun]:
    return [rr for st in ex.stages for rr in st.rules if rr.status is RuleStatus.IN_PROGRESS]


def _where(ex: ExecutionState) -> str:
    st = ex.stages[ex.current_stage] if ex.current_stage >= 0 else None
    what = (
        f"waiting for {ex.waiting_for}"
        if ex.waiting_for
        else f"in {st.name} ({st.status}, evaluating {st.evaluating})"
        if st
        else "nowhere"
    )
    return f"{ex.execution_id} {ex.status} {what}"


def _fingerprint(view: View, event: Event) -> object:
    """Everything ``decide`` reads, as plain data (and the identity of the shared
    declarations, which it must never replace or change)."""
    decls = {id(ex.definition): ex.definition for ex in view.executions.values()}
    if view.pipeline is not None:
        decls[id(view.pipeline.declaration)] = view.pipeline.declaration
    return (
        view.run.model_dump(),
        {eid: (ex.model_dump(), id(ex.definition)) for eid, ex in view.executions.items()},
        (view.pipeline.version, id(view.pipeline.declaration)) if view.pipeline else None,
        view.token_owner,
        dict(view.sources),
        event.model_dump(),
        {k: d.model_dump() if d is not None else None for k, d in decls.items()},
    )


def _describe(event: Event, token_owner: str | None) -> str:
    if isinstance(event, Started):
        ex = event.execution
        env = ex.variables.get("Env")
        shown = f"{env[:8]}...({len(env)})" if env is not None and len(env) > 20 else env
        extra = {k: v for k, v in ex.variables.items() if k != "Env"}
        return (
            f"Started({ex.execution_id}, Env={shown!r}{f', {extra}' if extra else ''}, "
            f"token={ex.client_request_token}, owner={token_owner}, now={event.now})"
        )
    if isinstance(event, ActionCompleted):
        return (
            f"ActionCompleted({event.execution_id}, {event.stage}.{event.action}, "
            f"attempt={event.attempt}, ok={event.result.succeeded}, now={event.now})"
        )
    fields = event.model_dump(exclude={"kind"})
    return f"{type(event).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
