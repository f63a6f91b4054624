"""Verify AWS Signature Version 4 with botocore's own signer.

The server rebuilds the request the client signed (method, the raw path and query as
received, exactly the headers the client listed in ``SignedHeaders``, the body) and asks
botocore's :class:`~botocore.auth.SigV4Auth` for the canonical request, the string to sign
and the signature, with the client's timestamp and credential scope. Nothing of SigV4's
canonicalisation is written here: if botocore signs it, botocore verifies it.

The functions are pure (the clock is an argument); replay detection and key lookup are the
caller's, since both need state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.auth import EMPTY_SHA256_HASH, UNSIGNED_PAYLOAD, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from engine.errors import ConveyorError

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# AWS refuses a request signed more than five minutes before or after its own clock.
MAX_SKEW_SECONDS = 300.0

_CREDENTIAL = re.compile(
    r"^(?P<key>[^/]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})"
    r"/(?P<service>[a-z0-9-]{1,32})/aws4_request$"
)
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,128}$")
MAX_SIGNED_HEADERS = 64


class AuthError(ConveyorError):
    """A request that is not authenticated. ``aws_code`` is AWS's name for the reason;
    the HTTP status is 403 except for a missing signature (AWS answers that with 403 too,
    as ``MissingAuthenticationTokenException``)."""

    aws_code = "InvalidSignatureException"
    status = 403


class MissingAuthenticationError(AuthError):
    aws_code = "MissingAuthenticationTokenException"


class IncompleteSignatureError(AuthError):
    aws_code = "IncompleteSignatureException"
    status = 400


class UnrecognizedClientError(AuthError):
    aws_code = "UnrecognizedClientException"


class SignatureExpiredError(AuthError):
    aws_code = "InvalidSignatureException"


class InvalidDateError(AuthError):
    aws_code = "InvalidSignatureException"


class AccessDeniedError(AuthError):
    aws_code = "AccessDeniedException"
    status = 400


@dataclass(frozen=True)
class Authorization:
    """What the ``Authorization`` header claims."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str  # X-Amz-Date, the instant the client signed at

    @property
    def signed_at(self) -> datetime:
        return datetime.strptime(self.timestamp, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it reached the server. ``raw_path`` and ``raw_query`` are exactly as
    sent (still percent-encoded); ``headers`` keep every value of a repeated header."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes | None  # None: not read (a streamed S3 body); its hash header is trusted

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ",".join(values) if values else None


def parse_authorization(request: ReceivedRequest) -> Authorization:
    """The ``Authorization`` header's parts, checked for shape (not yet for truth)."""
    header = request.header("authorization")
    if header is None:
        raise MissingAuthenticationError(
            "Missing Authentication Token: sign requests with AWS Signature Version 4 "
            "(any AWS SDK or the AWS CLI does, with an access key Conveyor knows)"
        )
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureError(
            f"Authorization header uses {algorithm[:40]!r}; only {ALGORITHM} is accepted"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, value = item.strip().partition("=")
        if eq:
            parts[name] = value
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in parts]
    if missing:
        raise IncompleteSignatureError(
            f"Authorization header requires {', '.join(missing)} "
            "(Credential=..., SignedHeaders=..., Signature=...)"
        )
    credential = _CREDENTIAL.match(parts["Credential"])
    if credential is None:
        raise IncompleteSignatureError(
            "Authorization header's Credential must be "
            "<access key>/<yyyymmdd>/<region>/<service>/aws4_request"
        )
    if not _SIGNATURE.match(parts["Signature"]):
        raise IncompleteSignatureError("Authorization header's Signature must be 64 hex digits")
    signed = tuple(parts["SignedHeaders"].split(";"))
    if len(signed) > MAX_SIGNED_HEADERS or not all(_HEADER_NAME.match(h) for h in signed):
        raise IncompleteSignatureError("Authorization header's SignedHeaders is malformed")
    if "host" not in signed:
        raise IncompleteSignatureError("SignedHeaders must include host")
    timestamp = request.header("x-amz-date")
    if timestamp is None:
        raise IncompleteSignatureError("the X-Amz-Date header is required with SigV4")
    try:
        datetime.strptime(timestamp, TIMESTAMP_FORMAT)
    except ValueError:
        raise IncompleteSignatureError(
            f"X-Amz-Date {timestamp[:40]!r} is not of the form yyyymmddThhmmssZ"
        ) from None
    if timestamp[:8] != credential["date"]:
        raise InvalidDateError("the Credential's date is not X-Amz-Date's date")
    return Authorization(
        access_key=credential["key"],
        date=credential["date"],
        region=credential["region"],
        service=credential["service"],
        signed_headers=signed,
        signature=parts["Signature"],
        timestamp=timestamp,
    )


def check_clock(auth: Authorization, now: datetime) -> None:
    """Refuse a signature made more than :data:`MAX_SKEW_SECONDS` away from ``now``."""
    skew = (now - auth.signed_at).total_seconds()
    if abs(skew) > MAX_SKEW_SECONDS:
        earlier_later = "earlier" if skew > 0 else "later"
        raise SignatureExpiredError(
            f"Signature expired: {auth.timestamp} is now {earlier_later} than "
            f"{_stamp(now)} (the clocks may differ by at most {int(MAX_SKEW_SECONDS)} s)"
        )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def expected_signature(
    request: ReceivedRequest,
    auth: Authorization,
    secret_key: str,
    *,
    host_url: str,
    s3: bool = False,
) -> str:
    """The signature botocore computes for ``request`` signed with ``secret_key`` at the
    client's timestamp and scope. ``host_url`` is ``scheme://host`` (the scheme decides
    whether botocore hashes the payload: always over http). ``s3`` picks S3's variant
    (no double encoding of the path; the payload hash header is what was signed)."""
    headers: dict[str, str] = {}
    for name in auth.signed_headers:
        value = request.header(name)
        if value is None:
            raise IncompleteSignatureError(f"signed header {name!r} is not in the request")
        headers[name] = value
    url = host_url + request.raw_path + (f"?{request.raw_query}" if request.raw_query else "")
    aws_request = AWSRequest(
        method=request.method, url=url, headers=headers, data=request.body or b""
    )
    aws_request.context["timestamp"] = auth.timestamp
    signer_class = S3SigV4Auth if s3 else SigV4Auth
    signer = signer_class(Credentials(auth.access_key, secret_key), auth.service, auth.region)
    if request.body is None and "x-amz-content-sha256" not in headers:
        raise IncompleteSignatureError("a streamed body needs a signed x-amz-content-sha256")
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))


def check_payload_hash(request: ReceivedRequest) -> None:
    """A signed ``x-amz-content-sha256`` must be the body's hash (or UNSIGNED-PAYLOAD):
    otherwise the signature covers a hash, not the bytes that came."""
    claimed = request.header("x-amz-content-sha256")
    if claimed is None or claimed == UNSIGNED_PAYLOAD or request.body is None:
        return
    actual = hashlib.sha256(request.body).hexdigest() if request.body else EMPTY_SHA256_HASH
    if not hmac.compare_digest(claimed, actual):
        raise AuthError("x-amz-content-sha256 does not match the request body")


def check_scope(auth: Authorization, *, service: str | None, region: str | None) -> None:
    """Refuse a credential scoped to another service or region, in AWS's words (its JSON
    services answer InvalidSignatureException, 403). None: that part is not checked."""
    if service is not None and auth.service != service:
        raise AuthError(f"Credential should be scoped to correct service: '{service}'.")
    if region is not None and auth.region != region:
        raise AuthError(f"Credential should be scoped to a valid region, not '{auth.region}'.")


def verify(
    request: ReceivedRequest,
    secret_for: Mapping[str, str],
    *,
    now: datetime,
    host_url: str,
    s3: bool = False,
    service: str | None = None,
    region: str | None = None,
) -> Authorization:
    """The request's :class:`Authorization` if its signature is right, else AuthError.

    ``secret_for`` maps access key ids to secret keys. ``service`` and ``region``, when
    given, are the only credential scope accepted (:func:`check_scope`)."""
    auth = parse_authorization(request)
    check_scope(auth, service=service, region=region)
    secret = secret_for.get(auth.access_key)
    if secret is None:
        raise UnrecognizedClientError(
            "The security token included in the request is invalid: "
            f"access key {auth.access_key!r} is not known to this installation"
        )
    check_clock(auth, now)
    check_payload_hash(request)
    expected = expected_signature(request, auth, secret, host_url=host_url, s3=s3)
    if not hmac.compare_digest(expected, auth.signature):
        raise AuthError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return auth
