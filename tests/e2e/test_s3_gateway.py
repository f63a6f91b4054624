"""The S3 gateway over real HTTP, in front of the session's real S3, with grants issued by
the credential store on the session's Redis: one job's credentials reach no other job's
artifacts; malformed or oversized uploads are 4xx with S3's error shape while the server
stays small; too many uploads at once are told to slow down; a store that is down is 503.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import redis
import uvicorn
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from fastapi import FastAPI

from engine.api.s3_gateway import UNSIGNED_TRAILER, Gateway, Upstream, install
from engine.settings import Settings
from engine.store.credentials import CredentialStore, Grant
from providers._s3 import s3_client
from providers.base import S3Access
from tests.helpers import wait_for
from tests.stack import unique
from workers import devstack

MB = 1024 * 1024
LIMIT = 256 * MB  # the artifact size limit of the gateways here


@dataclass
class Server:
    url: str
    store: CredentialStore


GatewayFactory = Callable[..., Server]


@pytest.fixture
def gateway(settings: Settings, redis_client: redis.Redis) -> Iterator[GatewayFactory]:
    """``gateway(endpoint_url=..., uploads=...)``: an API serving only the gateway, on a free
    port, in front of the session's S3 (or ``endpoint_url``)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    store = CredentialStore(redis_client)

    def start(endpoint_url: str | None = None, uploads: int = 8) -> Server:
        upstream = Upstream(
            endpoint_url or settings.s3_endpoint_url,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            settings.s3_region,
            LIMIT,
        )
        app = FastAPI()
        install(app, Gateway(store, upstream, max_concurrent_uploads=uploads))
        port = devstack.free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="s3-gateway", daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=15, message="uvicorn did not start")
        servers.append((server, thread))
        return Server(f"http://127.0.0.1:{port}", store)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def bucket(settings: Settings) -> str:
    """A bucket of the real store holding two jobs' input artifacts."""
    name = unique("artifacts")
    s3 = _store_client(settings)
    s3.create_bucket(Bucket=name)
    for job in ("a", "b"):
        s3.put_object(Bucket=name, Key=f"{job}/in.zip", Body=f"input of job {job}".encode())
    return name


def _store_client(settings: Settings) -> Any:
    """The real store, with Conveyor's own keys."""
    s = settings
    return s3_client(
        S3Access(s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key, s.s3_region)
    )


def _grant(server: Server, bucket: str, job: str) -> Grant:
    """What the job service issues a job: read its input, write its output."""
    return server.store.issue(
        reads=[(bucket, f"{job}/in.zip")], writes=[(bucket, f"{job}/out.zip")], ttl_seconds=600
    )


def _client(server: Server, grant: Grant, *, token: str | None = None) -> Any:
    """A job worker's S3 client, as built from its ``artifactCredentials``."""
    return boto3.client(
        "s3",
        endpoint_url=server.url + "/s3",
        aws_access_key_id=grant.access_key_id,
        aws_secret_access_key=grant.secret_access_key,
        aws_session_token=token or grant.session_token,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def _code(attempt: Callable[[], Any]) -> str:
    try:
        attempt()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "allowed"


# --- One job, its own artifacts ---------------------------------------------------------------


def test_one_jobs_credentials_cannot_read_another_jobs_input(
    gateway: GatewayFactory, bucket: str
) -> None:
    server = gateway()
    a, b = _grant(server, bucket, "a"), _grant(server, bucket, "b")
    s3_a = _client(server, a)
    own = s3_a.get_object(Bucket=bucket, Key="a/in.zip")["Body"].read()
    assert own == b"input of job a"
    assert _code(lambda: s3_a.get_object(Bucket=bucket, Key="b/in.zip")) == "AccessDenied"
    assert _code(lambda: s3_a.head_object(Bucket=bucket, Key="b/in.zip")) == "403"
    assert _code(lambda: s3_a.put_object(Bucket=bucket, Key="b/out.zip", Body=b"x")) == (
        "AccessDenied"
    )
    # Nor do A's keys with B's session token.
    mixed = _client(server, a, token=b.session_token)
    assert _code(lambda: mixed.get_object(Bucket=bucket, Key="a/in.zip")) == "InvalidToken"
    assert _code(lambda: mixed.get_object(Bucket=bucket, Key="b/in.zip")) == "InvalidToken"


# --- Uploads ---------------------------------------------------------------------------------


def _signed(
    server: Server, grant: Grant, path: str, headers: dict[str, str], data: bytes = b""
) -> dict[str, str]:
    """Headers of a PUT of ``data`` signed with the grant, as botocore signs one."""
    host = urllib.parse.urlsplit(server.url).netloc
    request = AWSRequest(
        method="PUT", url=server.url + path, headers={"Host": host, **headers}, data=data
    )
    if headers.get("x-amz-content-sha256") == UNSIGNED_TRAILER:  # how botocore asks for it
        request.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
    credentials = Credentials(grant.access_key_id, grant.secret_access_key, grant.session_token)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return dict(request.prepare().headers.items())


def _rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@dataclass
class Sent:
    status: int
    code: str
    rss_growth: int


def _put_streaming(
    server: Server,
    grant: Grant,
    path: str,
    head: bytes,
    total: int,
    tail: bytes = b"",
    extra: dict[str, str] | None = None,
) -> Sent:
    """PUT an aws-chunked body: ``head``, then ``total`` bytes of data in 1 MiB blocks, then
    ``tail``, from a thread, while this one reads the answer; the growth of this process's
    memory (the server's too: it runs in this process) meanwhile."""
    headers = _signed(
        server,
        grant,
        path,
        {
            "x-amz-content-sha256": UNSIGNED_TRAILER,
            "Content-Encoding": "aws-chunked",
            "Content-Length": str(len(head) + total + len(tail)),
            **(extra or {}),
        },
    )
    parts = urllib.parse.urlsplit(server.url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 30)
    lines = [f"PUT {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    block = b"x" * MB

    def send() -> None:
        try:
            sock.sendall(head)
            for _ in range(total // MB):
                sock.sendall(block)
            sock.sendall(tail)
        except OSError:
            pass  # refused early: the server closed the connection

    baseline, peak, sampling = _rss(), [0], threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sender = threading.Thread(target=send)
    sampler.start()
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read().decode()
        sender.join(60)
    finally:
        sampling.set()
        sampler.join()
        sock.close()
    code = body.partition("<Code>")[2].partition("</Code>")[0]
    return Sent(response.status, code, peak[0] - baseline)


@pytest.mark.parametrize(
    ("head", "tail", "code"),
    [
        # A chunk declared far beyond the limit, its data following: refused at its header.
        (b"FFFFFFFFFF\r\n", b"", "EntityTooLarge"),
        # Data with no CRLF at all: no chunk header ever ends.
        (b"", b"", "IncompleteBody"),
        # A chunk within the limit whose data never ends: streamed to the spool, never held
        # in memory, refused when the body ends early.
        (f"{150 * MB:x}\r\n".encode(), b"", "IncompleteBody"),
    ],
    ids=["huge-declared-chunk", "no-crlf", "streamed-then-truncated"],
)
def test_malformed_aws_chunked_uploads_are_400_and_the_server_stays_small(
    gateway: GatewayFactory,
    bucket: str,
    settings: Settings,
    head: bytes,
    tail: bytes,
    code: str,
) -> None:
    server = gateway()
    grant = _grant(server, bucket, "a")
    sent = _put_streaming(server, grant, f"/s3/{bucket}/a/out.zip", head, 120 * MB, tail)
    assert (sent.status, sent.code) == (400, code)
    assert sent.rss_growth < 50 * MB, f"grew by {sent.rss_growth / MB:.0f} MiB"
    store = _store_client(settings)
    assert _code(lambda: store.head_object(Bucket=bucket, Key="a/out.zip")) == "404"  # unwritten


def test_a_non_hex_chunk_size_is_400(gateway: GatewayFactory, bucket: str) -> None:
    server = gateway()
    grant = _grant(server, bucket, "a")
    for head in (b"zz\r\n", b"0x10\r\n", b"-1\r\n"):
        sent = _put_streaming(server, grant, f"/s3/{bucket}/a/out.zip", head, 0, b"x\r\n0\r\n\r\n")
        assert (sent.status, sent.code) == (400, "IncompleteBody"), head


def test_a_valid_aws_chunked_upload_goes_through(
    gateway: GatewayFactory, bucket: str, settings: Settings
) -> None:
    server = gateway()
    grant = _grant(server, bucket, "a")
    head = f"{2 * MB:x};chunk-signature={'0' * 64}\r\n".encode()
    tail = b"\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    sent = _put_streaming(server, grant, f"/s3/{bucket}/a/out.zip", head, 2 * MB, tail)
    assert sent.status == 200, sent
    stored = _store_client(settings).get_object(Bucket=bucket, Key="a/out.zip")["Body"].read()
    assert stored == b"x" * 2 * MB


def test_an_upload_declared_over_the_artifact_limit_is_refused_unread(
    gateway: GatewayFactory, bucket: str
) -> None:
    server = gateway()
    grant = _grant(server, bucket, "a")
    s3 = _client(server, grant)
    assert (
        _code(
            lambda: s3.put_object(
                Bucket=bucket, Key="a/out.zip", Body=b"x", ContentLength=LIMIT + 1
            )
        )
        == "EntityTooLarge"
    )
    # An aws-chunked body by its decoded length, before a byte of it is read.
    declared = {"x-amz-decoded-content-length": str(LIMIT + 1)}
    sent = _put_streaming(server, grant, f"/s3/{bucket}/a/out.zip", b"", 0, extra=declared)
    assert (sent.status, sent.code) == (400, "EntityTooLarge")


def test_uploads_over_the_concurrency_cap_are_told_to_slow_down(
    gateway: GatewayFactory, bucket: str
) -> None:
    server = gateway(uploads=1)
    grant = _grant(server, bucket, "a")
    path = f"/s3/{bucket}/a/out.zip"
    headers = _signed(server, grant, path, {"Content-Length": "10"}, b"1234567890")
    parts = urllib.parse.urlsplit(server.url)
    first = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    first.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        first.putheader(k, v)
    first.endheaders(b"12345")  # half of it: the upload holds the one slot
    try:
        time.sleep(0.5)
        s3 = _client(server, grant)
        assert _code(lambda: s3.put_object(Bucket=bucket, Key="a/out.zip", Body=b"y")) == (
            "SlowDown"
        )
        first.send(b"67890")
        assert first.getresponse().status == 200
    finally:
        first.close()
    # The slot is free again.
    assert _code(lambda: s3.put_object(Bucket=bucket, Key="a/out.zip", Body=b"y")) == "allowed"


# --- The store down ----------------------------------------------------------------------------


def test_an_unreachable_store_is_503_service_unavailable(
    gateway: GatewayFactory, bucket: str
) -> None:
    server = gateway(endpoint_url=f"http://127.0.0.1:{devstack.free_port()}")
    grant = _grant(server, bucket, "a")
    s3 = _client(server, grant)
    try:
        s3.get_object(Bucket=bucket, Key="a/in.zip")
    except ClientError as exc:
        error = exc.response
    else:
        pytest.fail("a read through a gateway whose store is down succeeded")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Error"]["Code"] == "ServiceUnavailable"
    assert _code(lambda: s3.put_object(Bucket=bucket, Key="a/out.zip", Body=b"x")) == (
        "ServiceUnavailable"
    )
