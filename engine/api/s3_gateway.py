"""Conveyor's S3 gateway: where job workers and Lambda-style handlers use the temporary
``artifactCredentials`` of their job (``AWS_ENDPOINT_URL_S3=<api>/s3``).

Served by the API process under ``/s3`` (botocore keeps an endpoint's path, and addresses
buckets by path under it). A request must be signed (SigV4, verified with botocore's own
signer by :func:`engine.auth.sigv4.verify`) with a grant's access key and carry its session
token; it may then read (GetObject, HeadObject) only the grant's input objects, and write
(PutObject, the multipart upload calls) only its output objects. Nothing else: no listing,
no other key, no other bucket; those get S3's ``AccessDenied``. Allowed requests go to the
real artifact store signed with the store's own keys, which never leave Conveyor; bodies
stream both ways (an upload is spooled to a temporary file, so its hash is checked before
any byte is forwarded; at most the artifact size limit per request, and only so many at once).
Whatever a request gets wrong is a 4xx in S3's error shape; a store that cannot be reached is
503 ``ServiceUnavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from engine.auth import sigv4
from engine.errors import ServiceUnavailableError
from engine.store.credentials import CredentialStore, Grant

log = logging.getLogger(__name__)

PREFIX = "/s3"
CHUNK = 64 * 1024
# An aws-chunked chunk's header line: hex size, then extensions such as
# ``;chunk-signature=<64 hex>``; anything longer is not one.
MAX_CHUNK_HEADER = 128
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
# Uploads spooled at once; one more is told to slow down, as S3 does, rather than fill the disk.
MAX_CONCURRENT_UPLOADS = 8
UPSTREAM_TIMEOUT = urllib3.Timeout(connect=10.0, read=300.0)
_UNAVAILABLE = (
    "Conveyor's S3 gateway cannot serve this now (the artifact store is unreachable, or an "
    "upload cannot be spooled); please try again."
)
# Uploads smaller than this stay in memory while they are checked.
SPOOL_MEMORY_BYTES = 1024 * 1024
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# Request headers passed on to the store (the signature and checksums of the client's own
# request are not: the gateway signs anew, and checks the payload itself).
_FORWARDED = re.compile(
    r"^(content-type|content-md5|content-disposition|content-language|cache-control|expires"
    r"|range|if-match|if-none-match|if-modified-since|if-unmodified-since|x-amz-meta-.*)$"
)
_RETURNED = re.compile(
    r"^(content-type|content-length|content-range|content-disposition|content-encoding"
    r"|content-language|cache-control|expires|etag|last-modified|accept-ranges"
    r"|x-amz-meta-.*|x-amz-version-id|x-amz-request-id|x-amz-checksum-.*)$"
)


@dataclass(frozen=True)
class Upstream:
    """The real artifact store and its keys."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    # One request's body at most: the artifact size limit (``max_artifact_bytes``).
    max_body_bytes: int


class S3Error(Exception):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _error(exc: S3Error, method: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{exc.code}</Code><Message>{escape(exc.message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return Response(
        content=b"" if method == "HEAD" else body.encode(),
        status_code=exc.status,
        media_type="application/xml",
        # A refused upload's body is not read: the connection cannot carry another request.
        headers={"Connection": "close"},
    )


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Access Denied: {message}")


@dataclass(frozen=True)
class Target:
    bucket: str
    key: str  # decoded
    raw_key: str  # as sent, percent-encoded


def _target(raw_path: str, host: str, grant: Grant) -> Target | None:
    """Bucket and key of a path-style request under the prefix, or of a virtual-hosted one
    (``<bucket>.<host>``) for a bucket the grant names."""
    rest = raw_path[len(PREFIX) :].lstrip("/")
    buckets = {b for b, _ in grant.reads | grant.writes}
    hostname = host.split(":", 1)[0]
    for bucket in buckets:
        if hostname.startswith(f"{bucket}."):
            return Target(bucket, unquote(rest), rest) if rest else None
    bucket, _, raw_key = rest.partition("/")
    if not bucket or not raw_key:
        return None
    return Target(unquote(bucket), unquote(raw_key), raw_key)


def _allowed(method: str, query: dict[str, str], target: Target, grant: Grant) -> bool:
    """Whether this operation on this object is one the grant allows."""
    obj = (target.bucket, target.key)
    names = set(query)
    if method in ("GET", "HEAD") and obj in grant.reads:
        return all(n.startswith("response-") or n in ("partNumber", "versionId") for n in names)
    if obj not in grant.writes:
        return False
    if method == "PUT":  # PutObject, UploadPart
        return names in ({"partNumber", "uploadId"}, set())
    if method == "POST":  # CreateMultipartUpload, CompleteMultipartUpload
        return names in ({"uploads"}, {"uploadId"})
    if method in ("DELETE", "GET"):  # AbortMultipartUpload, ListParts
        return names == {"uploadId"}
    return False


class Gateway:
    def __init__(
        self,
        credentials: CredentialStore,
        upstream: Upstream,
        max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS,
    ) -> None:
        self.credentials, self.upstream = credentials, upstream
        self.http = urllib3.PoolManager(maxsize=16, retries=False, timeout=UPSTREAM_TIMEOUT)
        # Bodies being spooled or forwarded; each may take up to max_body_bytes of disk.
        self.uploads = asyncio.Semaphore(max_concurrent_uploads)

    async def handle(self, request: Request) -> Response:
        method = request.method
        try:
            return await self._handle(request)
        except S3Error as exc:
            return _error(exc, method)
        except sigv4.AuthError as exc:
            code = (
                "InvalidAccessKeyId"
                if exc.aws_code == "UnrecognizedClientException"
                else ("SignatureDoesNotMatch")
            )
            return _error(S3Error(code, exc.message), method)
        except (urllib3.exceptions.HTTPError, OSError, ServiceUnavailableError) as exc:
            log.warning("S3 gateway: %s %s: unavailable: %r", method, request.url.path, exc)
            return _error(S3Error("ServiceUnavailable", _UNAVAILABLE, 503), method)
        except ValueError as exc:  # what the checks above did not foresee, still the client's
            log.warning("S3 gateway: %s %s: malformed request: %s", method, request.url.path, exc)
            return _error(S3Error("InvalidRequest", f"malformed request: {exc}", 400), method)

    async def _handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        received = sigv4.ReceivedRequest(request.method, raw_path, raw_query, headers, None)
        auth = sigv4.parse_authorization(received)
        grant = await run_in_threadpool(self.credentials.lookup, auth.access_key)
        if grant is None:
            raise S3Error(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records "
                "(job credentials expire with their job)",
            )
        host = received.header("host") or ""
        sigv4.verify(
            received,
            {grant.access_key_id: grant.secret_access_key},
            now=datetime.now(UTC),
            host_url=f"{request.url.scheme}://{host}",
            s3=True,
            service="s3",  # a credential scoped to another service is refused, as on AWS
        )
        token = received.header("x-amz-security-token") or ""
        if not hmac.compare_digest(token.encode(), grant.session_token.encode()):
            raise S3Error("InvalidToken", "The provided token is malformed or otherwise invalid.")
        target = _target(raw_path, host, grant)
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        if target is None or not _allowed(request.method, query, target, grant):
            what = f"{target.bucket}/{target.key}" if target else "this request"
            raise _denied(
                f"these job credentials do not allow {request.method} on {what}: they read "
                "only the job's input artifacts and write only its output artifacts"
            )
        if request.method in ("PUT", "POST"):
            if self.uploads.locked():
                raise S3Error("SlowDown", "Please reduce your request rate.", 503)
            async with self.uploads:
                body = await self._spooled(request, received)
                with body:
                    upstream = await run_in_threadpool(
                        self._forward, request.method, target, raw_query, received, body
                    )
        else:
            upstream = await run_in_threadpool(
                self._forward, request.method, target, raw_query, received, None
            )
        out_headers = {k: v for k, v in upstream.headers.items() if _RETURNED.match(k.lower())}
        if request.method == "HEAD":
            upstream.release_conn()
            return Response(status_code=upstream.status, headers=out_headers)
        return StreamingResponse(
            _stream(upstream), status_code=upstream.status, headers=out_headers
        )

    async def _spooled(self, request: Request, received: sigv4.ReceivedRequest) -> IO[bytes]:
        """The request's payload in a temporary file, decoded from aws-chunked when sent so,
        its hash checked against the signed ``x-amz-content-sha256``."""
        claimed = received.header("x-amz-content-sha256") or ""
        if claimed.startswith("STREAMING-") and claimed != UNSIGNED_TRAILER:
            raise S3Error(
                "NotImplemented",
                f"x-amz-content-sha256 {claimed} is not supported by Conveyor's S3 gateway",
                501,
            )
        limit = self.upstream.max_body_bytes
        # Refused unread when the payload's declared length is over the limit (an aws-chunked
        # body's Content-Length counts its framing too; its decoded length is the payload's).
        length = "x-amz-decoded-content-length" if claimed == UNSIGNED_TRAILER else "content-length"
        declared = received.header(length) or ""
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        digest = hashlib.sha256()
        size = 0
        try:
            chunks: AsyncIterator[bytes] = request.stream()
            if claimed == UNSIGNED_TRAILER:
                chunks = _aws_chunked(chunks, limit)
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                digest.update(chunk)
                spool.write(chunk)
            if re.fullmatch(r"[0-9a-f]{64}", claimed) and digest.hexdigest() != claimed:
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    400,
                )
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def _forward(
        self,
        method: str,
        target: Target,
        raw_query: str,
        received: sigv4.ReceivedRequest,
        body: IO[bytes] | None,
    ) -> Any:
        up = self.upstream
        url = f"{up.endpoint_url.rstrip('/')}/{target.bucket}/{target.raw_key}"
        if raw_query:
            url += f"?{raw_query}"
        headers = {k: v for k, v in received.headers if _FORWARDED.match(k.lower())}
        length = 0
        if body is not None:
            body.seek(0, 2)
            length = body.tell()
            body.seek(0)
            headers["Content-Length"] = str(length)
        aws = AWSRequest(method=method, url=url, headers=headers)
        aws.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        S3SigV4Auth(Credentials(up.access_key_id, up.secret_access_key), "s3", up.region).add_auth(
            aws
        )
        prepared = aws.prepare()
        return self.http.request(
            method,
            prepared.url,
            body=body if body is not None and length else None,
            headers=dict(prepared.headers.items()),
            preload_content=False,
            redirect=False,
        )


def _stream(response: Any) -> Iterator[bytes]:
    try:
        yield from response.stream(CHUNK)
    finally:
        response.release_conn()


def _incomplete(message: str) -> S3Error:
    return S3Error("IncompleteBody", f"malformed aws-chunked body: {message}", 400)


def _too_large(limit: int) -> S3Error:
    return S3Error("EntityTooLarge", f"uploads are limited to {limit} bytes", 400)


async def _aws_chunked(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The payload of an ``aws-chunked`` body (``<hex size>\\r\\n<data>\\r\\n`` ... ``0``,
    then trailers, which are dropped: the gateway checks and signs the payload itself).

    Data is passed on as it arrives, never gathered into whole chunks: only a chunk's header
    line (at most :data:`MAX_CHUNK_HEADER` bytes) and its closing CRLF are held. A header that
    is not one, a chunk not closed by CRLF or a body that ends early is ``IncompleteBody``; a
    declared size beyond ``limit`` bytes in all is ``EntityTooLarge``, before its data is read.
    """
    line = bytearray()  # the header line, or the CRLF closing a chunk's data, so far
    left = -1  # data bytes of the current chunk still to come; -1: reading a header
    total = 0
    async for piece in chunks:
        view, at = memoryview(piece), 0
        while at < len(view):
            if left > 0:  # data: pass on what this piece holds of it
                take = min(left, len(view) - at)
                yield bytes(view[at : at + take])
                at, left = at + take, left - take
                continue
            if left == 0:  # the CRLF after a chunk's data
                need = 2 - len(line)
                line += view[at : at + need]
                at += need
                if len(line) < 2:
                    continue
                if line != b"\r\n":
                    raise _incomplete("a chunk's data is not followed by CRLF")
                line.clear()
                left = -1
                continue
            end = bytes(view[at : at + MAX_CHUNK_HEADER + 2]).find(b"\n")
            if end < 0:
                line += view[at:]
                at = len(view)
            else:
                line += view[at : at + end + 1]
                at += end + 1
            if len(line) > MAX_CHUNK_HEADER + 2:
                raise _incomplete(f"a chunk header is longer than {MAX_CHUNK_HEADER} bytes")
            if end < 0:
                continue
            if not line.endswith(b"\r\n"):
                raise _incomplete("a chunk header does not end with CRLF")
            size_field = bytes(line[:-2]).split(b";", 1)[0]
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise _incomplete(f"chunk size {size_field[:20]!r} is not hexadecimal")
            size = int(size_field, 16)
            if size == 0:
                return
            total += size
            if total > limit:
                raise _too_large(limit)
            line.clear()
            left = size
    raise _incomplete("the body ends before its final zero-length chunk")


def install(app: FastAPI, gateway: Gateway) -> None:
    """Serve the gateway under :data:`PREFIX` on the API's app."""
    methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]

    @app.api_route(PREFIX, methods=methods, include_in_schema=False)
    @app.api_route(PREFIX + "/{rest:path}", methods=methods, include_in_schema=False)
    async def s3_gateway(request: Request) -> Response:
        return await gateway.handle(request)
