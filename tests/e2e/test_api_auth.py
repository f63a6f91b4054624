"""Authentication and authorization at the API: SigV4 on every request, with AWS's error
names, and each role refused every operation above its level, changing nothing."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from engine import keys as redis_keys
from engine.api.auth import NO_KEYS_MESSAGE, Authenticator, check_bind
from engine.api.operations import OPERATIONS
from engine.arns import DEFAULT_ACCOUNT
from engine.auth.keys import KeyConfigError
from engine.auth.principals import ROLE_OPERATIONS, Principal, Role
from engine.auth.replay import SAME_CALL_SECONDS
from engine.awsmodel import service_model
from engine.settings import Settings
from tests.auth_support import (
    ADMIN,
    HANDLERS,
    REGION,
    WORKERS,
    Principals,
    TestKey,
    codepipeline,
    sign,
    signed_get,
)
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer, PrincipalClient
from workers.cli_client import register

TARGET = "CodePipeline_20150709."
JSON = "application/x-amz-json-1.1"
ALL_OPERATIONS = sorted(set(OPERATIONS) | set(service_model().operation_names))


def post(
    api: ApiServer,
    operation: str,
    body: dict[str, Any] | bytes,
    key: TestKey | None = ADMIN,
    *,
    at: datetime | None = None,
    send: bytes | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST ``body`` signed as ``key`` (unsigned if None), at ``at``; ``send`` replaces the
    body after signing."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": JSON, "X-Amz-Target": f"{TARGET}{operation}"}
    if key is not None:
        headers = sign("POST", f"{api.url}/", data, headers, key, at=at)
    return send_raw(api, headers, send if send is not None else data)


def send_raw(
    api: ApiServer, headers: dict[str, str], data: bytes
) -> tuple[int, dict[str, str], dict[str, Any]]:
    parts = urllib.parse.urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("POST", "/", body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


def state_digest(r: redis.Redis) -> str:
    """Everything the API keeps, except the replay guard's own notes and the audit log
    (which records refusals: that is its job)."""
    h = hashlib.sha256()
    for key in sorted(r.scan_iter("*")):
        if key.startswith((b"conveyor:auth:", b"conveyor:audit", b"conveyor:stats:audit")):
            continue
        h.update(key + b"\0" + (r.dump(key) or b"") + b"\0")
    return h.hexdigest()


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


# ---------------------------------------------------------------------------- authentication


def test_an_unsigned_request_is_refused_and_changes_nothing(api: ApiServer) -> None:
    before = state_digest(api.redis)
    status, headers, body = post(api, "CreatePipeline", {"pipeline": definition("x")}, None)
    assert (status, body["__type"]) == (403, "MissingAuthenticationTokenException")
    assert headers["x-amzn-requestid"]
    assert state_digest(api.redis) == before


def test_a_wrong_secret_is_refused(api: ApiServer) -> None:
    wrong = TestKey(ADMIN.principal, ADMIN.access_key_id, "not-the-secret")
    with pytest.raises(ClientError) as exc:
        codepipeline(api.url, wrong).list_pipelines()
    assert code_of(exc) == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "signature we calculated does not match" in str(exc.value)


def test_a_body_changed_after_signing_is_refused(api: ApiServer) -> None:
    before = state_digest(api.redis)
    signed = json.dumps({"pipeline": definition("good")}).encode()
    changed = json.dumps({"pipeline": definition("evil")}).encode()
    status, _, body = post(api, "CreatePipeline", signed, send=changed)
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert state_digest(api.redis) == before


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_signature_more_than_five_minutes_off_is_refused(api: ApiServer, skew: timedelta) -> None:
    at = datetime.now(UTC) + skew
    status, _, body = post(api, "ListPipelines", {}, at=at)
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert "Signature expired" in body["message"]
    # Within the window it is fine.
    status, _, _ = post(api, "ListPipelines", {}, at=datetime.now(UTC) - timedelta(minutes=4))
    assert status == 200


def test_a_replayed_request_is_refused(api: ApiServer) -> None:
    data = json.dumps({"pipeline": definition("once")}).encode()
    headers = sign(
        "POST",
        f"{api.url}/",
        data,
        {"Content-Type": JSON, "X-Amz-Target": f"{TARGET}CreatePipeline"},
    )
    first = send_raw(api, headers, data)
    assert first[0] == 200
    after_first = state_digest(api.redis)
    time.sleep(SAME_CALL_SECONDS + 0.1)  # within it, the same bytes are the client's own
    status, _, body = send_raw(api, headers, data)  # the very same bytes
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert "replayed" in body["message"]
    assert state_digest(api.redis) == after_first


def test_a_replay_with_a_fresh_unsigned_invocation_id_is_refused(api: ApiServer, cp: Any) -> None:
    """botocore adds amz-sdk-invocation-id after signing: whoever resends a captured
    request can change it, so it does not make the request a new one."""
    cp.create_pipeline(pipeline=definition("replayed"))
    sent: list[Any] = []
    cp.meta.events.register("before-send.codepipeline.*", lambda request, **_: sent.append(request))
    cp.start_pipeline_execution(name="replayed")
    captured = sent[-1]
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in captured.headers.items()}
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "amz-sdk-invocation-id" not in signed.split(";")
    headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
    after_first = state_digest(api.redis)
    time.sleep(SAME_CALL_SECONDS + 0.1)  # within it, the same bytes are the client's own
    status, _, body = send_raw(api, headers, captured.body)
    assert (status, body["__type"]) == (403, "InvalidSignatureException")
    assert "replayed" in body["message"]
    assert state_digest(api.redis) == after_first
    executions = cp.list_pipeline_executions(pipelineName="replayed")
    assert len(executions["pipelineExecutionSummaries"]) == 1


def test_a_change_refused_with_an_error_may_come_again(api: ApiServer) -> None:
    """It changed nothing: the same signed bytes (botocore's immediate retry) get their
    answer, not a replay refusal. Once one succeeds, the next is a replay."""
    data = json.dumps({"name": "not-yet"}).encode()
    headers = sign(
        "POST",
        f"{api.url}/",
        data,
        {"Content-Type": JSON, "X-Amz-Target": f"{TARGET}StartPipelineExecution"},
    )
    for _ in range(2):
        status, _, body = send_raw(api, headers, data)
        assert (status, body["__type"]) == (400, "PipelineNotFoundException")
    codepipeline(api.url).create_pipeline(pipeline=definition("not-yet"))
    assert send_raw(api, headers, data)[0] == 200
    time.sleep(SAME_CALL_SECONDS + 0.1)
    status, _, body = send_raw(api, headers, data)
    assert (status, body["__type"]) == (403, "InvalidSignatureException")


def test_identical_reads_in_one_second_are_not_replays(cp: Any) -> None:
    """botocore signs the same bytes for the same call within a second; a read's replay
    changes nothing, so reads are not checked and polling loops (waiters) work."""
    sent: list[bytes] = []
    cp.meta.events.register(
        "before-send.codepipeline.ListPipelines",
        lambda request, **_: sent.append(bytes(request.headers["Authorization"])),
    )
    for _ in range(5):
        assert cp.list_pipelines()["pipelines"] == []
    assert len(set(sent)) < len(sent)  # some were signed identically (same second)


def test_a_credential_scoped_to_another_service_or_region_is_refused(api: ApiServer) -> None:
    """AWS's words: the signature is right, but not for this service or this region."""
    assert api.service.store.account.region == REGION
    before = state_digest(api.redis)
    for service, region, message in [
        ("s3", REGION, "Credential should be scoped to correct service: 'codepipeline'."),
        (
            "codepipeline",
            "eu-north-1",
            "Credential should be scoped to a valid region, not 'eu-north-1'.",
        ),
    ]:
        data = json.dumps({"pipeline": definition("scoped")}).encode()
        request = AWSRequest(
            method="POST",
            url=f"{api.url}/",
            data=data,
            headers={"Content-Type": JSON, "X-Amz-Target": f"{TARGET}CreatePipeline"},
        )
        SigV4Auth(ADMIN.credentials, service, region).add_auth(request)
        status, _, body = send_raw(api, dict(request.headers.items()), data)
        assert (status, body["__type"], body["message"]) == (
            403,
            "InvalidSignatureException",
            message,
        )
    assert state_digest(api.redis) == before


def test_an_unknown_key_is_refused(api: ApiServer) -> None:
    stranger = TestKey("nobody", "AKIAUNKNOWN000000000", "whatever-secret")
    with pytest.raises(ClientError) as exc:
        codepipeline(api.url, stranger).list_pipelines()
    assert code_of(exc) == "UnrecognizedClientException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_event_stream_needs_a_signature_and_a_reader(
    api: ApiServer, principals: Principals
) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{api.url}/events", timeout=5)
    assert exc.value.code == 403
    assert json.loads(exc.value.read())["__type"] == "MissingAuthenticationTokenException"
    assert signed_get(f"{api.url}/events", principals.add([Role.VIEWER]))["events"] == []
    with pytest.raises(urllib.error.HTTPError) as exc:
        signed_get(f"{api.url}/events", principals.add([Role.JOB_WORKER]))
    assert json.loads(exc.value.read())["__type"] == "AccessDeniedException"


def test_every_response_carries_a_request_id(api: ApiServer, cp: Any) -> None:
    out = cp.list_pipelines()
    assert out["ResponseMetadata"]["RequestId"]
    with urllib.request.urlopen(f"{api.url}/health", timeout=5) as resp:
        assert resp.headers["x-amzn-RequestId"]
    _, headers, _ = post(api, "ListPipelines", {}, None)
    assert headers["x-amzn-requestid"] != out["ResponseMetadata"]["RequestId"]


def test_a_broken_principals_file_keeps_the_api_serving_the_old_keys(
    api: ApiServer, principals: Principals, caplog: pytest.LogCaptureFixture
) -> None:
    key = principals.add([Role.VIEWER])
    assert codepipeline(api.url, key).list_pipelines()["pipelines"] == []  # loaded
    good = principals.path.read_bytes()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    try:
        for broken in (bomb, "principals: " + "[" * 100_000):
            principals.path.write_text(broken)
            assert codepipeline(api.url, key).list_pipelines()["pipelines"] == []
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("old keys kept" in m and str(principals.path) in m for m in errors)
    finally:
        principals.path.write_bytes(good)


def test_a_new_key_works_without_a_restart(api: ApiServer, principals: Principals) -> None:
    key = principals.add([Role.VIEWER], name="late-arrival")
    assert codepipeline(api.url, key).list_pipelines()["pipelines"] == []


# ---------------------------------------------------------------------------- authorization


def _request_for(operation: str) -> dict[str, Any]:
    """A body naming pipeline ``p`` wherever the operation takes a pipeline name."""
    shape = service_model().operation_model(operation).input_shape
    body: dict[str, Any] = {}
    for member, member_shape in shape.members.items() if shape else ():
        if member_shape.name == "PipelineName":
            body[member] = "p"
    return body


# What each role may call, written out: the test checks the table, not the table itself.
VIEWER_OPERATIONS = {
    "GetActionType",
    "GetPipeline",
    "GetPipelineExecution",
    "GetPipelineState",
    "ListActionExecutions",
    "ListActionTypes",
    "ListDeployActionExecutionTargets",
    "ListPipelineExecutions",
    "ListPipelines",
    "ListRuleExecutions",
    "ListRuleTypes",
    "ListTagsForResource",
    "ListWebhooks",
}
EXPECTED_ROLE_OPERATIONS = {
    Role.VIEWER: VIEWER_OPERATIONS,
    Role.OPERATOR: VIEWER_OPERATIONS
    | {
        "StartPipelineExecution",
        "StopPipelineExecution",
        "RetryStageExecution",
        "RollbackStage",
        "DisableStageTransition",
        "EnableStageTransition",
        "OverrideStageCondition",
        "PutActionRevision",
    },
    Role.APPROVER: VIEWER_OPERATIONS | {"PutApprovalResult"},
    Role.JOB_WORKER: {
        "PollForJobs",
        "AcknowledgeJob",
        "GetJobDetails",
        "PutJobSuccessResult",
        "PutJobFailureResult",
        "PollForThirdPartyJobs",
        "AcknowledgeThirdPartyJob",
        "GetThirdPartyJobDetails",
        "PutThirdPartyJobSuccessResult",
        "PutThirdPartyJobFailureResult",
    },
}


def test_the_roles_table_is_what_each_role_is_meant_to_do() -> None:
    assert {role: set(ops) for role, ops in ROLE_OPERATIONS.items()} == EXPECTED_ROLE_OPERATIONS
    assert len(ALL_OPERATIONS) == 44
    assert all(Principal("root", frozenset({Role.ADMIN})).may_call(op) for op in ALL_OPERATIONS)
    for role, allowed in EXPECTED_ROLE_OPERATIONS.items():
        principal = Principal(role.value, frozenset({role}))
        assert {op for op in ALL_OPERATIONS if principal.may_call(op)} == allowed, role


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
def test_each_role_is_refused_every_operation_above_its_level(
    api: ApiServer, principals: Principals, role: Role
) -> None:
    key = principals.add([role], name=f"only-{role.value}")
    codepipeline(api.url).create_pipeline(pipeline=definition("p"))
    before = state_digest(api.redis)
    refused = [op for op in ALL_OPERATIONS if op not in EXPECTED_ROLE_OPERATIONS[role]]
    assert refused, role
    for operation in refused:
        status, _, body = post(api, operation, _request_for(operation), key)
        assert (status, body["__type"]) == (400, "AccessDeniedException"), operation
        expected = (
            f"User: arn:aws:iam::{DEFAULT_ACCOUNT.account_id}:user/only-{role.value} "
            f"is not authorized to perform: codepipeline:{operation}"
        )
        if _request_for(operation):
            expected += f" on resource: {DEFAULT_ACCOUNT.pipeline_arn('p')}"
        assert body["message"] == expected
    assert state_digest(api.redis) == before
    for operation in sorted(EXPECTED_ROLE_OPERATIONS[role]):
        _, _, body = post(api, operation, _request_for(operation), key)
        assert body.get("__type") != "AccessDeniedException", operation


def test_admin_may_call_everything(api: ApiServer) -> None:
    for operation in ALL_OPERATIONS:
        _, _, body = post(api, operation, _request_for(operation), ADMIN)
        assert body.get("__type") != "AccessDeniedException", operation


def test_the_resource_of_a_create_is_the_declared_pipeline(
    principal_client: PrincipalClient,
) -> None:
    viewer = principal_client([Role.VIEWER], name="vera")
    with pytest.raises(ClientError) as exc:
        viewer.create_pipeline(pipeline=definition("newone"))
    assert code_of(exc) == "AccessDeniedException"
    assert str(exc.value.response["Error"]["Message"]).endswith(
        f"codepipeline:CreatePipeline on resource: {DEFAULT_ACCOUNT.pipeline_arn('newone')}"
    )
    assert viewer.list_pipelines()["pipelines"] == []


def test_the_workers_and_handlers_keys_have_their_roles(api: ApiServer) -> None:
    settings = Settings(
        auth_principals_file=None,
        api_access_key_id=WORKERS.access_key_id,
        api_secret_access_key=WORKERS.secret_access_key,
        api_handler_access_key_id=HANDLERS.access_key_id,
        api_handler_secret_access_key=HANDLERS.secret_access_key,
    )
    auth = Authenticator.from_settings(settings, api.redis)
    assert auth.keys is not None
    workers = auth.keys.lookup(WORKERS.access_key_id)
    handlers = auth.keys.lookup(HANDLERS.access_key_id)
    assert workers is not None and handlers is not None
    assert workers.principal.roles == {Role.OPERATOR, Role.JOB_WORKER}
    assert handlers.principal.roles == {Role.JOB_WORKER}
    # Through the API: a handler's key answers jobs but cannot start a pipeline.
    with pytest.raises(ClientError) as exc:
        codepipeline(api.url, HANDLERS).start_pipeline_execution(name="p")
    assert code_of(exc) == "AccessDeniedException"
    assert "user/conveyor-handlers" in str(exc.value)


# ---------------------------------------------------------------------------- configuration


def test_signing_on_without_keys_refuses_to_start(api: ApiServer) -> None:
    with pytest.raises(KeyConfigError) as exc:
        Authenticator.from_settings(Settings(auth_mode="sigv4"), api.redis)
    assert exc.value.message == NO_KEYS_MESSAGE
    assert "conveyor keys create" in NO_KEYS_MESSAGE
    assert "CONVEYOR_AUTH_MODE=anonymous" in NO_KEYS_MESSAGE


def conveyor_api(settings_env: dict[str, str], *args: str, **env: str) -> Any:
    """``conveyor api ARGS`` in a subprocess with no auth or API settings but ``env``;
    for refusals to start (port 1: nothing is served if it does start)."""
    clean = {
        k: v
        for k, v in {**os.environ, **settings_env}.items()
        if not k.startswith(("CONVEYOR_AUTH_", "CONVEYOR_API_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "api", "--port", "1", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_conveyor_api_refuses_to_start_without_keys(settings_env: dict[str, str]) -> None:
    out = conveyor_api(settings_env)
    assert out.returncode != 0
    assert "no access keys are configured" in out.stderr
    assert "CONVEYOR_AUTH_MODE=anonymous" in out.stderr


def test_conveyor_api_refuses_anonymous_on_a_public_address(settings_env: dict[str, str]) -> None:
    out = conveyor_api(settings_env, "--host", "0.0.0.0", CONVEYOR_AUTH_MODE="anonymous")
    assert out.returncode != 0
    assert "'0.0.0.0', which is not a loopback address" in out.stderr
    assert "CONVEYOR_AUTH_ANONYMOUS_ALLOW_PUBLIC=true" in out.stderr


@pytest.mark.parametrize(
    ("mode", "host", "allow_public", "refused"),
    [
        ("anonymous", "0.0.0.0", False, True),
        ("anonymous", "::", False, True),
        ("anonymous", "10.0.0.5", False, True),
        ("anonymous", "api.example.com", False, True),
        ("anonymous", "0.0.0.0", True, False),
        ("anonymous", "127.0.0.1", False, False),
        ("anonymous", "127.0.0.53", False, False),
        ("anonymous", "::1", False, False),
        ("anonymous", "[::1]", False, False),
        ("anonymous", "localhost", False, False),
        ("sigv4", "0.0.0.0", False, False),
    ],
)
def test_anonymous_mode_serves_loopback_only_unless_allowed(
    mode: str, host: str, allow_public: bool, refused: bool
) -> None:
    if refused:
        with pytest.raises(KeyConfigError, match="not a loopback address"):
            check_bind(mode, host, allow_public=allow_public)
    else:
        check_bind(mode, host, allow_public=allow_public)


def test_anonymous_mode_is_explicit_and_says_so(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    import uvicorn

    from engine.api import create_app
    from tests.helpers import wait_for
    from workers import devstack

    with caplog.at_level("WARNING"):
        app = create_app(api.service, authenticator=Authenticator.anonymous())
    assert "AUTHENTICATION IS OFF" in caplog.text
    port = devstack.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=15, message="uvicorn did not start")
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health["auth"] == "anonymous" and "AUTHENTICATION IS OFF" in health["warning"]
        req = urllib.request.Request(
            f"{url}/",
            data=b"{}",
            headers={"Content-Type": JSON, "X-Amz-Target": f"{TARGET}ListPipelines"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"pipelines": []}
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------- clients


@pytest.fixture
def credentials_file(
    tmp_path: Path, principals: Principals, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestKey]:
    """A shared credentials file with profile ``conveyor`` (a viewer), and no keys in the
    environment."""
    key = principals.add([Role.VIEWER], name="profiled")
    path = tmp_path / "credentials"
    path.write_text(
        f"[conveyor]\naws_access_key_id = {key.access_key_id}\n"
        f"aws_secret_access_key = {key.secret_access_key}\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile conveyor]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    yield key


def test_the_cli_signs_with_a_profile(
    api: ApiServer, cp: Any, credentials_file: TestKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp.create_pipeline(pipeline=definition("seen"))
    root = click.Group("conveyor")
    register(root)
    runner = CliRunner()
    unsigned = runner.invoke(root, ["--endpoint", api.url, "pipelines", "list"])
    assert unsigned.exit_code == 1
    assert "MissingAuthenticationTokenException" in unsigned.output
    signed = runner.invoke(
        root, ["--endpoint", api.url, "--profile", "conveyor", "pipelines", "list"]
    )
    assert signed.exit_code == 0, signed.output
    assert "seen" in signed.output
    # A viewer: refused a write, in AWS's words.
    refused = runner.invoke(
        root, ["--endpoint", api.url, "--profile", "conveyor", "pipelines", "delete", "seen"]
    )
    assert refused.exit_code == 1
    assert "AccessDeniedException" in refused.output and "user/profiled" in refused.output
    monkeypatch.setenv("AWS_PROFILE", "conveyor")
    by_env = runner.invoke(root, ["--endpoint", api.url, "pipelines", "list"])
    assert by_env.exit_code == 0 and "seen" in by_env.output


def test_the_aws_cli_signs_with_a_profile(
    api: ApiServer, cp: Any, credentials_file: TestKey
) -> None:
    aws = Path(sys.executable).with_name("aws")
    if not aws.exists():
        aws_path = shutil.which("aws")
        if aws_path is None:
            pytest.skip("the AWS CLI is not installed in the venv (awscli, in the dev extras)")
        aws = Path(aws_path)
    cp.create_pipeline(pipeline=definition("from-cli"))
    out = subprocess.run(
        [
            *(str(aws), "--profile", "conveyor", "--endpoint-url", api.url),
            *("codepipeline", "list-pipelines", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    assert [p["name"] for p in json.loads(out.stdout)["pipelines"]] == ["from-cli"]


def test_redis_keeps_replay_notes_briefly(api: ApiServer, cp: Any) -> None:
    cp.list_pipelines()
    assert not list(api.redis.scan_iter(redis_keys.seen_signature("*")))  # reads: no note
    cp.create_pipeline(pipeline=definition("noted"))
    notes = list(api.redis.scan_iter(redis_keys.seen_signature("*")))
    assert notes
    assert all(0 < api.redis.ttl(k) <= 600 for k in notes)
