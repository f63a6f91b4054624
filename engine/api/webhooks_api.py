"""PutWebhook, ListWebhooks, DeleteWebhook, and the url each webhook is served at.

A webhook's url is ``<base>/webhooks/v1/<id>``, the id unguessable and kept when the
webhook is updated. ``<base>`` is ``CONVEYOR_WEBHOOK_PUBLIC_URL`` when set (what GitHub
must reach, e.g. behind a proxy), else the base url of the API request that lists it.

A POST to the url is authenticated by the webhook's own scheme (:mod:`engine.webhooks.v1`),
its filters are evaluated against the JSON body, and a match starts the target pipeline
with trigger type ``Webhook`` and the webhook's ARN as trigger detail. Replies: 202
``{"pipelineExecutionId"}`` when it started, 200 ``{"matched": false, "reason"}`` when a
filter did not match (AWS ignores such requests too), 4xx ``{"error"}`` otherwise. The
webhook's ``lastTriggered``, ``errorCode`` and ``errorMessage`` record the outcome.

RegisterWebhookWithThirdParty and DeregisterWebhookWithThirdParty have nothing to talk to:
Conveyor does not hold GitHub credentials. They answer ``ValidationException`` saying to
add the url to the repository's webhooks by hand (``WebhookNotFoundException`` first, for a
webhook that does not exist).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from engine.api.tags import tag_webhook, webhook_tags
from engine.api.webhooks import TooLarge, read_limited
from engine.errors import (
    ConveyorError,
    InvalidNextTokenError,
    PipelineNotFoundError,
    ServiceUnavailableError,
    ValidationError,
    WebhookNotFoundError,
)
from engine.execution import TriggerType
from engine.ids import trigger_token
from engine.service import Service
from engine.store.webhooks import WebhookRecord
from engine.tags import tags_of
from engine.webhooks import WebhookConfig
from engine.webhooks.v1 import (
    GITHUB_HMAC,
    authenticate,
    check_definition,
    matches,
    redacted,
    target_action,
)

log = logging.getLogger("conveyor.webhooks")

Body = dict[str, Any]
URL_PATH = "/webhooks/v1/"
# The base url of the API request being served (set by the app per request).
API_BASE: ContextVar[str] = ContextVar("conveyor_api_base", default="http://127.0.0.1:8484/")


def webhook_url(url_id: str) -> str:
    return API_BASE.get().rstrip("/") + URL_PATH + url_id


def _item(svc: Service, rec: WebhookRecord) -> Body:
    item: Body = {
        "definition": redacted(rec.definition),
        "url": webhook_url(rec.url_id),
        "arn": svc.store.account.webhook_arn(rec.name),
        "tags": webhook_tags(svc, rec.name),
    }
    if rec.last_triggered is not None:
        item["lastTriggered"] = rec.last_triggered
    if rec.error_code is not None:
        item["errorCode"] = rec.error_code
        item["errorMessage"] = rec.error_message or ""
    return item


def put_webhook(svc: Service, body: Body) -> Body:
    definition = body["webhook"]
    tags = tags_of(body.get("tags") or [])
    decl = svc.get_pipeline(definition["targetPipeline"]).declaration  # PipelineNotFound
    check_definition(definition, decl)
    rec = svc.store.webhooks.put(dict(definition))
    tag_webhook(svc, rec.name, tags)
    return {"webhook": _item(svc, rec)}


def list_webhooks(svc: Service, body: Body) -> Body:
    records = svc.store.webhooks.all()
    token = body.get("NextToken")
    start = 0
    if token is not None:
        if not token.isdigit() or int(token) >= max(len(records), 1):
            raise InvalidNextTokenError(f"NextToken {token!r} is not valid")
        start = int(token)
    size = int(body.get("MaxResults") or 100)
    out: Body = {"webhooks": [_item(svc, r) for r in records[start : start + size]]}
    if start + size < len(records):
        out["NextToken"] = str(start + size)
    return out


def delete_webhook(svc: Service, body: Body) -> Body:
    # AWS answers success for a webhook that does not exist (no NotFound in the model).
    svc.store.webhooks.delete(body["name"])
    return {}


def _third_party(svc: Service, body: Body) -> Body:
    name = body.get("webhookName")
    if not name or svc.store.webhooks.get(name) is None:
        raise WebhookNotFoundError(f"The webhook '{name}' does not exist")
    raise ValidationError(
        "Conveyor does not register webhooks with GitHub (it holds no GitHub credentials): "
        "add the webhook's url from ListWebhooks to the repository's webhooks yourself, with "
        "content type application/json and, for GITHUB_HMAC, the webhook's secret token"
    )


WEBHOOK_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "PutWebhook": put_webhook,
    "ListWebhooks": list_webhooks,
    "DeleteWebhook": delete_webhook,
    "RegisterWebhookWithThirdParty": _third_party,
    "DeregisterWebhookWithThirdParty": _third_party,
}


# ---------------------------------------------------------------------------- deliveries


def deliver(
    svc: Service, url_id: str, headers: dict[str, str], body: bytes, peer: str | None
) -> tuple[int, Body]:
    """One POST to a webhook's url, whose body is already within the size limit."""
    rec = svc.store.webhooks.by_url(url_id)
    if rec is None:
        return 404, {"error": "no webhook is served at this url"}
    why = authenticate(rec.definition, headers, body, peer)
    if why is not None:
        log.warning("webhook %s: delivery refused: %s", rec.name, why)
        return 401, {"error": f"not authenticated: {why}"}
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return 400, {"error": "the body is not valid JSON"}
    definition = rec.definition
    pipeline = str(definition["targetPipeline"])
    try:
        decl = svc.get_pipeline(pipeline).declaration
    except PipelineNotFoundError as exc:
        return _failed(svc, rec, 404, exc)
    action = target_action(decl, str(definition["targetAction"]))
    if action is None:
        err = ValidationError(
            f"pipeline {pipeline} has no source action '{definition['targetAction']}' any more"
        )
        return _failed(svc, rec, 409, err)
    why = matches(definition, payload, action.configuration)
    if why is not None:
        return 200, {"matched": False, "reason": why}
    # A signed body seen again is a replay: its token returns the execution it started.
    token = None
    if definition["authentication"] == GITHUB_HMAC:
        digest = hashlib.sha256(body).hexdigest()
        created = svc.get_pipeline(pipeline).created
        token = trigger_token(created, f"webhook/v1/{rec.name}", digest)
    try:
        state = svc.start_execution(
            pipeline,
            trigger_type=TriggerType.WEBHOOK,
            trigger_detail=svc.store.account.webhook_arn(rec.name),
            client_request_token=token,
        )
    except ServiceUnavailableError:
        raise
    except ConveyorError as exc:
        return _failed(svc, rec, 409, exc)
    svc.store.webhooks.record_outcome(url_id, triggered=time.time(), error=None)
    log.info("webhook %s: started %s execution %s", rec.name, pipeline, state.execution_id)
    return 202, {"pipelineName": pipeline, "pipelineExecutionId": state.execution_id}


def _failed(svc: Service, rec: WebhookRecord, status: int, exc: ConveyorError) -> tuple[int, Body]:
    log.warning("webhook %s: nothing started: %s", rec.name, exc.message)
    svc.store.webhooks.record_outcome(rec.url_id, triggered=None, error=(exc.aws_code, exc.message))
    return status, {"error": exc.message}


def install(app: FastAPI, service: Service, config: WebhookConfig) -> None:
    @app.post(URL_PATH + "{url_id}")
    async def webhook_v1(url_id: str, request: Request) -> JSONResponse:
        media = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if media != "application/json":
            return JSONResponse(
                {"error": f"content type {media!r} is not supported; send application/json"},
                415,
            )
        try:
            body = await read_limited(request, config.max_body_bytes)
        except TooLarge:
            return JSONResponse(
                {"error": f"the body exceeds the limit of {config.max_body_bytes} bytes"},
                413,
                headers={"Connection": "close"},
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.client.host if request.client else None
        try:
            status, reply = await run_in_threadpool(deliver, service, url_id, headers, body, peer)
        except ServiceUnavailableError as exc:
            return JSONResponse({"error": exc.message}, 503)
        except Exception:
            log.exception("webhook delivery failed")
            return JSONResponse({"error": "the delivery failed; see the server log"}, 500)
        return JSONResponse(reply, status)
