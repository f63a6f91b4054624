"""Who is calling, at the HTTP edge: request ids, SigV4 on every request, anonymous mode.

:func:`authenticate` is the one entry point every route that serves CodePipeline calls (or
reads the event stream) uses: ``ctx = authenticate(request, raw_body, operation)``, in a
worker thread (it may read the principals file and writes the signature to Redis), then
``with acting_as(ctx): ...``. It raises :class:`~engine.auth.sigv4.AuthError` (``aws_code``,
``status``) for a request it refuses, after logging the refusal; the route answers in its
protocol's error shape. :class:`RequestIds` gives every response an ``x-amzn-RequestId``,
as AWS does, and the same id to the request's context.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.arns import SERVICE
from engine.auth.context import RequestContext
from engine.auth.keys import AuthSources, KeyConfigError, KeyRing
from engine.auth.principals import ANONYMOUS
from engine.auth.replay import ReplayGuard, changes_something
from engine.auth.sigv4 import (
    AuthError,
    Authorization,
    ReceivedRequest,
    UnrecognizedClientError,
    verify,
)

log = logging.getLogger(__name__)

# What SDKs send unsigned to tell calls and their retries apart: a fresh id per call, the
# attempt number per retry (see engine.auth.replay).
CALL_ID_HEADERS = ("amz-sdk-invocation-id", "amz-sdk-request")

REQUEST_ID_HEADER = "x-amzn-RequestId"
ANONYMOUS_WARNING = (
    "AUTHENTICATION IS OFF (CONVEYOR_AUTH_MODE=anonymous): anyone who reaches this API can "
    "create pipelines and run commands on the workers. For local development only."
)
NO_KEYS_MESSAGE = (
    "CONVEYOR_AUTH_MODE is sigv4 (the default) but no access keys are configured, so no "
    "request could be authenticated. Make the first admin key with\n"
    "  conveyor keys create --principal admin --role admin --file /etc/conveyor/principals.json\n"
    "and set CONVEYOR_AUTH_PRINCIPALS_FILE=/etc/conveyor/principals.json (or set "
    "CONVEYOR_AUTH_ADMIN_ACCESS_KEY_ID and CONVEYOR_AUTH_ADMIN_SECRET_ACCESS_KEY). "
    "For local development only, CONVEYOR_AUTH_MODE=anonymous turns authentication off."
)


PUBLIC_ANONYMOUS_MESSAGE = (
    "CONVEYOR_AUTH_MODE=anonymous turns authentication off, and the API would listen on "
    "{host!r}, which is not a loopback address: anyone who reaches it could create "
    "pipelines and run commands on the workers. Bind 127.0.0.1 (--host, CONVEYOR_API_HOST), "
    "configure keys (CONVEYOR_AUTH_MODE=sigv4), or, if this exposure is meant, set "
    "CONVEYOR_AUTH_ANONYMOUS_ALLOW_PUBLIC=true."
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_bind(auth_mode: str, host: str, *, allow_public: bool) -> None:
    """KeyConfigError if the API would serve anonymously on an address others can reach
    and ``allow_public`` (CONVEYOR_AUTH_ANONYMOUS_ALLOW_PUBLIC) does not say it is meant."""
    if auth_mode == "anonymous" and not allow_public and not is_loopback(host):
        raise KeyConfigError(PUBLIC_ANONYMOUS_MESSAGE.format(host=host))


class RequestIds:
    """ASGI middleware: a fresh request id (uuid4) per HTTP request, in
    ``request.state.request_id`` and in the ``x-amzn-RequestId`` header of the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def claimed_access_key(request: Request) -> str | None:
    """The access key id a request's Authorization header names, unverified (for the audit
    record of a refusal); None if it names none."""
    header = request.headers.get("authorization", "")
    _, found, rest = header.partition("Credential=")
    return rest.split("/", 1)[0][:128] or None if found else None


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or uuid.uuid4())


@dataclass
class Authenticator:
    """``sigv4``: verify the signature against the key ring, refuse replays of changes
    (:mod:`engine.auth.replay`). ``anonymous``: everyone is
    :data:`~engine.auth.principals.ANONYMOUS`."""

    mode: str
    keys: KeyRing | None = None
    replay: ReplayGuard | None = None
    region: str | None = None  # the credential scope's region; None: any
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def from_settings(cls, settings: Any, r: redis.Redis) -> Authenticator:
        """KeyConfigError if signing is on and no key is configured (or the file is bad)."""
        if settings.auth_mode == "anonymous":
            return cls.anonymous()
        return cls.sigv4(KeyRing(AuthSources.from_settings(settings)), r)

    @classmethod
    def sigv4(cls, keys: KeyRing, r: redis.Redis) -> Authenticator:
        if not keys.configured:
            raise KeyConfigError(NO_KEYS_MESSAGE)
        return cls("sigv4", keys, ReplayGuard(r))

    @classmethod
    def anonymous(cls) -> Authenticator:
        return cls("anonymous")

    @property
    def is_anonymous(self) -> bool:
        return self.mode == "anonymous"

    def __call__(self, request: Request, raw_body: bytes, operation: str | None) -> RequestContext:
        """``operation``: what the request asks for (None if it names nothing known), which
        decides whether a replay of it must be refused."""
        rid = request_id(request)
        ip = request.client.host if request.client else None
        if self.keys is None or self.replay is None:
            return RequestContext(ANONYMOUS, rid, None, ip)
        received = ReceivedRequest(
            method=request.method,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body=raw_body,
        )
        # What the client signed: the Host header it sent (a proxy must pass it on).
        host_url = f"{request.url.scheme}://{received.header('host') or ''}"
        try:
            auth = verify(
                received,
                self.keys.secrets(),
                now=self.clock(),
                host_url=host_url,
                service=SERVICE,  # the credential scope every request must name
                region=self.region,
            )
            if changes_something(operation) or not _operation_signed(received, auth):
                call = [received.header(h) or "" for h in CALL_ID_HEADERS]
                self.replay.claim(auth.signature, "|".join(call) if any(call) else None)
                request.state.replay_claim = auth.signature
            identity = self.keys.lookup(auth.access_key)
            if identity is None:  # removed from the file just now
                raise UnrecognizedClientError(
                    "The security token included in the request is invalid"
                )
        except AuthError as exc:
            log_refusal(rid, ip, None, request.url.path, exc)
            raise
        return RequestContext(identity.principal, rid, auth.access_key, ip)


def answered(request: Request, status: int) -> None:
    """Tell the replay guard how ``request`` was answered: a change refused with an error
    changed nothing, so its signature is released (:mod:`engine.auth.replay`)."""
    signature = getattr(request.state, "replay_claim", None)
    authenticator: Authenticator = request.app.state.authenticator
    if status >= 400 and signature is not None and authenticator.replay is not None:
        authenticator.replay.release(signature)


def _operation_signed(received: ReceivedRequest, auth: Authorization) -> bool:
    """Whether the request's operation is in what was signed: the method and path always
    are; a JSON request's ``X-Amz-Target`` only if listed in SignedHeaders (botocore lists
    it). Otherwise a captured read could be resent as a change."""
    return received.header("x-amz-target") is None or "x-amz-target" in auth.signed_headers


def authenticate(request: Request, raw_body: bytes, operation: str | None) -> RequestContext:
    """The caller of ``request`` (whose body is ``raw_body``, asking for ``operation``);
    AuthError if refused. Call it in a worker thread, from any route of the app
    :func:`engine.api.create_app` built."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator(request, raw_body, operation)


def log_refusal(rid: str, ip: str | None, principal: str | None, what: str, exc: AuthError) -> None:
    log.warning(
        "refused request %s from %s%s (%s): %s: %s",
        rid,
        ip or "?",
        f" as {principal}" if principal else "",
        what,
        exc.aws_code,
        exc.message,
    )
