"""``POST /webhooks/github`` and ``POST /webhooks/gitlab``: git events that start pipelines.

The HTTP part only: the body is read with a ceiling (a declared ``Content-Length`` over the
limit is refused before a byte of the body is read; a streamed body is refused as soon as
it passes the limit, so an oversized delivery is never held whole), then the delivery is
handed to :class:`engine.webhooks.WebhookReceiver` in a worker thread (it blocks on Redis).
Replies are JSON: ``{"delivery", "started": [{"pipelineName", "pipelineExecutionId"}]}``
with 202, or ``{"error": ...}`` with the 4xx/5xx status saying why nothing was started.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from engine.errors import ConveyorError, ServiceUnavailableError
from engine.service import Service
from engine.webhooks import Host, Reply, WebhookConfig, WebhookReceiver

log = logging.getLogger("conveyor.webhooks")


class TooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or TooLarge as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(None)
    return bytes(body)


def _reply(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status)


def install(app: FastAPI, service: Service, config: WebhookConfig) -> None:
    receiver = WebhookReceiver(service, service.store.r, config)

    @app.post("/webhooks/{host}")
    async def webhook(host: str, request: Request) -> JSONResponse:
        try:
            kind = Host(host)
        except ValueError:
            known = ", ".join(f"/webhooks/{h.value}" for h in Host)
            return JSONResponse({"error": f"unknown webhook host {host!r}; use {known}"}, 404)
        media = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if media != "application/json":
            return JSONResponse(
                {"error": f"content type {media!r} is not supported; send application/json"},
                415,
            )
        try:
            body = await read_limited(request, config.max_body_bytes)
        except TooLarge as exc:
            size = f"{exc.size} bytes" if exc.size is not None else "more"
            return JSONResponse(
                {
                    "error": f"payload of {size} exceeds the limit of "
                    f"{config.max_body_bytes} bytes (CONVEYOR_WEBHOOK_MAX_BODY_BYTES)"
                },
                413,
                headers={"Connection": "close"},
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            reply = await run_in_threadpool(receiver.receive, kind, headers, body)
        except ServiceUnavailableError as exc:
            return JSONResponse({"error": exc.message}, 503)
        except ConveyorError as exc:
            log.error("webhook %s: %s", host, exc.message)
            return JSONResponse({"error": "the delivery failed; see the server log"}, 500)
        except Exception:
            log.exception("webhook %s failed", host)
            return JSONResponse({"error": "the delivery failed; see the server log"}, 500)
        return _reply(reply)
