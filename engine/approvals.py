"""Who may answer a manual approval: approver lists and separation of duties (pure).

Configured with pipeline tags, so only admins (who alone may tag) set them and
ListTagsForResource shows them:

* ``conveyor:approvers`` — principal names that may answer any approval in the pipeline;
* ``conveyor:approvers:<StageName>`` — the same for one stage; it wins over the pipeline's;
* ``conveyor:separation-of-duties`` — ``true``: whoever started an execution (with
  StartPipelineExecution) may not answer its approvals.

Names are separated by commas and/or spaces (``alice,bob`` or ``alice bob``). With no list,
anyone whose roles allow PutApprovalResult may answer; a list binds admins too (an admin
who should approve is listed; an admin can always change the list, and that is audited).

:func:`approval_refusal` is the judge; the scheduler calls it inside the compare-and-set,
with the execution's starter as stored in it, so the check and the answer are one step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import Field

from engine.auth.identity import PRINCIPAL_NAME, principal_name
from engine.auth.principals import Principal
from engine.errors import InvalidTagsError
from engine.execution import ExecutionState, TriggerType
from engine.records import Record

PREFIX = "conveyor:"
APPROVERS = "conveyor:approvers"
STAGE_APPROVERS = "conveyor:approvers:"
SEPARATION_OF_DUTIES = "conveyor:separation-of-duties"
KNOWN_KEYS = (APPROVERS, f"{STAGE_APPROVERS}<StageName>", SEPARATION_OF_DUTIES)
# CodePipeline's StageName pattern.
_STAGE_NAME = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")
_SEPARATORS = re.compile(r"[,\s]+")
_BOOLEANS = {"true": True, "false": False}


class ApprovalPolicy(Record):
    """A pipeline's approval rules, read from its tags (:func:`policy_from_tags`)."""

    approvers: frozenset[str] | None = None  # None: no pipeline-wide list
    stage_approvers: dict[str, frozenset[str]] = Field(default_factory=dict)
    separation_of_duties: bool = False

    def approvers_for(self, stage: str) -> frozenset[str] | None:
        """The list that governs ``stage``: its own, else the pipeline's, else None."""
        return self.stage_approvers.get(stage, self.approvers)


def parse_names(value: str, where: str) -> frozenset[str]:
    """A tag's list of principal names; InvalidTagsError naming the bad one."""
    names = [n for n in _SEPARATORS.split(value.strip()) if n]
    if not names:
        raise InvalidTagsError(f"{where}: lists no principal; name at least one, or untag it")
    for name in names:
        if not PRINCIPAL_NAME.match(name):
            raise InvalidTagsError(
                f"{where}: '{name[:70]}' is not a principal name (1-64 of letters, digits "
                "and + = . @ _ -; separate names with commas or spaces)"
            )
    return frozenset(names)


def parse_flag(value: str, where: str) -> bool:
    flag = _BOOLEANS.get(value.strip().lower())
    if flag is None:
        raise InvalidTagsError(f"{where}: '{value[:40]}' must be true or false")
    return flag


def is_policy_key(key: str) -> bool:
    return key.startswith(PREFIX)


def check_policy_tag(key: str, value: str, where: str) -> None:
    """Refuse a malformed ``conveyor:`` tag when it is set, not when an approval is
    answered: a typo must not quietly leave an approval open to everyone. Unknown keys
    under ``conveyor:`` are refused too (the prefix is Conveyor's, like ``aws:`` is AWS's)."""
    if key == APPROVERS:
        parse_names(value, f"{where} ({key})")
    elif key.startswith(STAGE_APPROVERS):
        stage = key[len(STAGE_APPROVERS) :]
        if not _STAGE_NAME.match(stage):
            raise InvalidTagsError(f"{where}: '{key}' does not end in a stage name")
        parse_names(value, f"{where} ({key})")
    elif key == SEPARATION_OF_DUTIES:
        parse_flag(value, f"{where} ({key})")
    else:
        raise InvalidTagsError(
            f"{where}: '{key}' is not a Conveyor tag; the conveyor: prefix is reserved for "
            f"{', '.join(KNOWN_KEYS)}"
        )


def check_stages(tags: Mapping[str, str], stages: set[str], pipeline: str) -> None:
    """Refuse a stage list naming no stage of the pipeline: a typo would silently leave the
    stage under the pipeline's list (or none)."""
    for key in tags:
        if key.startswith(STAGE_APPROVERS) and key[len(STAGE_APPROVERS) :] not in stages:
            raise InvalidTagsError(
                f"tag {key}: pipeline {pipeline} has no stage "
                f"'{key[len(STAGE_APPROVERS) :]}' (its stages: {', '.join(sorted(stages))})"
            )


def policy_from_tags(tags: Mapping[str, str]) -> ApprovalPolicy:
    """The policy in a pipeline's tags (already checked when they were set)."""
    stages = {
        k[len(STAGE_APPROVERS) :]: parse_names(v, k)
        for k, v in tags.items()
        if k.startswith(STAGE_APPROVERS)
    }
    return ApprovalPolicy(
        approvers=parse_names(tags[APPROVERS], APPROVERS) if APPROVERS in tags else None,
        stage_approvers=stages,
        separation_of_duties=parse_flag(tags.get(SEPARATION_OF_DUTIES, "false"), "sod"),
    )


def starter(execution: ExecutionState) -> str | None:
    """The principal whose signed request started an execution, whatever the trigger
    (StartPipelineExecution, PutActionRevision, CreatePipeline, RollbackStage): its
    ``started_by``. None when Conveyor itself started it (webhooks, polling, automated
    rollbacks): no person did. Records from before ``started_by`` existed fall back to the
    IAM user in a StartPipelineExecution trigger's ``triggerDetail``, as AWS records it."""
    if execution.started_by is not None:
        return principal_name(execution.started_by)
    if execution.trigger_type is not TriggerType.START_PIPELINE_EXECUTION:
        return None
    return principal_name(execution.trigger_detail)


def approval_refusal(
    principal: Principal, policy: ApprovalPolicy, stage: str, starter: str | None
) -> str | None:
    """Why ``principal`` may not answer an approval in ``stage`` of an execution started by
    ``starter`` (a principal name; None when Conveyor started it), or None if they may."""
    if not principal.may_call("PutApprovalResult"):
        return f"principal '{principal.name}' has no role that allows PutApprovalResult"
    listed = policy.approvers_for(stage)
    if listed is not None and principal.name not in listed:
        which = f"{STAGE_APPROVERS}{stage}" if stage in policy.stage_approvers else APPROVERS
        return (
            f"principal '{principal.name}' is not an approver of stage {stage}: the "
            f"pipeline's tag {which} lists {', '.join(sorted(listed))}"
        )
    if policy.separation_of_duties and starter is not None and starter == principal.name:
        return (
            f"separation of duties: principal '{principal.name}' started this execution "
            f"and so may not approve or reject it (tag {SEPARATION_OF_DUTIES}=true)"
        )
    return None
