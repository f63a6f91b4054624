"""Conveyor's records rendered as CodePipeline's response shapes.

Pure functions from engine records to the camelCase dicts botocore's ``codepipeline`` model
describes, so boto3 and the AWS CLI parse our answers with no Conveyor-specific code.
Timestamps stay epoch seconds (numbers): that is how the JSON 1.1 protocol carries them.
Optional members are left out rather than sent as ``null``, as AWS does.
"""

from __future__ import annotations

from typing import Any

from engine.arns import Account
from engine.definition.model import ActionDeclaration, PipelineDeclaration
from engine.execution import (
    ActionRun,
    ActionState,
    ArtifactLocation,
    ExecutionState,
    RuleRun,
    RuleStatus,
    StageState,
    StageStatus,
)
from engine.rules import ConditionKind, RuleDeclaration
from engine.service import PipelineRecord, StageView


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# Configuration keys CodePipeline treats as secret: GetPipeline shows them as ``****``.
# (GitHub version 1's OAuthToken; Conveyor never uses it for auth, credentials come from
# settings, but a definition copied from AWS may still carry a real token.)
SECRET_CONFIGURATION_KEYS = frozenset({"OAuthToken"})
MASK = "****"


def masked(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config or not SECRET_CONFIGURATION_KEYS.intersection(config):
        return config
    return {k: MASK if k in SECRET_CONFIGURATION_KEYS else v for k, v in config.items()}


# ---------------------------------------------------------------------------- pipelines


def declaration(rec: PipelineRecord) -> dict[str, Any]:
    decl = rec.declaration.to_aws()
    for stage in decl.get("stages", []):
        for action in stage.get("actions", []):
            if "configuration" in action:
                action["configuration"] = masked(action["configuration"])
    return {**decl, "version": rec.version}


def metadata(rec: PipelineRecord, account: Account) -> dict[str, Any]:
    return {
        "pipelineArn": account.pipeline_arn(rec.declaration.name),
        "created": rec.created,
        "updated": rec.updated,
    }


def pipeline_summary(rec: PipelineRecord) -> dict[str, Any]:
    d = rec.declaration
    return {
        "name": d.name,
        "version": rec.version,
        "pipelineType": d.pipeline_type,
        "executionMode": d.execution_mode,
        "created": rec.created,
        "updated": rec.updated,
    }


# ---------------------------------------------------------------------------- executions


def _trigger(s: ExecutionState) -> dict[str, Any]:
    return _prune({"triggerType": s.trigger_type.value, "triggerDetail": s.trigger_detail})


def _source_revisions(s: ExecutionState) -> list[dict[str, Any]]:
    keys = ("actionName", "revisionId", "revisionSummary", "revisionUrl")
    return [{k: r[k] for k in keys if r.get(k) is not None} for r in s.source_revisions]


def _artifact_revisions(s: ExecutionState) -> list[dict[str, Any]]:
    """CodePipeline names a revision after the artifact its source action produced; its
    ``created`` is when the source action took the revision."""
    out = []
    for rev in s.source_revisions:
        action = str(rev.get("actionName", ""))
        decl = _find_action(s.decl, action)
        name = decl.output_artifacts[0].name if decl and decl.output_artifacts else None
        out.append(
            _prune(
                {
                    "name": name or rev.get("actionName"),
                    "revisionId": rev.get("revisionId"),
                    "revisionSummary": rev.get("revisionSummary") or None,
                    "revisionUrl": rev.get("revisionUrl"),
                    "created": _revision_time(s, action),
                }
            )
        )
    return out


def _revision_time(s: ExecutionState, action: str) -> float | None:
    """When a source action finished, taking its revision."""
    for stage in s.stages:
        act = stage.action(action)
        if act is not None:
            return act.last_update_time
    return None


def _current_revision(s: ExecutionState | None, action: str) -> dict[str, Any]:
    """``ActionState`` members of a source action: the revision the latest execution took
    (``currentRevision``, with the revision id as its change id) and its ``revisionUrl``."""
    if s is None:
        return {}
    rev = next((r for r in s.source_revisions if r.get("actionName") == action), None)
    if rev is None or not rev.get("revisionId"):
        return {}
    current = _prune(
        {
            "revisionId": rev["revisionId"],
            "revisionChangeId": rev["revisionId"],
            "created": _revision_time(s, action),
        }
    )
    return _prune({"currentRevision": current, "revisionUrl": rev.get("revisionUrl")})


def _rollback_metadata(s: ExecutionState) -> dict[str, Any] | None:
    if s.rollback_target is None:
        return None
    return {"rollbackTargetPipelineExecutionId": s.rollback_target}


def execution(s: ExecutionState) -> dict[str, Any]:
    return _prune(
        {
            "pipelineName": s.pipeline_name,
            "pipelineVersion": s.pipeline_version,
            "pipelineExecutionId": s.execution_id,
            "status": s.status.value,
            "statusSummary": s.status_summary,
            "artifactRevisions": _artifact_revisions(s),
            "variables": [{"name": k, "resolvedValue": v} for k, v in s.variables.items()],
            "trigger": _trigger(s),
            "executionMode": s.execution_mode,
            "executionType": s.execution_type,
            "rollbackMetadata": _rollback_metadata(s),
        }
    )


def execution_summary(s: ExecutionState) -> dict[str, Any]:
    return _prune(
        {
            "pipelineExecutionId": s.execution_id,
            "status": s.status.value,
            "statusSummary": s.status_summary,
            "startTime": s.start_time,
            "lastUpdateTime": s.last_update_time,
            "sourceRevisions": _source_revisions(s),
            "trigger": _trigger(s),
            "stopTrigger": {"reason": s.stop_reason or ""} if s.stop_mode else None,
            "executionMode": s.execution_mode,
            "executionType": s.execution_type,
            "rollbackMetadata": _rollback_metadata(s),
        }
    )


# ---------------------------------------------------------------------------- actions


def _find_action(
    d: PipelineDeclaration, name: str, stage: str | None = None
) -> ActionDeclaration | None:
    stages = [d.stage(stage)] if stage else d.stages
    return next((a for st in stages if st for a in st.actions if a.name == name), None)


def _s3_url(loc: ArtifactLocation | None) -> str | None:
    return f"s3://{loc.bucket}/{loc.key}" if loc else None


def _external_url(a: ActionState | ActionRun) -> str | None:
    """A provider's own URL wins; else the build log in the artifact bucket."""
    if a.result is None:
        return None
    return a.result.external_execution_url or _s3_url(a.result.log_location)


def _summary(a: ActionState | ActionRun) -> str | None:
    if a.approval_summary:
        return a.approval_summary
    if a.result is None:
        return None
    return a.result.summary or a.result.error_message


def _error_details(a: ActionState | ActionRun) -> dict[str, Any] | None:
    r = a.result
    if r is None or r.succeeded:
        return None
    return {"code": r.error_code or "JobFailed", "message": r.error_message or "action failed"}


def latest_action_execution(a: ActionState) -> dict[str, Any]:
    """``ActionExecution`` of GetPipelineState; the token only while an approval waits."""
    waiting = a.approval_token is not None and a.status is not None and not a.status.terminal
    return _prune(
        {
            "actionExecutionId": a.action_execution_id,
            "status": a.status.value if a.status else None,
            "summary": _summary(a),
            "lastStatusChange": a.last_update_time,
            "token": a.approval_token if waiting else None,
            "lastUpdatedBy": a.approved_by,
            "externalExecutionId": a.result.external_execution_id if a.result else None,
            "externalExecutionUrl": _external_url(a),
            "errorDetails": _error_details(a),
        }
    )


def _stage_execution(ex: ExecutionState, status: str) -> dict[str, Any]:
    """``StageExecution``: which execution, how it stands in this stage, of which type."""
    return {"pipelineExecutionId": ex.execution_id, "status": status, "type": ex.execution_type}


def _transition(view: StageView) -> dict[str, Any]:
    t = view.transition
    if t is None:
        return {"enabled": True}
    return _prune(
        {
            "enabled": t.enabled,
            "lastChangedBy": t.changed_by,
            "lastChangedAt": t.changed_at,
            "disabledReason": None if t.enabled else t.reason,
        }
    )


# ConditionExecutionStatus of a set of rule runs, worst first.
_CONDITION_ORDER = (RuleStatus.IN_PROGRESS, RuleStatus.FAILED, RuleStatus.ABANDONED)


def _condition_status(runs: list[RuleRun], overridden: bool) -> str:
    if overridden:
        return "Overridden"
    statuses = {rr.status for rr in runs}
    return next((s.value for s in _CONDITION_ORDER if s in statuses), RuleStatus.SUCCEEDED.value)


def _failure_summary(runs: list[RuleRun]) -> str | None:
    failed = [
        f"{rr.rule}: {rr.summary}" if rr.summary else rr.rule
        for rr in runs
        if rr.status is RuleStatus.FAILED
    ]
    return "; ".join(failed) or None


def _rule_state(rr: RuleRun) -> dict[str, Any]:
    return {
        "ruleName": rr.rule,
        "latestExecution": _prune(
            {
                "ruleExecutionId": rr.rule_execution_id,
                "status": rr.status,
                "summary": rr.summary,
                "lastStatusChange": rr.last_update_time,
            }
        ),
    }


def condition_state(st: StageState, kind: ConditionKind) -> dict[str, Any] | None:
    """``StageConditionState`` of one kind (beforeEntry, onSuccess, onFailure) of a stage's
    latest execution, from its rule runs; None when that kind never ran."""
    runs = [rr for rr in st.rules if rr.kind == kind]
    if not runs:
        return None
    overridden = kind in st.overridden
    conditions = []
    for index in sorted({rr.condition for rr in runs}):
        mine = [rr for rr in runs if rr.condition == index]
        conditions.append(
            {
                "latestExecution": _prune(
                    {
                        "status": _condition_status(mine, overridden),
                        "summary": _failure_summary(mine),
                        "lastStatusChange": max(rr.last_update_time for rr in mine),
                    }
                ),
                "ruleStates": [_rule_state(rr) for rr in mine],
            }
        )
    return {
        "latestExecution": _prune(
            {"status": _condition_status(runs, overridden), "summary": _failure_summary(runs)}
        ),
        "conditionStates": conditions,
    }


_CONDITION_KEYS = {kind: f"{kind.value}ConditionState" for kind in ConditionKind}


def _retry_metadata(st: StageState) -> dict[str, Any] | None:
    """``RetryStageMetadata``. A manual retry clears ``auto_retried``, so when it is set the
    automatic retry came last."""
    if not st.retries and not st.auto_retried:
        return None
    return {
        "autoStageRetryAttempt": int(st.auto_retried),
        "manualStageRetryAttempt": st.retries,
        "latestRetryTrigger": "AutomatedStageRetry" if st.auto_retried else "ManualStageRetry",
    }


def _stage_state(
    view: StageView,
    decl_actions: list[ActionDeclaration],
    waiting: list[ExecutionState],
    *,
    first: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {"stageName": view.name}
    if view.inbound is not None:
        out["inboundExecution"] = _stage_execution(view.inbound, StageStatus.IN_PROGRESS)
    if waiting:
        out["inboundExecutions"] = [_stage_execution(ex, StageStatus.IN_PROGRESS) for ex in waiting]
    if not first:  # nothing comes into the first stage, so AWS shows no transition there
        out["inboundTransitionState"] = _transition(view)
    st: StageState | None = view.execution.stage(view.name) if view.execution else None
    if view.execution is not None and st is not None and st.status is not None:
        out["latestExecution"] = _stage_execution(view.execution, st.status.value)
    actions = []
    for ad in decl_actions:
        row: dict[str, Any] = {"actionName": ad.name}
        act = st.action(ad.name) if st else None
        if act is not None and act.status is not None:
            row["latestExecution"] = latest_action_execution(act)
        row.update(_current_revision(view.execution, ad.name))
        actions.append(row)
    out["actionStates"] = actions
    if st is not None:
        for kind, key in _CONDITION_KEYS.items():
            cs = condition_state(st, kind)
            if cs is not None:
                out[key] = cs
        retry = _retry_metadata(st)
        if retry is not None:
            out["retryStageMetadata"] = retry
    return out


def pipeline_state(
    rec: PipelineRecord,
    views: list[StageView],
    waiting: dict[str, list[ExecutionState]] | None = None,
) -> dict[str, Any]:
    """GetPipelineState. ``waiting``: per stage, every execution queued at its inbound
    transition in admission order (``inboundExecutions``); ``StageView.inbound`` is the next."""
    stages = {s.name: s for s in rec.declaration.stages}
    waiting = waiting or {}
    return {
        "pipelineName": rec.declaration.name,
        "pipelineVersion": rec.version,
        "stageStates": [
            _stage_state(v, stages[v.name].actions, waiting.get(v.name, []), first=i == 0)
            for i, v in enumerate(views)
        ],
        "created": rec.created,
        "updated": rec.updated,
    }


def _artifact(loc: ArtifactLocation) -> dict[str, Any]:
    return {"name": loc.name, "s3location": {"bucket": loc.bucket, "key": loc.key}}


def action_execution_detail(
    s: ExecutionState, a: ActionState, run: ActionRun, region: str
) -> dict[str, Any]:
    """One run of one action (``a`` is the action, ``run`` the run being shown); ``region``:
    the installation's, shown for an action that names none (AWS always shows one)."""
    decl = _find_action(s.decl, a.name, a.stage)
    inp: dict[str, Any] = {}
    if decl is not None:
        inp = _prune(
            {
                "actionTypeId": decl.action_type_id.model_dump(mode="json"),
                "configuration": masked(decl.configuration),
                "roleArn": decl.role_arn,
                "region": decl.region or region,
                "namespace": decl.namespace,
            }
        )
    inp["resolvedConfiguration"] = masked(run.resolved_configuration)
    inp["inputArtifacts"] = [_artifact(x) for x in run.input_artifacts]
    detail = _prune(
        {
            "pipelineExecutionId": s.execution_id,
            "actionExecutionId": run.action_execution_id,
            "pipelineVersion": s.pipeline_version,
            "stageName": a.stage,
            "actionName": a.name,
            "startTime": run.start_time,
            "lastUpdateTime": run.last_update_time,
            "updatedBy": run.approved_by,
            "status": run.status.value,
            "input": inp,
        }
    )
    token = _parallel_approval_token(s, a, run)
    if token is not None:
        # AWS's PutApprovalResult reference: in PARALLEL mode the token to answer an
        # approval is this run's externalExecutionId in ListActionExecutions.
        detail["output"] = {
            "outputArtifacts": [],
            "executionResult": {"externalExecutionId": token},
            "outputVariables": {},
        }
    if run.result is not None:
        detail["output"] = {
            "outputArtifacts": [_artifact(x) for x in run.result.output_artifacts],
            "executionResult": _prune(
                {
                    "externalExecutionId": run.result.external_execution_id,
                    "externalExecutionSummary": _summary(run),
                    "externalExecutionUrl": _external_url(run),
                    "errorDetails": _error_details(run),
                }
            ),
            "outputVariables": run.result.output_variables,
        }
    return detail


def _parallel_approval_token(s: ExecutionState, a: ActionState, run: ActionRun) -> str | None:
    """The waiting approval's token, for the run that waits, in a PARALLEL execution."""
    if s.execution_mode != "PARALLEL" or a.approval_token is None or run.result is not None:
        return None
    if run.action_execution_id != a.action_execution_id or run.status.terminal:
        return None
    return a.approval_token


# ---------------------------------------------------------------------------- rules


def _rule_declaration(s: ExecutionState, rr: RuleRun) -> RuleDeclaration | None:
    sdecl = s.decl.stage(rr.stage)
    return sdecl.rule(rr.kind, rr.condition, rr.rule) if sdecl is not None else None


def rule_execution_detail(s: ExecutionState, rr: RuleRun) -> dict[str, Any]:
    """``RuleExecutionDetail`` of ListRuleExecutions."""
    stage = rr.stage
    decl = _rule_declaration(s, rr)
    inp: dict[str, Any] = {}
    if decl is not None:
        inp = _prune(
            {
                "ruleTypeId": decl.rule_type_id.model_dump(mode="json"),
                "configuration": masked(decl.configuration),
                "roleArn": decl.role_arn,
                "region": decl.region,
            }
        )
        inp["inputArtifacts"] = [
            _artifact(s.artifacts[a.name]) for a in decl.input_artifacts if a.name in s.artifacts
        ]
    else:
        inp["ruleTypeId"] = {
            "category": "Rule",
            "owner": "AWS",
            "provider": rr.provider,
            "version": "1",
        }
    inp["resolvedConfiguration"] = rr.resolved_configuration
    detail = _prune(
        {
            "pipelineExecutionId": s.execution_id,
            "ruleExecutionId": rr.rule_execution_id,
            "pipelineVersion": s.pipeline_version,
            "stageName": stage,
            "ruleName": rr.rule,
            "startTime": rr.start_time,
            "lastUpdateTime": rr.last_update_time,
            "status": rr.status,
            "input": inp,
        }
    )
    # A rule that waits (a closed DeploymentWindow) already says what for, and until when.
    if not rr.in_progress or rr.summary:
        detail["output"] = {"executionResult": _prune({"externalExecutionSummary": rr.summary})}
    return detail
