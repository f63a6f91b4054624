"""Approver lists and separation of duties: the tags, the policy and the judge (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.approvals import (
    ApprovalPolicy,
    approval_refusal,
    check_stages,
    parse_names,
    policy_from_tags,
    starter,
)
from engine.arns import Account
from engine.auth.context import RequestContext, acting_as
from engine.auth.identity import caller_arn, principal_arn, principal_name
from engine.auth.principals import Principal, Role
from engine.errors import InvalidTagsError
from engine.execution import ExecutionState, TriggerType
from engine.tags import tags_of

NAMES = st.sampled_from(["alice", "bob", "carol", "dave", "ci.bot@example"])
STAGES = st.sampled_from(["Build", "Approve", "Prod"])
ROLE_SETS = st.frozensets(st.sampled_from(list(Role)), max_size=3)


def tags(**pairs: str) -> dict[str, str]:
    return {k.replace("__", ":").replace("_", "-"): v for k, v in pairs.items()}


# ---------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("alice", {"alice"}),
        ("alice,bob", {"alice", "bob"}),
        ("alice bob", {"alice", "bob"}),
        (" alice ,, bob ,", {"alice", "bob"}),
        ("ci.bot@example.com,a_b-c+d=e", {"ci.bot@example.com", "a_b-c+d=e"}),
    ],
)
def test_approver_names_are_comma_or_space_separated(value: str, names: set[str]) -> None:
    assert parse_names(value, "tag") == names


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("conveyor:approvers", "", "lists no principal"),
        ("conveyor:approvers", "alice;bob", "'alice;bob' is not a principal name"),
        ("conveyor:approvers", "x" * 65, "is not a principal name"),
        ("conveyor:approvers:", "alice", "does not end in a stage name"),
        ("conveyor:approvers:Bad Stage", "alice", "does not end in a stage name"),
        ("conveyor:separation-of-duties", "1", "must be true or false"),
        ("conveyor:owner", "me", "the conveyor: prefix is reserved"),
    ],
)
def test_malformed_policy_tags_are_refused_naming_the_tag(key: str, value: str, says: str) -> None:
    with pytest.raises(InvalidTagsError) as refused:
        tags_of([{"key": "team", "value": "x"}, {"key": key, "value": value}])
    assert says in refused.value.message
    assert refused.value.message.startswith("tags[1]")


def test_policy_tags_may_hold_commas_other_tags_may_not() -> None:
    assert tags_of([{"key": "conveyor:approvers", "value": "a,b"}]) == {"conveyor:approvers": "a,b"}
    with pytest.raises(InvalidTagsError):
        tags_of([{"key": "team", "value": "a,b"}])


def test_stage_lists_must_name_a_stage_of_the_pipeline() -> None:
    check_stages({"conveyor:approvers:Prod": "a", "team": "x"}, {"Prod"}, "p")
    with pytest.raises(InvalidTagsError) as refused:
        check_stages({"conveyor:approvers:Prd": "a"}, {"Build", "Prod"}, "p")
    assert "pipeline p has no stage 'Prd' (its stages: Build, Prod)" in refused.value.message


def test_policy_from_tags() -> None:
    policy = policy_from_tags(
        {
            "conveyor:approvers": "alice, bob",
            "conveyor:approvers:Prod": "carol",
            "conveyor:separation-of-duties": "TRUE",
            "team": "platform",
        }
    )
    assert policy == ApprovalPolicy(
        approvers=frozenset({"alice", "bob"}),
        stage_approvers={"Prod": frozenset({"carol"})},
        separation_of_duties=True,
    )
    assert policy.approvers_for("Prod") == frozenset({"carol"})
    assert policy.approvers_for("QA") == frozenset({"alice", "bob"})
    assert policy_from_tags({}) == ApprovalPolicy()


# ---------------------------------------------------------------------------- identities


def test_principal_arns_round_trip() -> None:
    account = Account(account_id="444455556666")
    assert principal_arn("alice", account) == "arn:aws:iam::444455556666:user/alice"
    assert principal_name("arn:aws:iam::444455556666:user/alice") == "alice"
    assert principal_name("arn:aws:codepipeline:us-east-1:444455556666:webhook:x") is None
    assert principal_name(None) is None


def test_caller_arn_is_none_outside_requests() -> None:
    account = Account()
    assert caller_arn(account) is None
    with acting_as(RequestContext(Principal("alice"))):
        assert caller_arn(account) == principal_arn("alice", account)


def test_only_a_start_by_a_person_has_a_starter() -> None:
    def execution(trigger: TriggerType, detail: str | None) -> ExecutionState:
        # starter() reads the trigger only; the rest of the record does not matter here.
        fields: dict[str, Any] = {"trigger_type": trigger, "trigger_detail": detail}
        return ExecutionState.model_construct(**fields)

    alice = "arn:aws:iam::111122223333:user/alice"
    assert starter(execution(TriggerType.START_PIPELINE_EXECUTION, alice)) == "alice"
    assert starter(execution(TriggerType.START_PIPELINE_EXECUTION, None)) is None
    for other in (TriggerType.WEBHOOK, TriggerType.CREATE_PIPELINE, TriggerType.MANUAL_ROLLBACK):
        assert starter(execution(other, alice)) is None


# ---------------------------------------------------------------------------- the judge


@st.composite
def policies(draw: st.DrawFn) -> ApprovalPolicy:
    listed = st.none() | st.frozensets(NAMES, min_size=1)
    stage_lists = draw(st.dictionaries(STAGES, st.frozensets(NAMES, min_size=1), max_size=2))
    return ApprovalPolicy(
        approvers=draw(listed),
        stage_approvers=stage_lists,
        separation_of_duties=draw(st.booleans()),
    )


@given(NAMES, ROLE_SETS, policies(), STAGES, st.none() | NAMES)
def test_the_judge_follows_roles_lists_and_separation_of_duties(
    name: str, roles: frozenset[Role], policy: ApprovalPolicy, stage: str, started_by: str | None
) -> None:
    who = Principal(name, roles)
    refusal = approval_refusal(who, policy, stage, started_by)
    may_answer = Role.APPROVER in roles or Role.ADMIN in roles
    listed = policy.stage_approvers.get(stage, policy.approvers)
    expected = (
        may_answer
        and (listed is None or name in listed)
        and not (policy.separation_of_duties and started_by == name)
    )
    assert (refusal is None) == expected
    if refusal is not None:
        assert name in refusal  # it names who was refused


@given(NAMES, policies(), STAGES)
def test_without_separation_of_duties_the_starter_is_irrelevant(
    name: str, policy: ApprovalPolicy, stage: str
) -> None:
    who = Principal(name, frozenset({Role.APPROVER}))
    policy = policy.model_copy(update={"separation_of_duties": False})
    assert approval_refusal(who, policy, stage, name) == approval_refusal(who, policy, stage, None)


@given(NAMES, STAGES, st.none() | NAMES)
def test_with_no_policy_every_approver_may_answer(
    name: str, stage: str, started_by: str | None
) -> None:
    who = Principal(name, frozenset({Role.APPROVER}))
    assert approval_refusal(who, ApprovalPolicy(), stage, started_by) is None


def test_refusals_say_which_rule() -> None:
    alice = Principal("alice", frozenset({Role.APPROVER}))
    stage_list = ApprovalPolicy(
        approvers=frozenset({"alice"}), stage_approvers={"Prod": frozenset({"bob"})}
    )
    said = approval_refusal(alice, stage_list, "Prod", None)
    assert said is not None and "conveyor:approvers:Prod lists bob" in said
    sod = approval_refusal(alice, ApprovalPolicy(separation_of_duties=True), "Prod", "alice")
    assert sod is not None and "separation of duties" in sod
    viewer = approval_refusal(
        Principal("vic", frozenset({Role.VIEWER})), ApprovalPolicy(), "Prod", None
    )
    assert viewer is not None and "PutApprovalResult" in viewer
