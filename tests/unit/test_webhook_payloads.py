"""Reading GitHub's and GitLab's payloads, and verifying deliveries: pure functions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from engine.definition.triggers import PullRequestEvent
from engine.git_triggers import GitEvent, GitEventKind
from engine.webhooks import payloads
from engine.webhooks.signatures import (
    DEFAULT,
    Unauthorized,
    WebhookConfigError,
    WebhookSecrets,
    sign_github,
    sign_standard,
    verify_github,
    verify_gitlab,
)
from tests.e2e.webhook_support import github_push, gitlab_merge_request, gitlab_push, sha

# --- payloads -----------------------------------------------------------------------------


def test_github_tag_push_names_the_tag_and_the_commit_it_tags() -> None:
    data = github_push("o/r", "refs/tags/v1.2", sha("commit"), [])
    data["after"] = sha("annotated-tag-object")
    event = payloads.github("push", data)
    assert isinstance(event, GitEvent)
    assert (event.kind, event.tag, event.branch) == (GitEventKind.PUSH, "v1.2", None)
    assert event.commit_id == sha("commit")


def test_deleted_branches_start_nothing() -> None:
    gh = github_push("o/r", "refs/heads/old", "0" * 40, [])
    gh["deleted"] = True
    assert isinstance(payloads.github("push", gh), payloads.Ignored)
    gl = gitlab_push("g/p", "old", sha("x"), [])
    gl["checkout_sha"] = None
    gl["after"] = "0" * 40
    assert isinstance(payloads.gitlab("Push Hook", gl), payloads.Ignored)


def test_gitlab_push_listing_fewer_commits_than_it_made_leaves_files_unknown() -> None:
    data = gitlab_push("g/p", "main", sha("c"), ["a.txt"])
    event = payloads.gitlab("Push Hook", data)
    assert isinstance(event, GitEvent)
    assert event.changed_files == frozenset({"a.txt"})
    data["total_commits_count"] = 45  # GitLab lists at most 20 of them
    event = payloads.gitlab("Push Hook", data)
    assert isinstance(event, GitEvent)
    assert event.changed_files is None


@pytest.mark.parametrize(
    ("action", "oldrev", "expected"),
    [
        ("open", None, PullRequestEvent.OPEN),
        ("reopen", None, PullRequestEvent.OPEN),
        ("update", "abc", PullRequestEvent.UPDATED),
        ("update", None, None),  # a title edit: no new commits
        ("merge", None, PullRequestEvent.CLOSED),
        ("close", None, PullRequestEvent.CLOSED),
        ("approved", None, None),
    ],
)
def test_gitlab_merge_request_actions(
    action: str, oldrev: str | None, expected: PullRequestEvent | None
) -> None:
    data = gitlab_merge_request("g/p", action, "main", "topic", sha("mr"))
    if oldrev:
        data["object_attributes"]["oldrev"] = oldrev
    event = payloads.gitlab("Merge Request Hook", data)
    if expected is None:
        assert isinstance(event, payloads.Ignored)
    else:
        assert isinstance(event, GitEvent)
        assert (event.pr_event, event.base_branch, event.branch) == (expected, "main", "topic")
        assert event.changed_files is None  # merge request hooks do not list files


def test_missing_required_fields_name_the_field() -> None:
    with pytest.raises(payloads.BadPayload, match=re.escape("'pull_request.head.sha'")):
        payloads.github("pull_request", {"action": "opened", "repository": {"full_name": "o/r"}})


def test_cloudformation_triggers_load_from_pascal_case() -> None:
    from engine.definition import normalize
    from engine.definition.model import PipelineDeclaration

    raw = normalize(
        {
            "Type": "AWS::CodePipeline::Pipeline",
            "Properties": {
                "Name": "p",
                "Stages": [],
                "Triggers": [
                    {
                        "ProviderType": "CodeStarSourceConnection",
                        "GitConfiguration": {
                            "SourceActionName": "Src",
                            "Push": [{"Branches": {"Includes": ["main"]}}],
                            "PullRequest": [
                                {"Events": ["OPEN"], "FilePaths": {"Excludes": ["docs/**"]}}
                            ],
                        },
                    }
                ],
            },
        }
    )
    git = PipelineDeclaration.model_validate(raw).triggers[0].git_configuration
    assert git.push is not None
    assert git.push[0].branches is not None
    assert git.push[0].branches.includes == ["main"]
    assert git.pull_request is not None
    assert git.pull_request[0].events == [PullRequestEvent.OPEN]


# --- signatures ---------------------------------------------------------------------------

SECRETS = WebhookSecrets(default=SecretStr("dflt"), by_key={"o/own": SecretStr("own")})


@given(st.binary(max_size=200))
def test_github_signature_verifies_the_body_it_signs_and_no_other(body: bytes) -> None:
    headers = {"x-hub-signature-256": sign_github("dflt", body)}
    assert verify_github(headers, body, SECRETS) == {DEFAULT}
    with pytest.raises(Unauthorized) as exc:
        verify_github(headers, body + b"!", SECRETS)
    assert exc.value.status == 403


@pytest.mark.parametrize("header", ["", "sha1=abcd", "sha256=zz", "sha256=" + "0" * 10])
def test_malformed_github_signatures_are_401(header: str) -> None:
    with pytest.raises(Unauthorized) as exc:
        verify_github({"x-hub-signature-256": header} if header else {}, b"{}", SECRETS)
    assert exc.value.status == 401


def test_gitlab_token_names_the_secret_that_matched() -> None:
    assert verify_gitlab({"x-gitlab-token": "own"}, b"{}", SECRETS, now=0, tolerance_seconds=1) == {
        "o/own"
    }


def test_standard_webhooks_whsec_secrets_are_base64_keys() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    secrets = WebhookSecrets(default=SecretStr(secret))
    sig = sign_standard(secret, "msg_1", 1000, b"{}")
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1000", "webhook-signature": sig}
    assert verify_gitlab(headers, b"{}", secrets, now=1010, tolerance_seconds=300) == {DEFAULT}
    # Several signatures may be listed (key rotation); one valid one is enough.
    headers["webhook-signature"] = f"v1,AAAA {sig}"
    assert verify_gitlab(headers, b"{}", secrets, now=1010, tolerance_seconds=300) == {DEFAULT}


def test_guarding_prefers_the_most_specific_secret() -> None:
    assert SECRETS.guarding("O/Own", None) == "o/own"
    assert SECRETS.guarding("o/other", "arn:x") == DEFAULT
    assert WebhookSecrets(by_key={"arn:x": SecretStr("c")}).guarding("o/r", "arn:x") == "arn:x"
    assert WebhookSecrets(by_key={"arn:x": SecretStr("c")}).guarding("o/r", "arn:y") is None


def test_secrets_files_errors_name_the_file_never_the_content(tmp_path: Path) -> None:
    bad = tmp_path / "secrets.json"
    bad.write_text('{"o/r": "hunter2-secret",')
    with pytest.raises(WebhookConfigError) as exc:
        WebhookSecrets.load(secrets_file=bad)
    assert str(bad) in exc.value.message
    assert "hunter2" not in exc.value.message
    bad.write_text(json.dumps({"o/r": 42}))
    with pytest.raises(WebhookConfigError, match="'o/r' must be a non-empty string"):
        WebhookSecrets.load(secrets_file=bad)
    with pytest.raises(WebhookConfigError, match="cannot read"):
        WebhookSecrets.load(default_file=tmp_path / "missing")
    good = tmp_path / "default"
    good.write_text("from-a-file\n")
    loaded = WebhookSecrets.load(default_file=good)
    assert loaded.default is not None
    assert loaded.default.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(loaded)
