"""Git webhooks over real HTTP, against the real Redis: which deliveries start which
pipelines (seen through boto3), and which are refused having started nothing."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import uvicorn
from botocore.exceptions import ClientError
from pydantic import SecretStr

from engine.api import create_app
from engine.service import Service
from engine.store import Store
from engine.webhooks import WebhookConfig, WebhookSecrets
from engine.webhooks.signatures import sign_github, sign_standard
from tests.auth_support import Principals, codepipeline, signed_get
from tests.e2e.api_support import BUCKET
from tests.e2e.conftest import ApiServer, signing_authenticator
from tests.e2e.webhook_support import (
    CONNECTION,
    git_pipeline,
    github_pull_request,
    github_push,
    gitlab_merge_request,
    gitlab_push,
    post,
    post_chunked,
    post_declaring,
    sha,
    webhook_registry,
)
from tests.helpers import wait_for
from workers import devstack

# A database of its own: the shared API server's (7) is flushed by its own tests.
WEBHOOK_TEST_DB = 12
SECRET = "s3cr3t-default-webhook-value"
PRIVATE_SECRET = "s3cr3t-private-repo-value"
MAX_BODY = 5 * 1024 * 1024
TEN_MB = 10 * 1024 * 1024

WEB = "acme/web"
PRIVATE = "acme/private"
GITLAB_PROJECT = "group/sub/app"


# Pushes to main or release/** start "web", unless all they touch is docs; pull requests
# into main start "web-pr-open" when opened and "web-pr-closed" when closed.
def codecommit_pipeline(name: str, repository: str) -> dict[str, Any]:
    """The same shape with a CodeCommit source: its RepositoryName matches the event's
    repository by its last segment, as Conveyor's triggers allow."""
    decl = git_pipeline(name, repository, {})
    checkout = decl["stages"][0]["actions"][0]
    checkout["actionTypeId"]["provider"] = "CodeCommit"
    checkout["configuration"] = {"RepositoryName": repository, "BranchName": "main"}
    return decl


PIPELINES = [
    git_pipeline(
        "web",
        WEB,
        {
            "push": [
                {
                    "branches": {"includes": ["main", "release/**"]},
                    "filePaths": {"excludes": ["docs/**", "**/*.md"]},
                }
            ]
        },
    ),
    git_pipeline(
        "web-pr-open",
        WEB,
        {"pullRequest": [{"events": ["OPEN"], "branches": {"includes": ["main"]}}]},
    ),
    git_pipeline(
        "web-pr-closed",
        WEB,
        {"pullRequest": [{"events": ["CLOSED"], "branches": {"includes": ["main"]}}]},
    ),
    git_pipeline(
        "gitlab-app",
        GITLAB_PROJECT,
        {
            "push": [{"branches": {"includes": ["main"]}}],
            "pullRequest": [{"events": ["OPEN", "UPDATED"], "branches": {"includes": ["main"]}}],
        },
    ),
    git_pipeline("private", PRIVATE, {}),  # no filter: pushes to its BranchName (main)
    codecommit_pipeline("private-cc", "private"),  # a CodeCommit name matching acme/private
]


@dataclass
class HookServer:
    url: str
    service: Service
    redis: redis.Redis


@pytest.fixture(scope="module")
def hook_server(redis_service: devstack.Service, principals: Principals) -> Iterator[HookServer]:
    url = devstack.with_redis_db(redis_service.url, WEBHOOK_TEST_DB)
    store = Store.from_url(url)
    service = Service(store, webhook_registry(), default_bucket=BUCKET, ensure_bucket=None)
    config = WebhookConfig(
        secrets=WebhookSecrets(
            default=SecretStr(SECRET), by_key={PRIVATE: SecretStr(PRIVATE_SECRET)}
        ),
        max_body_bytes=MAX_BODY,
    )
    port = devstack.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, config, authenticator=signing_authenticator(principals, store.r)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="conveyor-webhooks", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15, message="uvicorn did not start")
    yield HookServer(f"http://127.0.0.1:{port}", service, redis.Redis.from_url(url))
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def cp(hook_server: HookServer) -> Any:
    hook_server.redis.flushdb()
    client = codepipeline(hook_server.url)
    for decl in PIPELINES:
        client.create_pipeline(pipeline=decl)
    return client


@pytest.fixture
def hooks(hook_server: HookServer, cp: Any) -> HookServer:
    return hook_server


# --------------------------------------------------------------------------- helpers

_deliveries = iter(range(1, 1_000_000))


def github(
    server: HookServer,
    event: str,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    delivery: str | None = None,
    signature: str | None = None,
) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or f"gh-{next(_deliveries)}-{time.time_ns()}",
        "X-Hub-Signature-256": signature or sign_github(secret, body),
        "User-Agent": "GitHub-Hookshot/test",
    }
    return post(f"{server.url}/webhooks/github", body, headers)


def gitlab(
    server: HookServer,
    event: str,
    payload: dict[str, Any],
    *,
    token: str | None = SECRET,
    extra: dict[str, str] | None = None,
    delivery: str | None = None,
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": delivery or f"gl-{next(_deliveries)}-{time.time_ns()}",
        **({"X-Gitlab-Token": token} if token is not None else {}),
        **(extra or {}),
    }
    return post(f"{server.url}/webhooks/gitlab", body, headers)


def executions(cp: Any, pipeline: str) -> list[dict[str, Any]]:
    return list(cp.list_pipeline_executions(pipelineName=pipeline)["pipelineExecutionSummaries"])


def counts(cp: Any) -> dict[str, int]:
    return {p["name"]: len(executions(cp, p["name"])) for p in PIPELINES}


NONE_STARTED = {p["name"]: 0 for p in PIPELINES}


def only(name: str) -> dict[str, int]:
    return {**NONE_STARTED, name: 1}


# --------------------------------------------------------------------------- GitHub


def test_signed_push_to_a_filtered_branch_starts_exactly_one_pinned_execution(
    hooks: HookServer, cp: Any
) -> None:
    commit = sha("push-main")
    status, reply = github(hooks, "push", github_push(WEB, "refs/heads/main", commit, ["src/a.py"]))

    assert status == 202, reply
    [started] = reply["started"]
    assert started["pipelineName"] == "web"
    assert counts(cp) == only("web")

    [summary] = executions(cp, "web")
    assert summary["pipelineExecutionId"] == started["pipelineExecutionId"]
    assert summary["trigger"] == {"triggerType": "WebhookV2", "triggerDetail": CONNECTION}
    [revision] = summary["sourceRevisions"]
    assert revision["actionName"] == "Checkout"
    assert revision["revisionId"] == commit
    assert revision["revisionUrl"] == f"https://github.com/{WEB}/commit/{commit}"
    details = json.loads(revision["revisionSummary"])
    assert details == {
        "ProviderType": "GitHub",
        "CommitMessage": "Make the build faster",
        "AuthorDisplayName": "ada",
        "BranchName": "main",
    }

    got = cp.get_pipeline_execution(
        pipelineName="web", pipelineExecutionId=started["pipelineExecutionId"]
    )["pipelineExecution"]
    assert got["trigger"]["triggerType"] == "WebhookV2"
    [artifact] = got["artifactRevisions"]
    assert (artifact["name"], artifact["revisionId"]) == ("Src", commit)
    assert artifact["revisionUrl"] == f"https://github.com/{WEB}/commit/{commit}"
    checkout = cp.get_pipeline_state(name="web")["stageStates"][0]["actionStates"][0]
    assert checkout["currentRevision"]["revisionId"] == commit
    assert checkout["revisionUrl"] == f"https://github.com/{WEB}/commit/{commit}"

    # The source action is pinned to the pushed commit as a COMMIT_ID override, on the
    # branch that holds it, for the git source provider to fetch.
    state = hooks.service.get_execution("web", started["pipelineExecutionId"])
    [pin] = state.source_revisions
    assert pin["revisionType"] == "COMMIT_ID"
    assert (pin["revisionId"], pin["branchName"]) == (commit, "main")


def test_push_to_another_branch_starts_nothing(hooks: HookServer, cp: Any) -> None:
    payload = github_push(WEB, "refs/heads/feature/x", sha("feature"), ["src/a.py"])
    status, reply = github(hooks, "push", payload)
    assert (status, reply["started"]) == (202, [])
    assert counts(cp) == NONE_STARTED


def test_push_touching_only_excluded_paths_starts_nothing(hooks: HookServer, cp: Any) -> None:
    docs_only = github_push(WEB, "refs/heads/main", sha("docs"), ["docs/guide.txt", "README.md"])
    status, reply = github(hooks, "push", docs_only)
    assert (status, reply["started"]) == (202, [])
    assert counts(cp) == NONE_STARTED

    # The same push with one file outside the excludes does start it.
    mixed = github_push(WEB, "refs/heads/main", sha("docs+src"), ["README.md", "src/app.py"])
    status, reply = github(hooks, "push", mixed)
    assert status == 202
    assert [s["pipelineName"] for s in reply["started"]] == ["web"]


def test_pull_request_into_a_filtered_base_starts_only_on_its_listed_events(
    hooks: HookServer, cp: Any
) -> None:
    head = sha("pr-head")
    opened = github_pull_request(WEB, "opened", "main", "feature/speed", head)
    status, reply = github(hooks, "pull_request", opened)
    assert status == 202, reply
    assert [s["pipelineName"] for s in reply["started"]] == ["web-pr-open"]
    assert counts(cp) == only("web-pr-open")
    [summary] = executions(cp, "web-pr-open")
    assert summary["sourceRevisions"][0]["revisionId"] == head  # the source branch's head
    details = json.loads(summary["sourceRevisions"][0]["revisionSummary"])
    assert details["PullRequestEvent"] == "OPEN"
    assert details["BranchName"] == "feature/speed"
    assert details["DestinationBranchName"] == "main"

    closed = github_pull_request(WEB, "closed", "main", "feature/speed", head)
    status, reply = github(hooks, "pull_request", closed)
    assert [s["pipelineName"] for s in reply["started"]] == ["web-pr-closed"]
    assert counts(cp) == {**only("web-pr-open"), "web-pr-closed": 1}

    # Into another base, or an action AWS does not trigger on: nothing more.
    other_base = github_pull_request(WEB, "opened", "develop", "feature/speed", head)
    labeled = github_pull_request(WEB, "labeled", "main", "feature/speed", head)
    assert github(hooks, "pull_request", other_base)[1]["started"] == []
    status, reply = github(hooks, "pull_request", labeled)
    assert (status, reply["started"]) == (202, [])
    assert "labeled" in reply["ignored"]
    assert counts(cp) == {**only("web-pr-open"), "web-pr-closed": 1}


def test_ping_is_accepted_and_starts_nothing(hooks: HookServer, cp: Any) -> None:
    status, reply = github(hooks, "ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert status == 202
    assert reply["started"] == []
    assert "ping" in reply["ignored"]
    assert counts(cp) == NONE_STARTED


# --------------------------------------------------------------------------- GitLab


def test_gitlab_push_and_merge_request(hooks: HookServer, cp: Any) -> None:
    commit = sha("gl-push")
    status, reply = gitlab(hooks, "Push Hook", gitlab_push(GITLAB_PROJECT, "main", commit, ["x"]))
    assert status == 202, reply
    assert [s["pipelineName"] for s in reply["started"]] == ["gitlab-app"]
    [summary] = executions(cp, "gitlab-app")
    assert summary["trigger"]["triggerType"] == "WebhookV2"
    assert summary["sourceRevisions"][0]["revisionId"] == commit
    details = json.loads(summary["sourceRevisions"][0]["revisionSummary"])
    assert (details["ProviderType"], details["AuthorDisplayName"]) == ("GitLab", "linus")

    mr = gitlab_merge_request(GITLAB_PROJECT, "open", "main", "tidy", sha("gl-mr"))
    status, reply = gitlab(hooks, "Merge Request Hook", mr)
    assert status == 202, reply
    assert [s["pipelineName"] for s in reply["started"]] == ["gitlab-app"]
    assert counts(cp) == {**NONE_STARTED, "gitlab-app": 2}

    merged = gitlab_merge_request(GITLAB_PROJECT, "merge", "main", "tidy", sha("gl-mr"))
    assert gitlab(hooks, "Merge Request Hook", merged)[1]["started"] == []  # CLOSED not listed
    assert counts(cp) == {**NONE_STARTED, "gitlab-app": 2}


def test_gitlab_signed_webhook(hooks: HookServer, cp: Any) -> None:
    payload = gitlab_push(GITLAB_PROJECT, "main", sha("gl-signed"), ["x"])
    body = json.dumps(payload).encode()
    now = int(time.time())
    signed = {
        "webhook-id": "msg-signed-1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_standard(SECRET, "msg-signed-1", now, body),
    }
    status, reply = gitlab(hooks, "Push Hook", payload, token=None, extra=signed)
    assert status == 202, reply
    assert len(reply["started"]) == 1

    stale = now - 3600
    old = {
        "webhook-id": "msg-signed-2",
        "webhook-timestamp": str(stale),
        "webhook-signature": sign_standard(SECRET, "msg-signed-2", stale, body),
    }
    status, reply = gitlab(hooks, "Push Hook", payload, token=None, extra=old)
    assert status == 403
    assert "webhook-timestamp" in reply["error"]
    assert counts(cp) == {**NONE_STARTED, "gitlab-app": 1}


def test_gitlab_wrong_or_missing_token_is_refused(hooks: HookServer, cp: Any) -> None:
    payload = gitlab_push(GITLAB_PROJECT, "main", sha("gl-bad"), ["x"])
    status, reply = gitlab(hooks, "Push Hook", payload, token="not-the-secret")
    assert status == 403
    assert "X-Gitlab-Token" in reply["error"]
    status, reply = gitlab(hooks, "Push Hook", payload, token=None)
    assert status == 401
    assert counts(cp) == NONE_STARTED


# --------------------------------------------------------------------------- refusals


def _no_delivery_recorded(server: HookServer) -> bool:
    return not list(server.redis.scan_iter("conveyor:webhook:delivery:*"))


def test_wrong_or_missing_signature_is_refused_and_starts_nothing(
    hooks: HookServer, cp: Any
) -> None:
    payload = github_push(WEB, "refs/heads/main", sha("forged"), ["src/a.py"])
    status, reply = github(hooks, "push", payload, secret="guessed-secret")
    assert status == 403
    assert "X-Hub-Signature-256 does not match" in reply["error"]

    body = json.dumps(payload).encode()
    tampered = sign_github(SECRET, body + b" ")  # signed, but not this body
    assert github(hooks, "push", body, signature=tampered)[0] == 403

    status, reply = post_declaring(
        f"{hooks.url}/webhooks/github",
        {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "unsigned-1",
        },
        len(body),
        send=body,
    )
    assert status == 401
    assert "missing X-Hub-Signature-256" in reply["error"]
    assert counts(cp) == NONE_STARTED
    assert _no_delivery_recorded(hooks)


def test_replayed_delivery_is_refused_and_starts_nothing_more(hooks: HookServer, cp: Any) -> None:
    payload = github_push(WEB, "refs/heads/main", sha("replayed"), ["src/a.py"])
    assert github(hooks, "push", payload, delivery="delivery-42")[0] == 202
    status, reply = github(hooks, "push", payload, delivery="delivery-42")
    assert status == 409
    assert "delivery-42) was already received" in reply["error"]
    # The delivery id is not signed: the same captured body under a fresh id is a replay too.
    status, reply = github(hooks, "push", payload, delivery="delivery-43-fresh")
    assert status == 409
    assert counts(cp) == only("web")
    (key,) = hooks.redis.keys("conveyor:webhook:delivery:github:*")
    assert 0 < hooks.redis.ttl(key) <= 3 * 24 * 3600


def test_one_delivery_arriving_many_times_at_once_starts_one_execution(
    hooks: HookServer, cp: Any
) -> None:
    payload = github_push(WEB, "refs/heads/main", sha("racing"), ["src/a.py"])
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        statuses.append(github(hooks, "push", payload, delivery="racing-1")[0])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [202] + [409] * 7
    assert counts(cp) == only("web")


def test_ten_megabyte_payload_is_refused_unread(hooks: HookServer, cp: Any) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "huge-1",
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
    }
    # Announced: refused before the body is read (none of it is ever sent here).
    status, reply = post_declaring(f"{hooks.url}/webhooks/github", headers, TEN_MB)
    assert status == 413
    assert f"limit of {MAX_BODY} bytes" in reply["error"]

    # Streamed without a length: refused once past the limit, long before 10 MB arrive.
    status, reply, sent = post_chunked(
        f"{hooks.url}/webhooks/github", {**headers, "X-GitHub-Delivery": "huge-2"}, TEN_MB
    )
    assert status == 413
    assert sent < TEN_MB
    assert counts(cp) == NONE_STARTED
    assert _no_delivery_recorded(hooks)


def test_malformed_json_is_refused_with_the_reason_and_claims_nothing(
    hooks: HookServer, cp: Any
) -> None:
    status, reply = github(hooks, "push", b'{"ref": "refs/heads/main",', delivery="bad-json")
    assert status == 400
    assert "not valid JSON" in reply["error"]
    incomplete = {"ref": "refs/heads/main", "after": sha("x")}  # no repository
    status, reply = github(hooks, "push", incomplete, delivery="bad-json")
    assert status == 400
    assert "'repository.full_name' is missing" in reply["error"]
    assert counts(cp) == NONE_STARTED
    # Nothing was recorded, so the sender's corrected retry under the same id goes through.
    good = github_push(WEB, "refs/heads/main", sha("fixed"), ["src/a.py"])
    assert github(hooks, "push", good, delivery="bad-json")[0] == 202
    assert counts(cp) == only("web")


def test_unknown_host_and_form_encoded_bodies_are_refused(hooks: HookServer, cp: Any) -> None:
    status, reply = post(
        f"{hooks.url}/webhooks/bitbucket", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 404
    assert "/webhooks/github" in reply["error"]
    status, reply = post(
        f"{hooks.url}/webhooks/github",
        b"payload=%7B%7D",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    assert "application/json" in reply["error"]
    assert counts(cp) == NONE_STARTED


# --------------------------------------------------------------------------- secrets


def test_a_server_without_webhook_secrets_refuses_every_delivery(api: ApiServer) -> None:
    body = json.dumps(github_push(WEB, "refs/heads/main", sha("unconfigured"), [])).encode()
    status, reply = post(
        f"{api.url}/webhooks/github",
        body,
        {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "unconfigured-1",
            "X-Hub-Signature-256": sign_github("", body),
        },
    )
    assert status == 403
    assert "CONVEYOR_WEBHOOK_SECRET" in reply["error"]
    assert not list(api.redis.scan_iter("conveyor:webhook:*"))


def test_a_repository_with_its_own_secret_is_not_driven_by_the_default(
    hooks: HookServer, cp: Any
) -> None:
    payload = github_push(PRIVATE, "refs/heads/main", sha("private"), ["a"])
    status, reply = github(hooks, "push", payload, secret=SECRET)
    # Neither the connection source nor the CodeCommit one named "private" (whose own name
    # has no secret of its own): the event's repository has one, and it did not sign.
    assert (status, reply["started"]) == (202, [])
    payload = github_push(PRIVATE, "refs/heads/main", sha("private-own"), ["a"])
    status, reply = github(hooks, "push", payload, secret=PRIVATE_SECRET)
    assert sorted(s["pipelineName"] for s in reply["started"]) == ["private", "private-cc"]
    # Its own secret drives nothing else.
    web = github_push(WEB, "refs/heads/main", sha("web-by-private"), ["src/a.py"])
    assert github(hooks, "push", web, secret=PRIVATE_SECRET)[1]["started"] == []
    assert counts(cp) == {**NONE_STARTED, "private": 1, "private-cc": 1}


def test_no_secret_appears_in_any_reply_event_or_log(
    hooks: HookServer, cp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    replies: list[Any] = []
    push = github_push(WEB, "refs/heads/main", sha("secret-check"), ["src/a.py"])
    replies.append(github(hooks, "push", push))
    replies.append(github(hooks, "push", push, secret="wrong"))
    replies.append(gitlab(hooks, "Push Hook", gitlab_push(GITLAB_PROJECT, "main", sha("g"), [])))
    replies.append(
        gitlab(hooks, "Push Hook", gitlab_push(GITLAB_PROJECT, "main", sha("h"), []), token="nope")
    )
    replies.append(
        github(
            hooks,
            "push",
            github_push(PRIVATE, "refs/heads/main", sha("p"), []),
            secret=PRIVATE_SECRET,
        )
    )
    for p in PIPELINES:
        replies.append(cp.get_pipeline(name=p["name"]))
        for e in executions(cp, p["name"]):
            replies.append(
                cp.get_pipeline_execution(
                    pipelineName=p["name"], pipelineExecutionId=e["pipelineExecutionId"]
                )
            )
    _, events = post_events(hooks)
    text = json.dumps(replies, default=str) + json.dumps(events) + caplog.text
    assert '"started"' in text  # the replies were captured
    for secret in (SECRET, PRIVATE_SECRET):
        assert secret not in text


def post_events(server: HookServer) -> tuple[int, Any]:
    return 200, signed_get(f"{server.url}/events?count=1000")


# --------------------------------------------------------------------------- definitions


def test_bad_trigger_filters_are_refused_naming_the_path(hooks: HookServer, cp: Any) -> None:
    bad = git_pipeline(
        "bad",
        WEB,
        {
            "push": [
                {"tags": {"includes": ["v*"]}, "branches": {"includes": ["main"]}},
                {"branches": {"includes": ["release/[0-9"]}},
            ]
        },
    )
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=bad)
    error = exc.value.response["Error"]
    assert error["Code"] == "InvalidStructureException"
    assert "triggers[0].gitConfiguration.push[0]: a push filter filters on tags" in error["Message"]
    assert "triggers[0].gitConfiguration.push[1].branches.includes[0]" in error["Message"]
    assert "bad" not in [p["name"] for p in cp.list_pipelines()["pipelines"]]


def test_triggers_round_trip_through_get_pipeline(hooks: HookServer, cp: Any) -> None:
    got = cp.get_pipeline(name="web")["pipeline"]["triggers"]
    assert got == PIPELINES[0]["triggers"]
