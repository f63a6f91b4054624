"""Authorization's refusals, in AWS's words, naming the resource the request names."""

from __future__ import annotations

import uuid

import pytest
import redis

from engine import keys
from engine.arns import Account
from engine.auth.access import authorize, resource_arn
from engine.auth.principals import READ_OPERATIONS, Principal, Role
from engine.auth.replay import (
    SAME_CALL_SECONDS,
    TTL_SECONDS,
    ReplayedSignatureError,
    ReplayGuard,
    changes_something,
    replay_key,
)
from engine.auth.sigv4 import AccessDeniedError

ACCOUNT = Account("eu-west-1", "444455556666")
VIEWER = Principal("vera", frozenset({Role.VIEWER}))


@pytest.mark.parametrize(
    ("operation", "body", "resource"),
    [
        ("StartPipelineExecution", {"name": "p"}, "arn:aws:codepipeline:eu-west-1:444455556666:p"),
        (
            "PutApprovalResult",
            {"pipelineName": "q"},
            "arn:aws:codepipeline:eu-west-1:444455556666:q",
        ),
        ("CreatePipeline", {"pipeline": {"name": "new"}}, ACCOUNT.pipeline_arn("new")),
        ("TagResource", {"resourceArn": ACCOUNT.webhook_arn("w")}, ACCOUNT.webhook_arn("w")),
        ("PutWebhook", {"webhook": {"name": "w"}}, None),
        ("StartPipelineExecution", None, None),
        ("StartPipelineExecution", {"name": 5}, None),
    ],
)
def test_the_resource_is_the_one_the_request_names(
    operation: str, body: dict[str, object] | None, resource: str | None
) -> None:
    assert resource_arn(operation, body, ACCOUNT) == resource
    with pytest.raises(AccessDeniedError) as exc:
        authorize(VIEWER, operation, body, ACCOUNT)
    expected = (
        "User: arn:aws:iam::444455556666:user/vera is not authorized to perform: "
        f"codepipeline:{operation}"
    )
    assert exc.value.message == expected + (f" on resource: {resource}" if resource else "")
    assert (exc.value.aws_code, exc.value.status) == ("AccessDeniedException", 400)


def test_reads_are_allowed_to_a_viewer() -> None:
    authorize(VIEWER, "GetPipelineState", {"name": "p"}, ACCOUNT)


def test_a_call_is_its_signature_alone() -> None:
    """Unsigned headers (botocore's amz-sdk-invocation-id) can be changed by whoever
    replays a request: they must not tell two calls apart."""
    assert replay_key("a" * 64) == replay_key("a" * 64)
    assert replay_key("a" * 64) != replay_key("b" * 64)


@pytest.mark.parametrize("operation", sorted(READ_OPERATIONS | {"GET /events", "GET /audit"}))
def test_reads_are_not_checked_for_replays(operation: str) -> None:
    assert not changes_something(operation)


@pytest.mark.parametrize(
    "operation",
    ["StartPipelineExecution", "PutApprovalResult", "PollForJobs", "CreatePipeline", None],
)
def test_changes_and_unknown_requests_are_checked_for_replays(operation: str | None) -> None:
    assert changes_something(operation)


def test_a_change_seen_again_is_refused_after_the_same_call_window(
    redis_client: redis.Redis,
) -> None:
    """Within SAME_CALL_SECONDS of its first sighting identical bytes are the client's own
    (botocore signs the same call identically within a second); after it, a replay, until
    the signature expires. A released signature (its call failed) is new again."""
    now = [1000.0]
    guard = ReplayGuard(redis_client, clock=lambda: now[0])
    signature = uuid.uuid4().hex * 2
    guard.claim(signature)
    now[0] += SAME_CALL_SECONDS
    guard.claim(signature)
    now[0] += 0.5
    with pytest.raises(ReplayedSignatureError):
        guard.claim(signature)
    guard.release(signature)
    guard.claim(signature)
    assert 0 < redis_client.ttl(keys.seen_signature(replay_key(signature))) <= TTL_SECONDS


def test_the_same_attempt_again_is_a_replay_even_within_the_same_call_window(
    redis_client: redis.Redis,
) -> None:
    """A verbatim resend (the same unsigned per-call headers) is refused at once; the
    client's own identical call or its retry (other per-call headers) is served within the
    window; a released signature forgets the calls it saw."""
    now = [1000.0]
    guard = ReplayGuard(redis_client, clock=lambda: now[0])
    signature = uuid.uuid4().hex * 2
    guard.claim(signature, "call-1|attempt=1")
    guard.claim(signature, "call-2|attempt=1")  # the same call made again by the client
    guard.claim(signature, "call-1|attempt=2")  # a retry
    with pytest.raises(ReplayedSignatureError, match="same call"):
        guard.claim(signature, "call-1|attempt=1")
    guard.release(signature)
    guard.claim(signature, "call-1|attempt=1")
