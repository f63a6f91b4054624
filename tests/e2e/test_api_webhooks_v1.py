"""PutWebhook / ListWebhooks / DeleteWebhook through boto3, and deliveries to the url."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.arns import DEFAULT_ACCOUNT
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import code_of, message_of
from tests.e2e.webhook_support import post_chunked, post_declaring

webhook_arn = DEFAULT_ACCOUNT.webhook_arn

SECRET = "s3cr3t-token-for-tests"


def codecommit_pipeline(name: str = "app") -> dict[str, Any]:
    """The API tests' pipeline with a CodeCommit source on branch main."""
    d = definition(name)
    d["stages"][0]["actions"][0] = {
        "name": "Checkout",
        "actionTypeId": {
            "category": "Source",
            "owner": "AWS",
            "provider": "CodeCommit",
            "version": "1",
        },
        "configuration": {"RepositoryName": "app", "BranchName": "main"},
        "outputArtifacts": [{"name": "SourceOut"}],
    }
    return d


def hook(
    name: str = "on-push",
    auth: str = "GITHUB_HMAC",
    config: dict[str, str] | None = None,
    filters: list[dict[str, str]] | None = None,
    pipeline: str = "app",
    action: str = "Checkout",
) -> dict[str, Any]:
    return {
        "name": name,
        "targetPipeline": pipeline,
        "targetAction": action,
        "filters": [{"jsonPath": "$.ref", "matchEquals": "refs/heads/{BranchName}"}]
        if filters is None
        else filters,
        "authentication": auth,
        "authenticationConfiguration": {"SecretToken": SECRET} if config is None else config,
    }


def post(url: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push"}


def executions(cp: Any, name: str = "app") -> list[dict[str, Any]]:
    return list(cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"])


def test_put_and_list_webhooks_redact_the_secret(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    put = cp.put_webhook(webhook=hook(), tags=[{"key": "team", "value": "web"}])["webhook"]
    assert put["arn"] == webhook_arn("on-push")
    assert put["arn"].startswith("arn:aws:codepipeline:") and put["arn"].endswith(
        ":webhook:on-push"
    )
    assert put["url"].startswith(f"{api.url}/webhooks/v1/")
    assert put["definition"]["authenticationConfiguration"]["SecretToken"] != SECRET
    assert put["tags"] == [{"key": "team", "value": "web"}]
    listed = cp.list_webhooks()["webhooks"]
    assert [w["arn"] for w in listed] == [put["arn"]]
    assert listed[0]["url"] == put["url"]
    assert SECRET not in json.dumps(listed, default=str)
    assert "lastTriggered" not in listed[0] and "errorCode" not in listed[0]
    # Tags through the webhook's ARN.
    cp.tag_resource(resourceArn=put["arn"], tags=[{"key": "env", "value": "prod"}])
    got = cp.list_tags_for_resource(resourceArn=put["arn"])["tags"]
    assert {t["key"] for t in got} == {"team", "env"}
    # An update keeps the url (what the repository was told) and the tags.
    again = cp.put_webhook(webhook=hook(filters=[]))["webhook"]
    assert again["url"] == put["url"] and again["definition"]["filters"] == []
    assert len(again["tags"]) == 2


def test_webhook_definitions_are_checked(cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    cases = [
        (hook(config={}), "InvalidWebhookAuthenticationParametersException"),
        (hook(auth="IP", config={"AllowedIPRange": "10.0.0.300/8"}), "InvalidWebhookAuthentic"),
        (hook(filters=[{"jsonPath": "$.[[[", "matchEquals": "x"}]), "InvalidWebhookFilterPat"),
        (hook(filters=[{"jsonPath": "$.ref", "matchEquals": "{Nope}"}]), "InvalidWebhookFilterP"),
        (hook(pipeline="missing"), "PipelineNotFoundException"),
        (hook(action="Compile"), "ValidationException"),  # not a source action
    ]
    for definition_, code in cases:
        with pytest.raises(ClientError) as err:
            cp.put_webhook(webhook=definition_)
        assert code_of(err).startswith(code), (definition_, message_of(err))
    with pytest.raises(ClientError) as err:
        cp.put_webhook(webhook=hook(), tags=[{"key": "aws:x", "value": "y"}])
    assert code_of(err) == "InvalidTagsException"
    assert cp.list_webhooks()["webhooks"] == []


def test_github_hmac_delivery_starts_the_pipeline(
    cp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cp.create_pipeline(pipeline=codecommit_pipeline())
    url = cp.put_webhook(webhook=hook())["webhook"]["url"]
    body = json.dumps({"ref": "refs/heads/main", "after": "abc123"}).encode()

    status, reply = post(url, body, signed(body, "wrong"))
    assert status == 401 and SECRET not in json.dumps(reply)
    status, reply = post(url, body, {"X-GitHub-Event": "push"})
    assert status == 401
    assert executions(cp) == []

    other = json.dumps({"ref": "refs/heads/feature"}).encode()
    status, reply = post(url, other, signed(other))
    assert status == 200 and reply["matched"] is False
    assert executions(cp) == []

    status, reply = post(url, body, signed(body))
    assert status == 202, reply
    started = reply["pipelineExecutionId"]
    got = cp.get_pipeline_execution(pipelineName="app", pipelineExecutionId=started)
    assert got["pipelineExecution"]["trigger"] == {
        "triggerType": "Webhook",
        "triggerDetail": webhook_arn("on-push"),
    }
    # The same signed body again is a replay: no second execution.
    status, reply = post(url, body, signed(body))
    assert status == 202 and reply["pipelineExecutionId"] == started
    assert len(executions(cp)) == 1
    assert "lastTriggered" in cp.list_webhooks()["webhooks"][0]
    # The server's log (not the client's own botocore debug lines, which hold the request).
    client = ("botocore", "boto3", "urllib3")
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(client))
    assert "delivery refused" in server_log  # the refusals were logged...
    assert SECRET not in server_log  # ...and nothing logged the secret


def test_ip_and_unauthenticated_webhooks(cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    inside = cp.put_webhook(
        webhook=hook("local", auth="IP", config={"AllowedIPRange": "127.0.0.0/8"}, filters=[])
    )["webhook"]["url"]
    outside = cp.put_webhook(
        webhook=hook("remote", auth="IP", config={"AllowedIPRange": "10.0.0.0/8"}, filters=[])
    )["webhook"]["url"]
    anyone = cp.put_webhook(
        webhook=hook(
            "open",
            auth="UNAUTHENTICATED",
            config={},
            filters=[{"jsonPath": "$.deploy", "matchEquals": "true"}],
        )
    )["webhook"]["url"]
    assert post(outside, {})[0] == 401
    assert post(inside, {})[0] == 202
    assert post(anyone, {"deploy": False})[0] == 200
    assert post(anyone, {"deploy": True})[0] == 202
    assert post(anyone, {"deploy": True})[0] == 202  # unsigned: each POST is a new start
    assert len(executions(cp)) == 3


def test_delivery_limits_and_errors(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    url = cp.put_webhook(webhook=hook("open", auth="UNAUTHENTICATED", config={}, filters=[]))[
        "webhook"
    ]["url"]
    assert post(f"{api.url}/webhooks/v1/not-a-webhook", {})[0] == 404
    assert post(url, b"{not json")[0] == 400
    assert post(url, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")[0] == 400  # too deep
    over = 5 * 1024 * 1024 + 1  # the default CONVEYOR_WEBHOOK_MAX_BODY_BYTES, plus one
    json_type = {"Content-Type": "application/json"}
    status, reply = post_declaring(url, json_type, over)  # refused before the body is read
    assert status == 413 and "limit" in reply["error"]
    status, reply, sent = post_chunked(url, json_type, 2 * over)
    assert status == 413 and sent < 2 * over
    assert executions(cp) == []
    # The target pipeline deleted: the webhook stays and says why nothing starts.
    cp.delete_pipeline(name="app")
    status, reply = post(url, {})
    assert status == 404
    item = cp.list_webhooks()["webhooks"][0]
    assert item["errorCode"] == "PipelineNotFoundException" and item["errorMessage"]


def test_delete_and_third_party_registration(cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    put = cp.put_webhook(webhook=hook(), tags=[{"key": "a", "value": "b"}])["webhook"]
    with pytest.raises(ClientError) as err:
        cp.register_webhook_with_third_party(webhookName="on-push")
    assert code_of(err) == "ValidationException"
    assert "does not register webhooks with GitHub" in message_of(err)
    with pytest.raises(ClientError) as err:
        cp.deregister_webhook_with_third_party(webhookName="nope")
    assert code_of(err) == "WebhookNotFoundException"

    cp.delete_webhook(name="on-push")
    cp.delete_webhook(name="on-push")  # AWS answers success for one that does not exist
    assert cp.list_webhooks()["webhooks"] == []
    assert post(put["url"], {})[0] == 404
    with pytest.raises(ClientError) as err:
        cp.list_tags_for_resource(resourceArn=put["arn"])
    assert code_of(err) == "ResourceNotFoundException"


def test_list_webhooks_pages(cp: Any) -> None:
    cp.create_pipeline(pipeline=codecommit_pipeline())
    for i in range(3):
        cp.put_webhook(webhook=hook(f"h{i}"))
    first = cp.list_webhooks(MaxResults=2)
    assert [w["definition"]["name"] for w in first["webhooks"]] == ["h0", "h1"]
    rest = cp.list_webhooks(NextToken=first["NextToken"])
    assert [w["definition"]["name"] for w in rest["webhooks"]] == ["h2"]
    pages = cp.get_paginator("list_webhooks").paginate(PaginationConfig={"PageSize": 1})
    assert sum(len(p["webhooks"]) for p in pages) == 3
