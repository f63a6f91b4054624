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
``POST /webhooks/v1/<id>`` (PutWebhook's webhooks: :mod:`engine.api.webhooks_api`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.api.operations import OPERATIONS
from engine.api.paging import PageTokens
from engine.api.parsing import BodyLimits, ProtocolError, read_body
from engine.api.validation import check_input, known_operations
from engine.api.webhooks import install as install_webhooks
from engine.api.webhooks_api import API_BASE
from engine.api.webhooks_api import install as install_webhooks_v1
from engine.api.wire import CBOR, JSON, Wire
from engine.errors import ConveyorError, ServiceUnavailableError, StoreError
from engine.service import Service
from engine.webhooks import WebhookConfig

log = logging.getLogger(__name__)

MAX_EVENTS_PER_READ = 1000


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
    wire: Wire = JSON,
) -> Response:
    """Parse, check and run one operation (in a worker thread: the service blocks on Redis,
    and parsing a large body should not hold up the event loop). ``wire`` is the protocol
    the request came in: only decoding the body and encoding the reply depend on it."""
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


def create_app(
    service: Service, webhooks: WebhookConfig | None = None, limits: BodyLimits | None = None
) -> FastAPI:
    """The ASGI app for one :class:`Service`; serve it with uvicorn (``conveyor api``).

    ``webhooks`` configures the git webhook endpoints; without it they refuse every delivery.
    ``limits`` bound what one request body may ask of the parser.
    """
    body_limits = limits or BodyLimits()
    tokens = PageTokens(service.store.r)
    app = FastAPI(title="Conveyor", docs_url=None, redoc_url=None, openapi_url=None)
    webhooks = webhooks or WebhookConfig()
    install_webhooks(app, service, webhooks)
    install_webhooks_v1(app, service, webhooks)

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
            return reply
        API_BASE.set(webhooks.public_url or str(request.base_url))  # webhook urls' base
        return await run_in_threadpool(_call, service, tokens, operation, raw, body_limits, wire)

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

    return app
