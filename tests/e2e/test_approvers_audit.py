"""Approver lists, separation of duties, who approved, and the audit log, end to end.

The API runs in process over the session's Redis, with an audit file and SigV4 on. Who a
request is comes from one fixture (:func:`act_as`): each principal has a key in the
session's principals file, and the test's boto3 client and CLI sign with the chosen one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import uvicorn
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import ClientError
from click.testing import CliRunner

from engine import keys
from engine.api import create_app
from engine.audit import AuditConfig, AuditLog
from engine.auth.context import RequestContext, acting_as
from engine.auth.principals import Principal, Role
from engine.errors import AccessDeniedError
from engine.execution import ActionResult
from engine.messages import ActionCompleted
from engine.service import Service
from engine.store import Store
from tests.auth_support import Principals, TestKey, sign, signed_get
from tests.e2e.api_support import BUCKET, definition, registry
from tests.e2e.conftest import signing_authenticator
from tests.helpers import wait_for
from workers import devstack

ACCOUNT = "111122223333"
AUDIT_TEST_DB = 8  # apart from the shared API suite's database


def principal(name: str, *roles: Role) -> Principal:
    return Principal(name, frozenset(roles))


ADMIN = principal("root", Role.ADMIN)
ALICE = principal("alice", Role.OPERATOR, Role.APPROVER)
BOB = principal("bob", Role.OPERATOR, Role.APPROVER)
CAROL = principal("carol", Role.APPROVER)
EVERYONE = (ADMIN, ALICE, BOB, CAROL)


def arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


# ---------------------------------------------------------------------------- the server


class _Switchable(Credentials):  # type: ignore[misc]
    """Credentials that are whoever :class:`Identity` says now: one boto3 client serves a
    whole test while the principal changes (botocore freezes credentials per request)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__("unused", "unused")
        self.identity = identity

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        key = self.identity.key
        return ReadOnlyCredentials(key.access_key_id, key.secret_access_key, None)


@dataclass
class Identity:
    """Who the next requests are signed as; the one place tests choose a principal."""

    keys: dict[str, TestKey]
    key: TestKey

    def become(self, who: Principal) -> TestKey:
        self.key = self.keys[who.name]
        return self.key


@dataclass
class Server:
    url: str
    service: Service
    redis: redis.Redis
    audit_file: Path
    identity: Identity


@pytest.fixture(scope="module")
def server(
    redis_service: devstack.Service,
    principals: Principals,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    url = devstack.with_redis_db(redis_service.url, AUDIT_TEST_DB)
    store = Store.from_url(url)
    service = Service(store, registry(), default_bucket=BUCKET, ensure_bucket=None)
    audit_file = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    audit = AuditLog(store.r, store.account, AuditConfig(file=audit_file))
    keys_by_name = {p.name: principals.add(p.roles, name=p.name) for p in EVERYONE}
    identity = Identity(keys_by_name, keys_by_name[ADMIN.name])
    app = create_app(service, audit=audit, authenticator=signing_authenticator(principals, store.r))
    port = devstack.free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, name="conveyor-api-audit", daemon=True)
    thread.start()
    wait_for(lambda: srv.started, timeout=15, message="uvicorn did not start")
    yield Server(
        f"http://127.0.0.1:{port}", service, redis.Redis.from_url(url), audit_file, identity
    )
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def api(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    server.redis.flushdb()
    server.audit_file.write_text("")
    _sign_as(server, ADMIN, monkeypatch)
    return server


def _sign_as(server: Server, who: Principal, monkeypatch: pytest.MonkeyPatch) -> None:
    key = server.identity.become(who)
    # The CLI builds its own client from boto3's default chain: the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key.secret_access_key)


@pytest.fixture
def act_as(api: Server, monkeypatch: pytest.MonkeyPatch) -> Callable[[Principal], None]:
    """``act_as(ALICE)``: the following requests (boto3, the CLI) are signed with alice's
    key."""

    def choose(who: Principal) -> None:
        _sign_as(api, who, monkeypatch)

    return choose


@pytest.fixture
def cp(api: Server) -> Any:
    client = boto3.client(
        "codepipeline",
        endpoint_url=api.url,
        region_name="us-east-1",
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    client._request_signer._credentials = _Switchable(api.identity)
    return client


# ---------------------------------------------------------------------------- helpers


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def message_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Message"])


def to_approval(api: Server, cp: Any, name: str) -> tuple[str, str]:
    """Start ``name`` (as whoever acts now) and drive it to its approval; (execution, token)."""
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    return eid, to_gate(api, name, eid)


def to_gate(api: Server, name: str, eid: str) -> str:
    """Complete the actions before the approval, as workers would; the approval's token."""
    for stage, action in (("Source", "Fetch"), ("Build", "Compile")):
        event = ActionCompleted(
            now=time.time(),
            execution_id=eid,
            stage=stage,
            action=action,
            attempt=1,
            result=ActionResult(succeeded=True),
        )
        api.service.store.apply(name, event)
    waiting = [a for s, a in api.service.pending_approvals(name) if s.execution_id == eid]
    assert len(waiting) == 1 and waiting[0].approval_token
    return waiting[0].approval_token


def approve(cp: Any, name: str, token: str, status: str = "Approved") -> Any:
    return cp.put_approval_result(
        pipelineName=name,
        stageName="Approve",
        actionName="Gate",
        result={"summary": "ok by me", "status": status},
        token=token,
    )


def create(cp: Any, name: str, tags: dict[str, str]) -> None:
    cp.create_pipeline(
        pipeline=definition(name), tags=[{"key": k, "value": v} for k, v in tags.items()]
    )


def stream(api: Server, key: str, field: bytes) -> list[dict[str, Any]]:
    rows: Any = api.redis.xrange(key)
    return [json.loads(fields[field]) for _, fields in rows]


def stream_records(api: Server) -> list[dict[str, Any]]:
    return stream(api, keys.AUDIT, b"record")


def file_records(api: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in api.audit_file.read_text().splitlines()]


# ---------------------------------------------------------------------------- approver lists


def test_a_stage_approver_list_refuses_others_and_accepts_the_listed(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    create(cp, "listed", {"conveyor:approvers": "carol", "conveyor:approvers:Approve": "bob,alice"})
    act_as(ALICE)
    _, token = to_approval(api, cp, "listed")
    act_as(CAROL)  # the pipeline's list names carol, but the stage's list wins
    with pytest.raises(ClientError) as refused:
        approve(cp, "listed", token)
    assert code_of(refused) == "AccessDeniedException"
    assert "conveyor:approvers:Approve" in message_of(refused)
    assert "carol" in message_of(refused)
    act_as(BOB)
    approve(cp, "listed", token)
    gate = cp.get_pipeline_state(name="listed")["stageStates"][2]["actionStates"][0]
    assert gate["latestExecution"]["status"] == "Succeeded"


def test_separation_of_duties_refuses_the_starter_and_accepts_another_approver(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    create(cp, "sod", {"conveyor:separation-of-duties": "true"})
    act_as(ALICE)
    eid, token = to_approval(api, cp, "sod")
    execution = cp.get_pipeline_execution(pipelineName="sod", pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["trigger"] == {
        "triggerType": "StartPipelineExecution",
        "triggerDetail": arn("alice"),
    }
    for status in ("Approved", "Rejected"):
        with pytest.raises(ClientError) as refused:
            approve(cp, "sod", token, status)
        assert code_of(refused) == "AccessDeniedException"
        assert "separation of duties" in message_of(refused)
    act_as(BOB)
    approve(cp, "sod", token)


def test_separation_of_duties_holds_whatever_start_the_starter_used(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    """An execution started by PutActionRevision, or the first one CreatePipeline starts,
    was started by whoever signed that request: they cannot approve it either."""
    create(cp, "sod-revision", {"conveyor:separation-of-duties": "true"})
    act_as(ALICE)
    started = cp.put_action_revision(
        pipelineName="sod-revision",
        stageName="Source",
        actionName="Fetch",
        actionRevision={"revisionId": "v7", "revisionChangeId": "v7", "created": time.time()},
    )
    eid = started["pipelineExecutionId"]
    assert started["newRevision"] and eid
    token = to_gate(api, "sod-revision", eid)
    with pytest.raises(ClientError) as refused:
        approve(cp, "sod-revision", token)
    assert "separation of duties" in message_of(refused)

    with acting_as(RequestContext(BOB)):
        api.service.start_on_create = True
        try:
            api.service.create_pipeline(definition("sod-created"))
        finally:
            api.service.start_on_create = False
    act_as(ADMIN)
    cp.tag_resource(
        resourceArn=api.service.store.account.pipeline_arn("sod-created"),
        tags=[{"key": "conveyor:separation-of-duties", "value": "true"}],
    )
    [first] = cp.list_pipeline_executions(pipelineName="sod-created")["pipelineExecutionSummaries"]
    token = to_gate(api, "sod-created", first["pipelineExecutionId"])
    act_as(BOB)
    with pytest.raises(ClientError) as refused:
        approve(cp, "sod-created", token)
    assert "separation of duties" in message_of(refused)
    act_as(ALICE)
    approve(cp, "sod-created", token)


def test_the_service_judges_the_same_inside_acting_as(api: Server, cp: Any) -> None:
    """Without HTTP: the service reads the principal from the request context."""
    create(cp, "direct", {"conveyor:separation-of-duties": "true"})
    with acting_as(RequestContext(ALICE)):
        eid = api.service.start_execution("direct", trigger_detail=arn("alice")).execution_id
    token = to_gate(api, "direct", eid)
    with acting_as(RequestContext(ALICE)), pytest.raises(AccessDeniedError):
        api.service.put_approval_result("direct", "Approve", "Gate", token, approved=True)
    with acting_as(RequestContext(BOB)):
        api.service.put_approval_result("direct", "Approve", "Gate", token, approved=True)


def test_executions_conveyor_started_are_not_blocked_by_separation_of_duties(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    create(cp, "robot", {"conveyor:separation-of-duties": "true"})
    eid = api.service.start_execution("robot").execution_id  # as Conveyor (no request)
    assert api.service.get_execution("robot", eid).trigger_detail is None
    token = to_gate(api, "robot", eid)
    act_as(ALICE)
    approve(cp, "robot", token)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("conveyor:approvers", "alice,", None),
        ("conveyor:approvers", "alice, b!ob", "'b!ob' is not a principal name"),
        ("conveyor:approvers", " , ", "lists no principal"),
        ("conveyor:approvers:Nope", "alice", "has no stage 'Nope'"),
        ("conveyor:separation-of-duties", "yes", "must be true or false"),
        ("conveyor:separation-of-duty", "true", "not a Conveyor tag"),
    ],
)
def test_policy_tags_are_checked_when_set(
    api: Server, cp: Any, key: str, value: str, says: str | None
) -> None:
    create(cp, "tagged", {})
    pipeline_arn = f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:tagged"
    tags = [{"key": key, "value": value}]
    if says is None:
        cp.tag_resource(resourceArn=pipeline_arn, tags=tags)
        return
    calls: list[Callable[[], Any]] = [
        lambda: cp.tag_resource(resourceArn=pipeline_arn, tags=tags),
        lambda: cp.create_pipeline(pipeline=definition("other"), tags=tags),
    ]
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert code_of(refused) == "InvalidTagsException"
        assert says in message_of(refused)
    assert [p["name"] for p in cp.list_pipelines()["pipelines"]] == ["tagged"]


# ---------------------------------------------------------------------------- who approved


def test_the_approval_record_and_its_event_carry_the_approvers_arn(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    create(cp, "who", {})
    act_as(ALICE)
    eid, token = to_approval(api, cp, "who")
    act_as(BOB)
    approve(cp, "who", token, "Rejected")
    gate = cp.get_pipeline_state(name="who")["stageStates"][2]["actionStates"][0]
    assert gate["latestExecution"]["lastUpdatedBy"] == arn("bob")
    details = cp.list_action_executions(pipelineName="who", filter={"pipelineExecutionId": eid})
    [detail] = [d for d in details["actionExecutionDetails"] if d["actionName"] == "Gate"]
    assert detail["updatedBy"] == arn("bob")
    events = stream(api, keys.EVENTS, b"event")
    [answered] = [
        e
        for e in events
        if e["detail"].get("action") == "Gate" and e["detail"]["state"] == "FAILED"
    ]
    assert answered["detail"]["updated-by"] == arn("bob")


# ---------------------------------------------------------------------------- the audit log


def test_audit_records_what_changed_and_what_was_refused_without_secrets(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    create(cp, "audited", {"conveyor:separation-of-duties": "true"})
    act_as(ALICE)
    _, token = to_approval(api, cp, "audited")
    with pytest.raises(ClientError) as refused:
        approve(cp, "audited", token)
    refused_id = refused.value.response["ResponseMetadata"]["RequestId"]
    act_as(BOB)
    approved_id = approve(cp, "audited", token)["ResponseMetadata"]["RequestId"]
    cp.get_pipeline_state(name="audited")  # a read that succeeds: not recorded
    act_as(ADMIN)
    secret = "hush-hush-webhook-secret"
    cp.put_webhook(
        webhook={
            "name": "hook",
            "targetPipeline": "audited",
            "targetAction": "Fetch",
            "filters": [{"jsonPath": "$.ref", "matchEquals": "refs/heads/main"}],
            "authentication": "GITHUB_HMAC",
            "authenticationConfiguration": {"SecretToken": secret},
        }
    )

    stream, written = stream_records(api), file_records(api)
    assert stream == written
    ops = [(r["operation"], r["principal"], r["outcome"]) for r in stream]
    assert ops == [
        ("CreatePipeline", "root", "ok"),
        ("StartPipelineExecution", "alice", "ok"),
        ("PutApprovalResult", "alice", "AccessDeniedException"),
        ("PutApprovalResult", "bob", "ok"),
        ("PutWebhook", "root", "ok"),
    ]
    denied, answered = stream[2], stream[3]
    assert denied["request_id"] == refused_id and denied["status"] == 400
    assert "separation of duties" in denied["message"]
    assert answered["request_id"] == approved_id
    assert answered["principal_arn"] == arn("bob")
    bob_key = api.identity.keys["bob"].access_key_id
    assert answered["access_key"] == bob_key and answered["source_ip"] == "127.0.0.1"
    assert answered["target"] == "audited.Approve.Gate" and answered["pipeline"] == "audited"
    assert answered["params"]["token"].startswith("sha256:")
    assert stream[4]["target"] == "webhook:hook" and stream[4]["pipeline"] == "audited"
    everything = api.audit_file.read_text() + json.dumps(stream)
    assert token not in everything and secret not in everything


def test_refused_requests_before_any_operation_are_recorded(api: Server) -> None:
    import urllib.error
    import urllib.request

    target = {"X-Amz-Target": "CodePipeline_20150709.NoSuchThing"}
    unsigned = urllib.request.Request(f"{api.url}/", data=b"{}", headers=target, method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(unsigned, timeout=10)
    headers = sign("POST", f"{api.url}/", b"{}", target, key=api.identity.key)
    signed = urllib.request.Request(f"{api.url}/", data=b"{}", headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(signed, timeout=10)
    stranger, admin = stream_records(api)
    assert stranger["outcome"] == "MissingAuthenticationTokenException"
    assert stranger["operation"] == "CodePipeline_20150709.NoSuchThing"
    assert stranger["principal"] is None and stranger["source_ip"] == "127.0.0.1"
    assert admin["outcome"] == "UnknownOperationException" and admin["principal"] == "root"


def test_only_admins_read_the_audit_log(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(f"{api.url}/audit", timeout=10)
    assert unsigned.value.code == 403
    act_as(BOB)
    with pytest.raises(urllib.error.HTTPError) as refused:
        signed_get(f"{api.url}/audit", api.identity.key)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["__type"] == "AccessDeniedException"
    unsigned_record, record = stream_records(api)
    assert unsigned_record["outcome"] == "MissingAuthenticationTokenException"
    assert (record["operation"], record["principal"]) == ("GET /audit", "bob")


def test_conveyor_audit_filters_by_pipeline_and_principal(
    api: Server, cp: Any, act_as: Callable[[Principal], None]
) -> None:
    from workers.cli import cli
    from workers.cli_client import register

    register(cli)
    create(cp, "one", {})
    create(cp, "two", {})
    act_as(ALICE)
    for _ in range(3):
        cp.start_pipeline_execution(name="one")
    cp.start_pipeline_execution(name="two")
    act_as(BOB)
    cp.start_pipeline_execution(name="one")
    act_as(ADMIN)

    def run(*args: str) -> list[dict[str, Any]]:
        out = CliRunner().invoke(cli, ["--endpoint", api.url, "audit", "-o", "json", *args])
        assert out.exit_code == 0, out.output
        return [json.loads(line) for line in out.output.splitlines()]

    alice_one = run("--pipeline", "one", "--principal", "alice")
    assert [(r["operation"], r["pipeline"]) for r in alice_one] == [
        ("StartPipelineExecution", "one")
    ] * 3
    assert [r["principal"] for r in run("--pipeline", "one")] == [
        "root",
        "alice",
        "alice",
        "alice",
        "bob",
    ]
    latest_two = run("--limit", "2")
    assert [(r["principal"], r["pipeline"]) for r in latest_two] == [
        ("alice", "two"),
        ("bob", "one"),
    ]
    assert len(run("--since", "1h", "--operation", "CreatePipeline")) == 2
    assert run("--since", "2999-01-01T00:00:00Z") == []
    table = CliRunner().invoke(cli, ["--endpoint", api.url, "audit", "--principal", "bob"])
    assert table.exit_code == 0 and "StartPipelineExecution" in table.output

    act_as(BOB)
    refused = CliRunner().invoke(cli, ["--endpoint", api.url, "audit"])
    assert refused.exit_code == 1 and "AccessDeniedException" in refused.output


def test_cloudformation_tags_set_the_approvers(api: Server, cp: Any, tmp_path: Path) -> None:
    """``conveyor pipelines create template.yaml`` sends the template's Tags as tags."""
    from workers.cli import cli
    from workers.cli_client import register

    register(cli)
    decl = definition("cfn")
    template = {
        "Resources": {
            "Pipeline": {
                "Type": "AWS::CodePipeline::Pipeline",
                "Properties": {
                    "Name": "cfn",
                    "RoleArn": decl["roleArn"],
                    "ArtifactStore": {"Type": "S3", "Location": BUCKET},
                    "Stages": [_pascal(s) for s in decl["stages"]],
                    "Variables": [{"Name": "Env", "DefaultValue": "dev"}],
                    "Tags": [
                        {"Key": "conveyor:approvers:Approve", "Value": "bob,carol"},
                        {"Key": "conveyor:separation-of-duties", "Value": True},
                    ],
                },
            }
        }
    }
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    out = CliRunner().invoke(cli, ["--endpoint", api.url, "pipelines", "create", str(path)])
    assert out.exit_code == 0, out.output
    tags = cp.list_tags_for_resource(resourceArn=f"arn:aws:codepipeline:us-east-1:{ACCOUNT}:cfn")
    assert {t["key"]: t["value"] for t in tags["tags"]} == {
        "conveyor:approvers:Approve": "bob,carol",
        "conveyor:separation-of-duties": "true",
    }


def _pascal(node: Any) -> Any:
    """A camelCase declaration written as CloudFormation would (configuration keys kept)."""
    if isinstance(node, list):
        return [_pascal(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {
        k[:1].upper() + k[1:]: (v if k == "configuration" else _pascal(v)) for k, v in node.items()
    }
