"""One webhook delivery, from raw headers and body to the executions it started.

The order is the point: nothing is read from the body before a secret has verified it;
nothing is recorded before the body has parsed into an event; and nothing is started before
the delivery id has been claimed in Redis (``SET NX`` with a TTL, so a replay within the
retention window is refused, atomically, even when two copies arrive at once). Every refusal
changes nothing.

Exactly once, even across a crash: each execution a delivery starts carries a
``clientRequestToken`` derived from the delivery id and the pipeline, and a start with a
token already used returns the execution it started. If starting fails unexpectedly the
claim is released so the sender's retry (same delivery id) is accepted, and the executions
that did start are found again by their tokens rather than started twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import redis

from engine import keys
from engine.errors import ConveyorError, ServiceUnavailableError
from engine.execution import TriggerType
from engine.git_triggers import GitEvent, PlannedStart, plan_starts, repository_of
from engine.ids import trigger_token
from engine.settings import Settings
from engine.store.connection import redis_errors
from engine.store.definitions import PipelineRecord
from engine.webhooks import payloads
from engine.webhooks.signatures import (
    DEFAULT,
    Unauthorized,
    WebhookSecrets,
    verify_github,
    verify_gitlab,
)

log = logging.getLogger("conveyor.webhooks")

DELIVERY_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class Host(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"


@dataclass(frozen=True)
class WebhookConfig:
    secrets: WebhookSecrets = field(default_factory=WebhookSecrets)
    max_body_bytes: int = 5 * 1024 * 1024
    delivery_ttl_seconds: int = 3 * 24 * 3600
    signature_tolerance_seconds: float = 300.0
    # The base of PutWebhook's webhook urls, as senders reach it; None: the API request's.
    public_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """Raises WebhookConfigError for a secrets file that cannot be used."""
        return cls(
            secrets=WebhookSecrets.load(
                settings.webhook_secret,
                settings.webhook_secret_file,
                settings.webhook_secrets_file,
            ),
            max_body_bytes=settings.webhook_max_body_bytes,
            delivery_ttl_seconds=settings.webhook_delivery_ttl_seconds,
            signature_tolerance_seconds=settings.webhook_signature_tolerance_seconds,
            public_url=settings.webhook_public_url,
        )


@dataclass(frozen=True)
class Reply:
    """What the endpoint answers: a status and a JSON body (never holding a secret)."""

    status: int
    body: dict[str, Any]


def refusal(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


class StartsExecutions(Protocol):
    """The part of :class:`engine.service.Service` a webhook uses."""

    def list_pipelines(self) -> Sequence[PipelineRecord]: ...

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        trigger_type: TriggerType = ...,
        trigger_detail: str | None = ...,
        source_revisions: list[dict[str, str]] | None = ...,
        client_request_token: str | None = ...,
    ) -> Any: ...


class WebhookReceiver:
    def __init__(
        self,
        service: StartsExecutions,
        client: redis.Redis,
        config: WebhookConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.r = client
        self.config = config
        self.clock = clock

    def receive(self, host: Host, headers: Mapping[str, str], body: bytes) -> Reply:
        """Handle one delivery whose body is already within the size limit."""
        secrets = self.config.secrets
        if not secrets.configured:
            return refusal(
                403,
                "webhooks are not configured on this server: set CONVEYOR_WEBHOOK_SECRET, "
                "CONVEYOR_WEBHOOK_SECRET_FILE or CONVEYOR_WEBHOOK_SECRETS_FILE",
            )
        try:
            verified = self._verify(host, headers, body)
        except Unauthorized as exc:
            return refusal(exc.status, exc.message)

        event_name, delivery = self._identify(host, headers)
        if event_name is None:
            return refusal(400, f"missing {_EVENT_HEADER[host]} header")
        if delivery is None:
            return refusal(400, f"missing {_DELIVERY_HEADER[host]} header")
        if not DELIVERY_ID_RE.match(delivery):
            return refusal(400, f"{_DELIVERY_HEADER[host]} must be 1-128 of A-Za-z0-9._:-")

        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return refusal(400, f"body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            return refusal(400, "body must be a JSON object")
        try:
            outcome = (payloads.github if host is Host.GITHUB else payloads.gitlab)(
                event_name, data
            )
        except payloads.BadPayload as exc:
            return refusal(400, f"{event_name} payload: {exc}")
        if isinstance(outcome, payloads.Ignored):
            return Reply(202, {"delivery": delivery, "started": [], "ignored": outcome.reason})

        # A replay is known by what was signed, the body: the delivery id header is not
        # covered by GitHub's signature, so a captured push resent under a fresh id must
        # still be refused (it would roll a deployment back to an old commit at will).
        replay = hashlib.sha256(body).hexdigest()
        if not self._claim(host, replay):
            return refusal(
                409,
                f"this delivery (id {delivery}) was already received: the same signed body "
                f"arrived within the last {self.config.delivery_ttl_seconds} seconds; "
                "nothing was started",
            )
        try:
            started = self._start(host, delivery, replay, outcome, verified)
        except Exception:
            self._release(host, replay)
            raise
        return Reply(202, {"delivery": delivery, "started": started})

    # ------------------------------------------------------------------ steps

    def _verify(self, host: Host, headers: Mapping[str, str], body: bytes) -> set[str]:
        if host is Host.GITHUB:
            return verify_github(headers, body, self.config.secrets)
        return verify_gitlab(
            headers,
            body,
            self.config.secrets,
            now=self.clock(),
            tolerance_seconds=self.config.signature_tolerance_seconds,
        )

    @staticmethod
    def _identify(host: Host, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        event = headers.get(_EVENT_HEADER[host].lower())
        delivery = headers.get(_DELIVERY_HEADER[host].lower())
        if host is Host.GITLAB and not delivery:
            delivery = headers.get("webhook-id") or headers.get("idempotency-key")
        return event or None, delivery or None

    def _claim(self, host: Host, replay: str) -> bool:
        with redis_errors("recording a webhook delivery"):
            claimed = self.r.set(
                keys.webhook_delivery(host.value, replay),
                str(self.clock()),
                nx=True,
                ex=self.config.delivery_ttl_seconds,
            )
        return bool(claimed)

    def _release(self, host: Host, replay: str) -> None:
        try:
            with redis_errors("releasing a webhook delivery"):
                self.r.delete(keys.webhook_delivery(host.value, replay))
        except ConveyorError:
            log.exception("delivery %s: could not release its claim", replay)

    def _start(
        self, host: Host, delivery: str, replay: str, event: GitEvent, verified: set[str]
    ) -> list[dict[str, str]]:
        records = {r.declaration.name: r for r in self.service.list_pipelines()}
        plans = [
            p
            for p in plan_starts(event, (r.declaration for r in records.values()))
            if self._signed_for(records[p.pipeline], p, event, verified)
        ]
        started: list[dict[str, str]] = []
        for plan in plans:
            record = records[plan.pipeline]
            try:
                execution = self.service.start_execution(
                    plan.pipeline,
                    trigger_type=TriggerType.WEBHOOK_V2,
                    trigger_detail=plan.trigger_detail,
                    source_revisions=[plan.source_revision],
                    client_request_token=trigger_token(
                        record.created, f"webhook/{host.value}/{replay}", event.commit_id
                    ),
                )
            except ServiceUnavailableError:
                raise
            except ConveyorError as exc:
                # One pipeline refusing (deleted meanwhile, at its limit) must not cost the
                # others their start; the reply says which and why.
                log.warning("delivery %s: %s not started: %s", delivery, plan.pipeline, exc)
                started.append({"pipelineName": plan.pipeline, "error": exc.message})
                continue
            log.info(
                "delivery %s: started %s execution %s at %s",
                delivery,
                plan.pipeline,
                execution.execution_id,
                event.commit_id,
            )
            started.append(
                {"pipelineName": plan.pipeline, "pipelineExecutionId": execution.execution_id}
            )
        return started

    def _signed_for(
        self, record: PipelineRecord, plan: PlannedStart, event: GitEvent, verified: set[str]
    ) -> bool:
        """Whether every secret that guards the plan signed the delivery: the one of the
        event's repository (``acme/app``) and the one of the source action's (a CodeCommit
        ``app`` matches it too), so a repository's own secret is never bypassed through
        the default one."""
        action = next(
            a for a in record.declaration.stages[0].actions if a.name == plan.source_action
        )
        connection = action.configuration.get("ConnectionArn")
        secrets = self.config.secrets
        guards = {
            secrets.guarding(event.repository, connection),
            secrets.guarding(repository_of(action), connection),
        }
        if len(guards) > 1:
            guards.discard(DEFAULT)  # a repository's own secret outranks the default
        return None not in guards and guards <= verified


_EVENT_HEADER = {Host.GITHUB: "X-GitHub-Event", Host.GITLAB: "X-Gitlab-Event"}
_DELIVERY_HEADER = {Host.GITHUB: "X-GitHub-Delivery", Host.GITLAB: "X-Gitlab-Event-UUID"}
