"""The worker's consumer: it survives a restart of its Redis broker.

Celery 5.7 with kombu 5.7 stops a worker ("Unrecoverable error") when its Redis broker
restarts while the worker holds an unacknowledged (``acks_late``) task, in two places.

1. Tearing down the lost connection. After the connection error the consumer
   (``Consumer.on_connection_error_after_connected``) calls ``Connection.collect()`` and
   then ``Connection.close()``. ``collect()`` closes the default channel: the Redis
   channel's ``close()`` first reads the reply of its pending BRPOP, which raises
   ``ConnectionError`` before the channel is marked closed. That error is swallowed, and
   ``collect()`` detaches the transport (``transport.client = None``). ``close()`` then
   closes the same channel again; this time its QoS restores the unacked task, which needs
   a new Redis connection pool, built from ``transport.client.hostname``: an
   ``AttributeError``, which ``ignore_errors`` does not swallow. A channel without
   unacked messages restores nothing, which is why only the worker running a task died.
2. Acknowledging that task once it finishes. The message still points at the old,
   closed channel, whose transport is gone, so ``Message.ack_log_error`` raises
   ``AttributeError`` too, from the event loop, with the same result.

:class:`ReconnectingConsumer` fixes both, for the Redis transport:

- The channels of a lost connection do not restore their unacked messages
  (``do_restore = False``). They could not while Redis is down, and if only the connection
  broke they would hand a task that is still running here to another worker. Each such
  message stays in kombu's unacked index in Redis (written on delivery); the step below
  removes it once the task finishes, and if this worker dies first, the visibility
  timeout redelivers it (the engine's leases recover the action much sooner).
- An ack or reject of a message delivered on a lost channel is made on the live channel
  of the new connection instead. On Redis, an ack is ``ZREM``/``HDEL`` of the delivery tag
  in the unacked index that every channel of the broker shares, so any live channel can
  settle it. With no live connection yet, the message is left for the visibility timeout.
- Any other error while tearing down the discarded connection is logged, and the consumer
  goes on to reconnect, as it does after the connection error itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from kombu.transport import redis as kombu_redis

log = logging.getLogger("conveyor.consumer")


def _redis_channels(connection: Any) -> list[Any]:
    """Every Redis channel a kombu connection has opened (none for other transports)."""
    transport = getattr(connection, "_transport", None)
    found = [
        *(getattr(transport, "channels", None) or ()),
        *(getattr(transport, "_avail_channels", None) or ()),
        getattr(connection, "_default_channel", None),
    ]
    return [c for c in found if isinstance(c, kombu_redis.Channel)]


def _lost(channel: Any) -> bool:
    """A Redis channel whose connection is gone: it can no longer talk to the broker."""
    if not isinstance(channel, kombu_redis.Channel):
        return False
    transport = getattr(channel, "connection", None)
    return bool(channel.closed) or transport is None or transport.client is None


class ReconnectingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, but losing the broker connection never stops the worker."""

    connection: Any  # kombu.Connection | None, managed by the base class
    task_consumer: Any  # kombu.Consumer | None, set by the Tasks bootstep

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        for channel in _redis_channels(self.connection):
            channel.do_restore = False
        try:
            super().on_connection_error_after_connected(exc)
        except Exception:
            log.warning(
                "cleaning up the lost broker connection failed; reconnecting anyway",
                exc_info=True,
            )
            self.connection = None  # as the base class does: the next start connects anew

    def call_soon_ack(self, p: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Schedule an ack/reject (``Message.ack_log_error`` / ``reject_log_error``)."""
        return super().call_soon_ack(functools.partial(self._settle, p), *args, **kwargs)

    def _settle(self, settle: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        message = getattr(settle, "__self__", None)
        channel = getattr(message, "channel", None)
        if message is not None and _lost(channel):
            live = self._live_channel()
            if live is None:
                log.warning(
                    "task message %s was delivered on a lost broker connection and there is "
                    "no live one yet: leaving it to the broker's visibility timeout",
                    getattr(message, "delivery_tag", "?"),
                )
                return None
            log.info(
                "settling task message %s, delivered on a lost broker connection, on the new one",
                getattr(message, "delivery_tag", "?"),
            )
            message.channel = live
        return settle(*args, **kwargs)

    def _live_channel(self) -> Any:
        consumer = getattr(self, "task_consumer", None)
        channel = getattr(consumer, "channel", None)
        if self.connection is None or channel is None or _lost(channel):
            return None
        if not isinstance(channel, kombu_redis.Channel):
            return None
        return channel
