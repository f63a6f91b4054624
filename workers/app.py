"""The Celery application, built explicitly from Settings (no default app from globals)."""

from __future__ import annotations

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from engine import keys
from engine.settings import Settings
from providers.base import Category
from providers.registry import Registry
from workers.consumer import ReconnectingConsumer
from workers.transport import transport_for


def provider_queues(registry: Registry) -> dict[str, str]:
    """Queue name -> pool (the provider's category, lowercased) for worker-run providers."""
    out: dict[str, str] = {}
    for p in registry:
        if p.runs_on_worker:
            t = p.action_type
            out[keys.provider_queue(t.category.value, t.provider)] = t.category.value.lower()
    return out


def pool_queues(pool: str, registry: Registry) -> list[str]:
    """The queues a pool consumes: ``engine``, a category (``build``...), or ``all``."""
    if pool not in keys.POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(keys.POOLS)}")
    wanted = set(keys.POOLS[pool])
    queues = [keys.ENGINE_QUEUE] if "engine" in wanted else []
    queues += [q for q, cat in provider_queues(registry).items() if cat in wanted]
    if "build" in wanted:
        queues += [keys.COMMANDS_RULE_QUEUE, keys.CODEBUILD_RULE_QUEUE]
    if "invoke" in wanted:
        queues += [keys.LAMBDA_RULE_QUEUE, keys.JOB_WORKER_QUEUE]
    return queues


def make_app(settings: Settings, registry: Registry) -> Celery:
    app = Celery("conveyor", broker=settings.broker, set_as_current=False)
    all_queues = [
        keys.ENGINE_QUEUE,
        *provider_queues(registry),
        keys.COMMANDS_RULE_QUEUE,
        keys.CODEBUILD_RULE_QUEUE,
        keys.LAMBDA_RULE_QUEUE,
        keys.JOB_WORKER_QUEUE,
    ]
    app.conf.update(
        # kombu's Redis transport with one client object per channel (workers.transport).
        broker_transport=transport_for(settings.broker),
        task_queues=[Queue(q, routing_key=q) for q in all_queues],  # type: ignore[no-untyped-call]
        task_default_queue=keys.ENGINE_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # A task is acknowledged only once it finished; a worker that dies mid-task leaves it
        # for another. The store makes each attempt idempotent, so redelivery is safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Results live in the store; Celery's result backend is not used.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # Flower needs the workers' task events (received, started, succeeded...). Not the
        # "sent" event: it would cost every dispatch another message, and Flower lists a task
        # from the moment a worker receives it anyway.
        worker_send_task_events=True,
        task_send_sent_event=False,
        # Redelivery of unacked tasks comes only after this; leases recover much sooner, and an
        # action that runs for hours is never redelivered while its worker lives.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        # A worker waits for its broker as long as it takes (Redis restarted, failed over,
        # down for maintenance) instead of giving up after Celery's default 100 attempts.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # Celery's consumer, made to survive a Redis restart while it holds an unacked
        # (acks_late) task: see workers/consumer.py for the kombu bug it works around.
        worker_consumer=ReconnectingConsumer,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
    )
    return app


__all__ = ["Category", "make_app", "pool_queues", "provider_queues"]
