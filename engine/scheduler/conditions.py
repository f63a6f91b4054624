"""Stage conditions inside a transition: starting rule runs and reading their verdict.

What a verdict *does* to the stage (enter it, skip it, fail it, retry it) is decided in
:mod:`engine.scheduler.flow`; here is only how conditions are run and judged.
"""

from __future__ import annotations

from engine import rules as rule_engine
from engine.execution import ExecutionState, RuleRun, RuleStatus, StageState
from engine.ids import rule_execution_id
from engine.messages import Dispatch, Revoke, WorkKind
from engine.rules import Condition, ConditionKind, RuleDeclaration
from engine.scheduler.context import Ctx

# A Commands rule's default timeout, as for CodeBuild-run rules on AWS.
DEFAULT_RULE_TIMEOUT_MINUTES = 20


def declared(ex: ExecutionState, stage: str, kind: ConditionKind) -> bool:
    """Whether the stage declares conditions of this kind."""
    return bool(_conditions(ex, stage, kind))


def _conditions(ex: ExecutionState, stage: str, kind: ConditionKind) -> list[Condition]:
    return ex.stage_decl(stage).conditions(kind)


def evaluated(st: StageState, kind: ConditionKind) -> bool:
    """Whether the conditions of this kind ran to the end in the stage's current round."""
    runs = [rr for rr in st.rules if rr.kind is kind]
    return bool(runs) and not any(rr.in_progress for rr in runs)


def pending(ex: ExecutionState, st: StageState, kind: ConditionKind) -> bool:
    """Whether the stage must still evaluate its conditions of this kind before it moves."""
    return (
        declared(ex, st.name, kind)
        and st.evaluating is not kind
        and kind not in st.overridden
        and not evaluated(st, kind)
    )


def met(st: StageState, kind: ConditionKind) -> bool:
    if kind in st.overridden:
        return True
    return all(
        rr.status in (RuleStatus.SUCCEEDED, RuleStatus.ABANDONED)
        for rr in st.rules
        if rr.kind is kind
    )


def settled(st: StageState) -> bool:
    """No rule of the kind being evaluated is still running."""
    kind = st.evaluating
    return kind is not None and not any(rr.in_progress for rr in st.rules if rr.kind is kind)


def failed_rules(st: StageState, kind: ConditionKind) -> list[RuleRun]:
    return [rr for rr in st.rules if rr.kind is kind and rr.status is RuleStatus.FAILED]


def failed_results(ex: ExecutionState, st: StageState, kind: ConditionKind) -> set[str | None]:
    """The results (SKIP, FAIL, ROLLBACK…) of the conditions whose rules failed."""
    conds = _conditions(ex, st.name, kind)
    return {conds[rr.condition].result for rr in failed_rules(st, kind)}


def why(st: StageState, kind: ConditionKind) -> str:
    return "; ".join(f"rule {rr.rule}: {rr.summary}" for rr in failed_rules(st, kind))


def failure_result(ex: ExecutionState, st: StageState) -> str | None:
    """What a failed stage's onFailure engages (RETRY, ROLLBACK), if anything."""
    on_failure = ex.stage_decl(st.name).on_failure
    if on_failure is None:
        return None
    if on_failure.conditions and not met(st, ConditionKind.ON_FAILURE):
        return None  # onFailure conditions gate their result: it engages only when met
    # A condition's own result wins over the block's (as the definition check allows).
    cond = on_failure.conditions[0] if on_failure.conditions else None
    return (cond.result if cond else None) or on_failure.result


def start_rules(c: Ctx, ex: ExecutionState, st: StageState, kind: ConditionKind) -> None:
    """Run every rule of the stage's conditions of ``kind``; worker rules are dispatched."""
    st.evaluating = kind
    st.rules = [rr for rr in st.rules if rr.kind is not kind]
    for ci, cond in enumerate(_conditions(ex, st.name, kind)):
        for rule in cond.rules:
            rr = RuleRun(
                rule_execution_id=rule_execution_id(
                    ex.execution_id, st.name, kind, ci, rule.name, st.retries, c.now
                ),
                stage=st.name,
                kind=kind,
                condition=ci,
                rule=rule.name,
                provider=rule.rule_type_id.provider,
                status=RuleStatus.IN_PROGRESS,
                start_time=c.now,
                last_update_time=c.now,
                resolved_configuration={k: ex.resolve(v) for k, v in rule.configuration.items()},
            )
            st.rules.append(rr)
            if rule_engine.needs_worker(rule):
                minutes = rule.timeout_in_minutes or DEFAULT_RULE_TIMEOUT_MINUTES
                rr.deadline = c.now + minutes * ex.minute_seconds
                rr.attempt = 1
                c.dispatch(rule_dispatch(ex, rr))
            else:
                judge(c, ex, rr, rule)


def judge(c: Ctx, ex: ExecutionState, rr: RuleRun, rule: RuleDeclaration) -> None:
    """Evaluate a rule the engine decides itself. One that cannot decide yet (a closed
    DeploymentWindow) stays in progress, holding its stage, with its deadline at the moment
    to look again: the execution's timer fires then (``recheck_due``)."""
    outcome = rule_engine.evaluate(rule, now=c.now, variables=ex.lookup)
    rr.status = RuleStatus(outcome.status)
    rr.summary = outcome.summary
    rr.deadline = outcome.retry_at
    rr.last_update_time = c.now


def recheck_due(c: Ctx, ex: ExecutionState, st: StageState) -> bool:
    """At a timer: judge again every engine rule whose moment came (a window that may have
    opened), and fail every worker rule past its deadline (its worker died or its report
    was lost: it must not hold the stage forever). Whether any rule was looked at."""
    due = [r for r in st.rules if r.in_progress and r.deadline is not None and r.deadline <= c.now]
    for rr in due:
        rule = ex.stage_decl(st.name).rule(rr.kind, rr.condition, rr.rule)
        if rule is not None and not rule_engine.needs_worker(rule):
            judge(c, ex, rr, rule)
        else:
            finish_rule(c, rr, RuleStatus.FAILED, "the rule timed out before it reported a result")
    return bool(due)


def finish_rule(c: Ctx, rr: RuleRun, status: RuleStatus, summary: str | None) -> None:
    rr.status = status
    rr.summary = summary
    rr.deadline = None
    rr.last_update_time = c.now


def abandon_rules(
    c: Ctx, ex: ExecutionState, st: StageState, *, summary: str | None = None
) -> None:
    """Abandon every rule still running in the stage and tell the worker running it, if
    one does, to stop (an engine rule waiting for its window has no worker: attempt 0)."""
    for rr in st.rules:
        if rr.in_progress:
            if rr.attempt > 0:
                c.revoke(
                    Revoke(
                        execution_id=ex.execution_id,
                        stage=st.name,
                        action=rr.rule_execution_id,
                        attempt=rr.attempt,
                        work=WorkKind.RULE,
                    )
                )
            finish_rule(c, rr, RuleStatus.ABANDONED, summary or rr.summary)


def rule_dispatch(ex: ExecutionState, rr: RuleRun) -> Dispatch:
    return Dispatch(
        execution_id=ex.execution_id,
        stage=rr.stage,
        action=rr.rule_execution_id,
        attempt=rr.attempt,
        queue=rule_engine.worker_queue(rr.provider),
        work=WorkKind.RULE,
    )
