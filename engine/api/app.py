"""The HTTP API: CodePipeline's JSON 1.1 and smithy RPC v2 CBOR protocols, plus REST extras.

``POST /`` with ``X-Amz-Target: CodePipeline_20150709.<Operation>`` is what boto3 and the AWS
CLI send, so pointing them at Conveyor (``endpoint_url=``) is all a user changes.
``POST /service/CodePipeline_20150709/operation/<Operation>`` is the same operation in RPC v2
CBOR (:mod:`engine.api.wire`). Errors are HTTP 400 ``{"__type": <CodePipeline error name>,
"message": ...}``, mapped from the engine's error tree by type (``ConveyorError.aws_code``),
never by message text.

Every request is authenticated with AWS Signature Version 4 (:mod:`engine.api.auth`,
:mod:`engine.auth`): the keys are the principals file's and the settings', a replayed
signature is refused, and the principal's roles must allow the operation (else
``AccessDeniedException`` in AWS's words). ``CONVEYOR_AUTH_MODE=anonymous`` turns this off
for local development, loudly. Every response carries an ``x-amzn-RequestId``. The webhook
endpoints authenticate by their own scheme (HMAC signatures); ``/health`` is open.

REST extras: ``GET /health``, ``GET /events?after=<id>`` (the EventBridge-shaped event
stream, for dashboards and tests that want to watch without polling every execution), and
``POST /webhooks/github|gitlab`` (git events starting pipelines: :mod:`engine.api.webhooks`),
``POST /webhooks/v1/<id>`` (PutWebhook's webhooks: :mod:`engine.api.webhooks_api`), and
``/s3/...`` (the S3 gateway job workers use with their job's artifact credentials:
:mod:`engine.api.s3_gateway`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import redis
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.api.auth import (
    ANONYMOUS_WARNING,
    Authenticator,
    RequestIds,
    answered,
    authenticate,
    claimed_access_key,
    log_refusal,
    request_id,
)
from engine.api.operations import OPERATIONS
from engine.api.paging import PageTokens
from engine.api.parsing import BodyLimits, ProtocolError, read_body
from engine.api.s3_gateway import Gateway
from engine.api.s3_gateway import install as install_s3_gateway
from engine.api.validation import check_input, known_operations
from engine.api.webhooks import install as install_webhooks
from engine.api.webhooks_api import API_BASE
from engine.api.webhooks_api import install as install_webhooks_v1
from engine.api.wire import CBOR, JSON, Wire
from engine.audit import AUDIT_READ, AuditLog, Outcome
from engine.auth.access import authorize
from engine.auth.context import RequestContext, acting_as
from engine.auth.principals import Role
from engine.auth.replay import EVENTS_READ
from engine.auth.sigv4 import AuthError
from engine.errors import ConveyorError, ServiceUnavailableError, StoreError
from engine.service import Service
from engine.settings import get_settings
from engine.webhooks import WebhookConfig

log = logging.getLogger(__name__)

MAX_EVENTS_PER_READ = 1000
MAX_AUDIT_PER_READ = 1000
# Reading the event stream shows every pipeline's state: it needs what GetPipelineState does.
EVENTS_OPERATION = "GetPipelineState"


def _operation(name: str) -> str:
    """``name`` if botocore's model declares it (whether Conveyor serves it is decided after
    authorization: a stranger learns nothing from the answer)."""
    if name not in OPERATIONS and name not in known_operations():
        raise ProtocolError("UnknownOperationException", f"operation {name} does not exist")
    return name


def _refusal(
    ctx: RequestContext,
    operation: str,
    body: dict[str, Any] | None,
    service: Service,
    wire: Wire = JSON,
) -> Response | None:
    """The AccessDenied answer (logged) if ``ctx``'s roles do not allow ``operation``."""
    try:
        authorize(ctx.principal, operation, body, service.store.account)
    except AuthError as exc:
        log_refusal(ctx.request_id, ctx.source_ip, ctx.principal.name, operation, exc)
        return wire.error(exc.aws_code, exc.message, exc.status)
    return None


def _caller(
    request: Request, raw: bytes, operation: str | None, wire: Wire = JSON
) -> RequestContext | Response:
    """Who sent ``request`` asking for ``operation``, or the answer refusing it (403, or
    503 without Redis)."""
    try:
        return authenticate(request, raw, operation)
    except AuthError as exc:
        return wire.error(exc.aws_code, exc.message, exc.status)
    except ServiceUnavailableError as exc:
        return wire.error(exc.aws_code, exc.message, 503)


def _call(
    service: Service,
    tokens: PageTokens,
    operation: str,
    raw: bytes,
    limits: BodyLimits,
    ctx: RequestContext,
    audit: AuditLog,
    wire: Wire = JSON,
) -> Response:
    """One operation, answered (:func:`_answer`) and then audited (in a worker thread: the
    service blocks on Redis, and parsing a large body should not hold up the event loop).
    ``wire`` is the protocol the request came in: only decoding the body and encoding the
    reply depend on it."""
    reply = _answer(service, tokens, operation, raw, limits, ctx, wire)
    # ---- audit: one record of what the request did (engine.audit; never raises) ----
    audit.record_call(
        operation,
        lambda: _body_or_none(raw, limits, wire),
        _outcome(reply, wire),
        ctx,
    )
    return reply


def _body_or_none(raw: bytes, limits: BodyLimits, wire: Wire) -> dict[str, Any] | None:
    try:
        return wire.parse(raw, limits)
    except ProtocolError:
        return None


def _outcome(reply: Response, wire: Wire) -> Outcome:
    if reply.status_code < 400 or wire is JSON:
        return Outcome.of_reply(reply.status_code, bytes(reply.body))
    code, message = wire.error_fields(bytes(reply.body))
    return Outcome(reply.status_code, code, message)


def _answer(
    service: Service,
    tokens: PageTokens,
    operation: str,
    raw: bytes,
    limits: BodyLimits,
    ctx: RequestContext,
    wire: Wire,
) -> Response:
    """Authorize, parse, check and run one operation as ``ctx``."""
    _error = wire.error
    body: dict[str, Any] | None = None
    unparsed: ProtocolError | None = None
    try:
        body = wire.parse(raw, limits)
    except ProtocolError as exc:
        unparsed = exc  # answered after authorization: a stranger learns nothing from it
    denied = _refusal(ctx, operation, body, service, wire)
    if denied is not None:
        return denied
    if operation not in OPERATIONS:
        return _error(
            "UnknownOperationException", f"operation {operation} is not supported by Conveyor"
        )
    if body is None:
        assert unparsed is not None
        return _error(unparsed.code, unparsed.message, unparsed.status)
    problems = check_input(operation, body)
    if problems:
        return _error("ValidationException", problems.message())
    try:
        body = tokens.open(operation, body)
        with acting_as(ctx):
            result = OPERATIONS[operation](service, body)
        return wire.reply(operation, tokens.seal(operation, result))
    except ServiceUnavailableError as exc:
        return _error(exc.aws_code, exc.message, 503)
    except StoreError as exc:
        log.error("%s: %s", operation, exc.message)
        return _error(exc.aws_code, f"{operation} failed; see the server log", 500)
    except ConveyorError as exc:
        return _error(exc.aws_code, exc.message)
    except Exception:
        log.exception("%s failed", operation)
        return _error(
            "InternalFailure", f"{operation} failed unexpectedly; see the server log", 500
        )


def create_app(
    service: Service,
    webhooks: WebhookConfig | None = None,
    limits: BodyLimits | None = None,
    audit: AuditLog | None = None,
    s3_gateway: Gateway | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The ASGI app for one :class:`Service`; serve it with uvicorn (``conveyor api``).

    ``webhooks`` configures the git webhook endpoints; without it they refuse every delivery.
    ``limits`` bound what one request body may ask of the parser. ``audit`` is where
    requests are recorded (default: the Redis stream only, reads not recorded).
    ``authenticator`` decides who calls (default: from the settings; KeyConfigError when
    signing is on and no key is configured, so an API nobody can call, or everybody can by
    accident, never starts). ``s3_gateway``: serve job workers' artifact credentials.
    """
    audit_log = audit or AuditLog(service.store.r, service.store.account)
    body_limits = limits or BodyLimits()
    tokens = PageTokens(service.store.r)
    auth = authenticator or Authenticator.from_settings(get_settings(), service.store.r)
    auth = dataclasses.replace(auth, region=service.store.account.region)  # scope's region
    if auth.is_anonymous:
        log.warning(ANONYMOUS_WARNING)
    app = FastAPI(title="Conveyor", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.authenticator = auth
    app.add_middleware(RequestIds)
    webhooks = webhooks or WebhookConfig()
    install_webhooks(app, service, webhooks)
    install_webhooks_v1(app, service, webhooks)
    if s3_gateway is not None:  # job workers' artifact credentials (engine.api.s3_gateway)
        install_s3_gateway(app, s3_gateway)

    async def serve(request: Request, wire: Wire, name: Callable[[], str]) -> Response:
        """One API request in either protocol: ``name`` reads the operation from it. The
        body is size-checked, then the caller authenticated (in a worker thread), and only
        then is a malformed or unknown request answered: strangers learn nothing."""
        operation: str | None = None
        unknown: ProtocolError | None = None
        try:
            operation = _operation(name())
        except ProtocolError as exc:
            unknown = exc
        try:
            raw = await read_body(
                request.headers.get("content-length"), request.stream(), body_limits
            )
        except ProtocolError as exc:
            reply = wire.error(exc.code, exc.message, exc.status)
            if exc.status == 413:
                reply.headers["Connection"] = "close"  # the rest of the body is not read
            target = request.headers.get("x-amz-target", "") if wire is JSON else request.url.path
            audit_log.record_refusal(
                operation=target[:100] or None,
                outcome=Outcome(exc.status, exc.code, exc.message),
                request_id=request_id(request),
                source_ip=request.client.host if request.client else None,
            )
            return reply
        API_BASE.set(webhooks.public_url or str(request.base_url))  # webhook urls' base
        return await run_in_threadpool(_authenticated, request, wire, operation, unknown, raw)

    def _authenticated(
        request: Request,
        wire: Wire,
        operation: str | None,
        unknown: ProtocolError | None,
        raw: bytes,
    ) -> Response:
        ctx = _caller(request, raw, operation, wire)
        if isinstance(ctx, Response):
            _audit_refusal(request, operation, _outcome(ctx, wire))
            return ctx
        if operation is None:
            assert unknown is not None
            reply = wire.error(unknown.code, unknown.message, unknown.status)
            target = request.headers.get("x-amz-target") or request.url.path
            audit_log.record_call(target[:100], lambda: None, _outcome(reply, wire), ctx)
        else:
            reply = _call(service, tokens, operation, raw, body_limits, ctx, audit_log, wire)
        answered(request, reply.status_code)  # an error changed nothing: not a replay
        return reply

    def _audit_refusal(request: Request, operation: str | None, outcome: Outcome) -> None:
        """Record a request refused before anyone was authenticated (never raises)."""
        audit_log.record_refusal(
            operation=operation or request.headers.get("x-amz-target", "")[:100] or None,
            outcome=outcome,
            request_id=request_id(request),
            access_key=claimed_access_key(request),
            source_ip=request.client.host if request.client else None,
        )

    @app.post("/")
    async def codepipeline(request: Request) -> Response:
        return await serve(request, JSON, lambda: JSON.operation(request.headers))

    @app.post("/service/{service_name}/operation/{operation}")
    async def codepipeline_cbor(request: Request, service_name: str, operation: str) -> Response:
        return await serve(
            request, CBOR, lambda: CBOR.operation(request.headers, service_name, operation)
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        if auth.is_anonymous:
            return {"ok": True, "auth": "anonymous", "warning": ANONYMOUS_WARNING}
        return {"ok": True}

    @app.get("/events")
    def events(
        request: Request,
        after: str = "0",
        count: int = Query(default=100, ge=1, le=MAX_EVENTS_PER_READ),
    ) -> Response:
        """Events after stream id ``after``; pass the last ``id`` back to read on. Signed
        like any API call (a GET with an empty body), by a principal who may read."""
        ctx = _caller(request, b"", EVENTS_READ)
        if isinstance(ctx, Response):
            return ctx
        denied = _refusal(ctx, EVENTS_OPERATION, None, service)
        if denied is not None:
            return denied
        try:
            rows = service.store.events.read(after, count)
        except ServiceUnavailableError as exc:
            return JSONResponse({"error": exc.message}, status_code=503)
        except StoreError as exc:
            return JSONResponse({"error": f"bad 'after' id: {exc.message}"}, status_code=400)
        return JSONResponse(
            {
                "events": [{"id": rid, "event": event} for rid, event in rows],
                "last": rows[-1][0] if rows else after,
            }
        )

    @app.get("/audit")
    def audit_records(
        request: Request,
        after: str | None = Query(default=None, max_length=40),
        before: str | None = Query(default=None, max_length=40),
        limit: int = Query(default=100, ge=1, le=MAX_AUDIT_PER_READ),
        pipeline: str | None = Query(default=None, max_length=100),
        principal: str | None = Query(default=None, max_length=64),
        operation: str | None = Query(default=None, max_length=100),
    ) -> Response:
        """Audit records, admins only: after stream id ``after`` oldest first, else before
        ``before`` (or from the newest) newest first; pass ``cursor`` back to read on."""
        query = {"after": after, "before": before, "pipeline": pipeline}
        query |= {"principal": principal, "operation": operation}
        query = {k: v for k, v in query.items() if v is not None}
        ctx = _caller(request, b"", AUDIT_READ)
        if isinstance(ctx, Response):
            _audit_refusal(request, AUDIT_READ, _outcome(ctx, JSON))
            return ctx
        if Role.ADMIN not in ctx.principal.roles:
            message = f"principal '{ctx.principal.name}' may not read the audit log (admin only)"
            audit_log.record_call(
                AUDIT_READ, lambda: query, Outcome(403, "AccessDeniedException", message), ctx
            )
            return JSON.error("AccessDeniedException", message, 403)
        try:
            page = audit_log.read(limit=limit, **query)
        except redis.ResponseError as exc:
            return JSON.error("ValidationException", f"bad stream id: {exc}")
        except redis.RedisError as exc:
            return JSON.error("ServiceUnavailableException", f"Redis: {exc}", 503)
        audit_log.record_call(AUDIT_READ, lambda: query, Outcome(200), ctx)
        return JSON.reply(
            AUDIT_READ, {"records": page.records, "cursor": page.cursor, "more": page.more}
        )

    return app
