"""SigV4 verification against requests botocore itself signed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from engine.auth import sigv4
from engine.auth.principals import Principal, Role
from engine.auth.sigv4 import ReceivedRequest

HOST = "http://127.0.0.1:8484"
KEYS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def _signed(
    body: bytes, path: str = "/", query: str = "", secret: str | None = None
) -> ReceivedRequest:
    url = HOST + path + (f"?{query}" if query else "")
    req = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "X-Amz-Target": "CodePipeline_20150709.GetPipeline",
            "Content-Type": "application/x-amz-json-1.1",
            "amz-sdk-invocation-id": "0f1e",
        },
    )
    creds = Credentials("AKIDEXAMPLE", secret or KEYS["AKIDEXAMPLE"])
    SigV4Auth(creds, "codepipeline", "eu-west-1").add_auth(req)
    prepared = req.prepare()
    headers = [(k.lower(), str(v)) for k, v in prepared.headers.items()]
    headers.append(("host", "127.0.0.1:8484"))
    return ReceivedRequest("POST", path, query, headers, body)


def _verify(req: ReceivedRequest, now: datetime | None = None) -> sigv4.Authorization:
    return sigv4.verify(req, KEYS, now=now or datetime.now(UTC), host_url=HOST)


@given(body=st.binary(max_size=512), segment=st.text("abc %/~é", max_size=8))
def test_what_botocore_signs_verifies(body: bytes, segment: str) -> None:
    from urllib.parse import quote

    path = "/" + quote(segment, safe="/~")
    auth = _verify(_signed(body, path=path, query="b=2&a=%2F"))
    assert auth.access_key == "AKIDEXAMPLE"
    assert auth.region == "eu-west-1" and auth.service == "codepipeline"


def test_a_changed_body_header_or_secret_is_refused() -> None:
    good = _signed(b'{"name":"a"}')
    changed_body = ReceivedRequest(good.method, "/", "", good.headers, b'{"name":"b"}')
    with pytest.raises(sigv4.AuthError, match="does not match"):
        _verify(changed_body)
    target = [
        (k, "CodePipeline_20150709.DeletePipeline" if k == "x-amz-target" else v)
        for k, v in good.headers
    ]
    with pytest.raises(sigv4.AuthError, match="does not match"):
        _verify(ReceivedRequest("POST", "/", "", target, good.body))
    with pytest.raises(sigv4.AuthError, match="does not match"):
        _verify(_signed(b"{}", secret="not-the-secret"))


def _scoped(service: str | None, region: str | None) -> sigv4.Authorization:
    return sigv4.verify(
        _signed(b"{}"), KEYS, now=datetime.now(UTC), host_url=HOST, service=service, region=region
    )


def test_the_credential_scope_is_checked_only_when_asked() -> None:
    assert _scoped(None, None).service == "codepipeline"  # the S3 gateway's default, for now
    assert _scoped("codepipeline", "eu-west-1").region == "eu-west-1"
    with pytest.raises(sigv4.AuthError) as wrong_service:
        _scoped("s3", None)
    assert wrong_service.value.aws_code == "InvalidSignatureException"
    assert wrong_service.value.status == 403
    assert wrong_service.value.message == "Credential should be scoped to correct service: 's3'."
    with pytest.raises(sigv4.AuthError) as wrong_region:
        _scoped("codepipeline", "us-east-1")
    assert wrong_region.value.aws_code == "InvalidSignatureException"
    assert (
        wrong_region.value.message
        == "Credential should be scoped to a valid region, not 'eu-west-1'."
    )


def test_unsigned_unknown_and_skewed_requests_get_aws_error_names() -> None:
    with pytest.raises(sigv4.MissingAuthenticationError) as missing:
        _verify(ReceivedRequest("POST", "/", "", [("host", "x")], b"{}"))
    assert missing.value.aws_code == "MissingAuthenticationTokenException"
    req = _signed(b"{}")
    with pytest.raises(sigv4.UnrecognizedClientError) as unknown:
        sigv4.verify(req, {}, now=datetime.now(UTC), host_url=HOST)
    assert unknown.value.aws_code == "UnrecognizedClientException"
    with pytest.raises(sigv4.SignatureExpiredError, match="Signature expired"):
        _verify(req, now=datetime.now(UTC) + timedelta(minutes=6))
    with pytest.raises(sigv4.SignatureExpiredError):
        _verify(req, now=datetime.now(UTC) - timedelta(minutes=6))
    _verify(req, now=datetime.now(UTC) + timedelta(minutes=4))


@pytest.mark.parametrize(
    "header",
    [
        "AWS4-HMAC-SHA1 Credential=a/20260101/r/s/aws4_request",
        "AWS4-HMAC-SHA256 Credential=a/20260101/r/s/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=bad, SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=a/20260101/r/s/aws4_request, SignedHeaders=x, Signature="
        + "0" * 64,
    ],
)
def test_malformed_authorization_headers_are_incomplete(header: str) -> None:
    req = ReceivedRequest(
        "POST",
        "/",
        "",
        [("authorization", header), ("host", "h"), ("x-amz-date", "20260101T000000Z")],
        b"",
    )
    with pytest.raises(sigv4.IncompleteSignatureError):
        sigv4.parse_authorization(req)


def test_roles_are_sets_of_operations_not_a_ladder() -> None:
    approver = Principal("ann", frozenset({Role.APPROVER}))
    assert approver.may_call("PutApprovalResult") and approver.may_call("GetPipelineState")
    assert not approver.may_call("StartPipelineExecution")
    worker = Principal("w", frozenset({Role.JOB_WORKER}))
    assert worker.may_call("PollForJobs") and not worker.may_call("GetPipeline")
    assert Principal("root", frozenset({Role.ADMIN})).may_call("CreatePipeline")
    assert not Principal("nobody").may_call("ListPipelines")
