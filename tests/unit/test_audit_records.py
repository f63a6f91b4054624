"""Audit records (pure): the target of each operation, the parameter summary, redaction."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.audit import Outcome, build_record, fingerprint, matches, summarize, target_of
from workers.cli_client import since_ms

ARN = "arn:aws:codepipeline:us-east-1:111122223333"
TOKEN = "2f1a3c4d-0000-4000-8000-0123456789ab"


@pytest.mark.parametrize(
    ("operation", "body", "target", "pipeline"),
    [
        ("CreatePipeline", {"pipeline": {"name": "web"}}, "web", "web"),
        ("DeletePipeline", {"name": "web"}, "web", "web"),
        ("StartPipelineExecution", {"name": "web"}, "web", "web"),
        (
            "StopPipelineExecution",
            {"pipelineName": "web", "pipelineExecutionId": "e"},
            "web",
            "web",
        ),
        (
            "PutApprovalResult",
            {"pipelineName": "web", "stageName": "Approve", "actionName": "Gate", "token": TOKEN},
            "web.Approve.Gate",
            "web",
        ),
        ("TagResource", {"resourceArn": f"{ARN}:web", "tags": []}, f"{ARN}:web", "web"),
        (
            "UntagResource",
            {"resourceArn": f"{ARN}:webhook:h", "tagKeys": []},
            f"{ARN}:webhook:h",
            None,
        ),
        (
            "PutWebhook",
            {"webhook": {"name": "h", "targetPipeline": "web"}},
            "webhook:h",
            "web",
        ),
        ("DeleteWebhook", {"name": "h"}, "webhook:h", None),
        ("RegisterWebhookWithThirdParty", {"webhookName": "h"}, "webhook:h", None),
        (
            "CreateCustomActionType",
            {"category": "Build", "provider": "Mine", "version": "1"},
            "actiontype:Custom/Build/Mine/1",
            None,
        ),
        (
            "UpdateActionType",
            {
                "actionType": {
                    "id": {"category": "Test", "owner": "Custom", "provider": "T", "version": "2"}
                }
            },
            "actiontype:Custom/Test/T/2",
            None,
        ),
        (
            "PollForJobs",
            {
                "actionTypeId": {
                    "category": "Build",
                    "owner": "Custom",
                    "provider": "P",
                    "version": "1",
                }
            },
            "actiontype:Custom/Build/P/1",
            None,
        ),
        ("AcknowledgeJob", {"jobId": "j-1", "nonce": "n"}, "job:j-1", None),
        ("PutJobSuccessResult", {"jobId": "j-1"}, "job:j-1", None),
        (
            "PutActionRevision",
            {"pipelineName": "web", "stageName": "Source", "actionName": "Fetch"},
            "web.Source.Fetch",
            "web",
        ),
        ("ListPipelines", {}, None, None),
    ],
)
def test_the_target_of_each_operation(
    operation: str, body: dict[str, Any], target: str | None, pipeline: str | None
) -> None:
    assert target_of(operation, body) == (target, pipeline)


def test_secrets_become_fingerprints_and_long_values_are_cut() -> None:
    body = {
        "pipelineName": "web",
        "token": TOKEN,
        "result": {"summary": "x" * 500, "status": "Approved"},
        "webhook": {"authenticationConfiguration": {"SecretToken": "s3cr3t-value"}},
        "nonce": "n-123",
        "clientToken": "ct-456",
        "items": list(range(50)),
    }
    body["credentials"] = {"secretAccessKey": "abc12345", "accessKeyId": "AKIA1"}
    summary = summarize(body)
    assert summary["credentials"] == "(redacted)"
    assert summary["token"] == fingerprint(TOKEN)
    assert summary["webhook"]["authenticationConfiguration"]["SecretToken"].startswith("sha256:")
    assert summary["nonce"].startswith("sha256:") and summary["clientToken"].startswith("sha256:")
    assert len(summary["result"]["summary"]) <= 120
    assert summary["items"] == "[50 items]"
    text = json.dumps(summary)
    assert TOKEN not in text and "s3cr3t-value" not in text


def test_a_declaration_is_summarised_by_its_name_and_stages_and_its_secrets_scrubbed() -> None:
    decl = {
        "name": "web",
        "stages": [
            {
                "name": "Source",
                "actions": [{"name": "Gh", "configuration": {"OAuthToken": "ghp_supersecret"}}],
            },
            {"name": "Build"},
        ],
    }
    record = build_record(
        operation="CreatePipeline",
        body={"pipeline": decl},
        outcome=Outcome(400, "InvalidActionDeclarationException", "bad value ghp_supersecret"),
        now=0,
    )
    assert record["params"]["pipeline"] == {"name": "web", "stages": ["Source", "Build"]}
    assert record["message"] == "bad value ***"
    assert "ghp_supersecret" not in json.dumps(record)
    assert record["time"] == "1970-01-01T00:00:00.000Z"
    assert (record["outcome"], record["status"]) == ("InvalidActionDeclarationException", 400)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
SECRET_KEYS = st.sampled_from(
    ["token", "SecretToken", "nonce", "clientToken", "password", "OAuthToken"]
)


@given(
    JSON,
    SECRET_KEYS,
    st.text(min_size=8, max_size=40).filter(lambda s: s.isalnum()),
    st.integers(0, 3),
)
def test_no_secret_survives_in_a_record(noise: Any, key: str, secret: str, depth: int) -> None:
    secret = f"Secr3t{secret}"  # not a word the record holds anyway
    body: dict[str, Any] = {key: secret}
    for _ in range(depth):
        body = {"wrapper": body, "noise": noise}
    record = build_record(
        operation="PutWebhook",
        body=body,
        outcome=Outcome(400, "ValidationException", f"value {secret} is bad"),
        now=0,
    )
    assert secret not in json.dumps(record)


@given(JSON)
def test_a_summary_is_small_whatever_is_sent(body: Any) -> None:
    wide = {f"k{i}": body for i in range(30)}
    assert len(json.dumps(summarize(wide))) < 20_000


def test_outcome_of_a_reply() -> None:
    assert Outcome.of_reply(200, b"{}").ok
    denied = Outcome.of_reply(400, b'{"__type":"AccessDeniedException","message":"no"}')
    assert (denied.code, denied.message, denied.ok) == ("AccessDeniedException", "no", False)
    assert Outcome.of_reply(500, b"not json").code == "Error"


def test_filters() -> None:
    record = {"pipeline": "web", "principal": "alice", "operation": "PutApprovalResult"}
    assert matches(record, pipeline="web", principal="alice", operation="putapprovalresult")
    assert not matches(record, principal="bob")
    assert not matches(record, pipeline="api")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 1_000_000_000 - 90_000),
        ("15m", 1_000_000_000 - 900_000),
        ("2h", 1_000_000_000 - 7_200_000),
        ("1d", 1_000_000_000 - 86_400_000),
        ("1970-01-01T00:00:01Z", 1000),
        ("1970-01-01T00:00:01", 1000),
        ("1970-01-01T01:00:01+01:00", 1000),
    ],
)
def test_since(text: str, expected: int) -> None:
    assert since_ms(text, 1_000_000.0) == expected


def test_since_says_what_it_accepts() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        since_ms("yesterday", 0)
