"""The HTTP API: CodePipeline's JSON 1.1 and smithy RPC v2 CBOR protocols, plus REST extras.

``POST /`` with ``X-Amz-Target: CodePipeline_20150709.<Operation>`` is what boto3 and the AWS
CLI send, so pointing them at Conveyor (``endpoint_url=``) is all a user changes.
``POST /service/CodePipeline_20150709/operation/<Operation>`` is the same operation in RPC v2
CBOR (:mod:`engine.api.wire`). Errors are HTTP 400 ``{"__type": <CodePipeline error name>,
"message": ...}``, mapped from the engine's error tree by type (``ConveyorError.aws_code``),
never by message text.

Authentication is out of scope for now: SigV4 ``Authorization`` headers are accepted and
ignored, so any access key works. Put the API behind a proxy that authenticates if it must
not be open.

REST extras: ``GET /health``, ``GET /events?after=<id>`` (the EventBridge-shaped event
stream, for dashboards and tests that want to watch without polling every execution), and
``POST /webhooks/github|gitlab`` (git events starting pipelines: :mod:`engine.api.webhooks`),
``POST /webhooks/v1/<id>`` (PutWebhook's webhooks: :mod:`engine.api.webhooks_api`), and
``/s3/...`` (the S3 gateway job workers use with their job's artifact credentials:
:mod:`engine.api.s3_gateway`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

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
from engine.auth.context import RequestContext, current
from engine.auth.principals import Role
from engine.errors import ConveyorError, ServiceUnavailableError, StoreError
from engine.service import Service
from engine.webhooks import WebhookConfig

log = logging.getLogger(__name__)

MAX_EVENTS_PER_READ = 1000
MAX_AUDIT_PER_READ = 1000


def _operation(name: str) -> str:
    if name not in OPERATIONS:
        why = "is not supported by Conveyor" if name in known_operations() else "does not exist"
        raise ProtocolError("UnknownOperationException", f"operation {name} {why}")
    return name


def _call(
    service: Service,
    tokens: PageTokens,
    operation: str,
    raw: bytes,
    limits: BodyLimits,
    audit: AuditLog,
    wire: Wire = JSON,
) -> Response:
    """One operation, answered (:func:`_answer`) and then audited (in a worker thread: the
    service blocks on Redis, and parsing a large body should not hold up the event loop).
    ``wire`` is the protocol the request came in: only decoding the body and encoding the
    reply depend on it."""
    reply = _answer(service, tokens, operation, raw, limits, wire)
    # ---- audit: one record of what the request did (engine.audit; never raises) ----
    audit.record_call(
        operation,
        lambda: _body_or_none(raw, limits, wire),
        _outcome(reply, wire),
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
    wire: Wire,
) -> Response:
    """Parse, check and run one operation."""
    _error = wire.error
    try:
        body = wire.parse(raw, limits)
    except ProtocolError as exc:
        return _error(exc.code, exc.message, exc.status)
    problems = check_input(operation, body)
    if problems:
        return _error("ValidationException", problems.message())
    try:
        body = tokens.open(operation, body)
        return wire.reply(operation, tokens.seal(operation, OPERATIONS[operation](service, body)))
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


def request_context() -> RequestContext:
    """The identity a REST request (``GET /audit``) is served for.

    STUB for A1 / the merger: replace with the SigV4 ``authenticate`` dependency. Until
    then it is whatever :func:`engine.auth.context.current` says (tests set it)."""
    return current()


def create_app(
    service: Service,
    webhooks: WebhookConfig | None = None,
    limits: BodyLimits | None = None,
    audit: AuditLog | None = None,
    s3_gateway: Gateway | None = None,
) -> FastAPI:
    """The ASGI app for one :class:`Service`; serve it with uvicorn (``conveyor api``).

    ``webhooks`` configures the git webhook endpoints; without it they refuse every delivery.
    ``limits`` bound what one request body may ask of the parser. ``audit`` is where
    requests are recorded (default: the Redis stream only, reads not recorded).
    """
    audit_log = audit or AuditLog(service.store.r, service.store.account)
    body_limits = limits or BodyLimits()
    tokens = PageTokens(service.store.r)
    app = FastAPI(title="Conveyor", docs_url=None, redoc_url=None, openapi_url=None)
    webhooks = webhooks or WebhookConfig()
    install_webhooks(app, service, webhooks)
    install_webhooks_v1(app, service, webhooks)
    if s3_gateway is not None:  # job workers' artifact credentials (engine.api.s3_gateway)
        install_s3_gateway(app, s3_gateway)

    async def serve(request: Request, wire: Wire, name: Callable[[], str]) -> Response:
        """One API request in either protocol: ``name`` reads the operation from it."""
        try:
            operation = _operation(name())
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
                source_ip=request.client.host if request.client else None,
            )
            return reply
        API_BASE.set(webhooks.public_url or str(request.base_url))  # webhook urls' base
        return await run_in_threadpool(
            _call, service, tokens, operation, raw, body_limits, audit_log, wire
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
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/events")
    def events(
        after: str = "0", count: int = Query(default=100, ge=1, le=MAX_EVENTS_PER_READ)
    ) -> JSONResponse:
        """Events after stream id ``after``; pass the last ``id`` back to read on."""
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
        ctx: Annotated[RequestContext, Depends(request_context)],
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
