"""Replayed requests: a signed request that changes something is accepted once.

A signature covers the request's timestamp, so a captured request is only worth replaying
while the clock check still passes (:data:`~engine.auth.sigv4.MAX_SKEW_SECONDS` either side
of now); remembering each accepted signature for twice that long refuses every replay.

The rule:

- What is remembered is the signature and nothing else. It covers everything the client
  signed (method, path, query, body, timestamp, every header in ``SignedHeaders``), and only
  that: a header the client did not sign, such as botocore's per-call
  ``amz-sdk-invocation-id`` and ``amz-sdk-request``, can be changed by whoever replays the
  request, so it must not tell two calls apart. (Where a client does sign them, they are
  in the signature already.)
- Only operations that change something are checked. botocore's timestamps have one-second
  resolution, so two identical calls in one second sign identically: for a read
  (:data:`READ_ONLY`: :data:`~engine.auth.principals.READ_OPERATIONS`, ``GET /events``,
  ``GET /audit``) that is a polling loop (boto3's waiters poll several times a second) and
  a replay of it changes nothing, so reads are not checked.
- A change is refused when its signature comes again more than :data:`SAME_CALL_SECONDS`
  after it was first seen. Within that, identical bytes are what a client makes by itself
  (botocore signs them identically only within one second of its clock): a job worker's
  poll loop, threads sharing one key, a retry after a timeout or a dropped connection (with
  the same ``clientRequestToken``, which answers it idempotently), a repeated delete; and
  they cannot be told from a replay, so they are served. A captured request is thus worth
  replaying for those two seconds only, not the five minutes of the clock check, and most
  changes repeated at once are idempotent or refused on their own (a second approval, a
  second result for a job, a name in use).
- Within that window the same bytes with the same unsigned per-call headers
  (``amz-sdk-invocation-id``, fresh for every call, and ``amz-sdk-request``, the attempt
  number of a retry) are the same attempt sent again: refused at once. A replayer can
  change those headers, which earns them the window and no more.
- A change that was answered with an error (4xx or 5xx) changed nothing, so its signature is
  released: the same signed bytes may come again (botocore retries a throttled or failed
  call at once, signed identically within the second; an invalid request repeated gets its
  error again, not a replay refusal). A signature is held from the moment it is checked,
  so two identical requests at once are still one call and one refusal.
- A JSON request names its operation in ``X-Amz-Target``: only when that header is signed
  (botocore signs it) is the request known to be a read; otherwise it is checked.

Against an attacker who can read traffic, TLS is the defence; this check, with the
five-minute window, bounds what a captured request can do: nothing more than it did.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import redis

from engine import keys
from engine.audit import AUDIT_READ
from engine.auth.principals import READ_OPERATIONS
from engine.auth.sigv4 import MAX_SKEW_SECONDS, AuthError
from engine.store.connection import redis_errors

log = logging.getLogger(__name__)

TTL_SECONDS = int(2 * MAX_SKEW_SECONDS)
# How long after its first sighting a signature may come again as the same client's own
# identical call (signed within one second; up to a second more on the way).
SAME_CALL_SECONDS = 2.0
EVENTS_READ = "GET /events"
READ_ONLY = READ_OPERATIONS | {EVENTS_READ, AUDIT_READ}


class ReplayedSignatureError(AuthError):
    aws_code = "InvalidSignatureException"


def replay_key(signature: str) -> str:
    """What identifies one signed call: its signature (see the module's rule)."""
    return hashlib.sha256(signature.encode("ascii", "surrogateescape")).hexdigest()


def changes_something(operation: str | None) -> bool:
    """Whether a replay of ``operation`` must be refused (an unknown one is treated as a
    change: nothing says it is not)."""
    return operation not in READ_ONLY


class ReplayGuard:
    def __init__(
        self,
        r: redis.Redis,
        ttl_seconds: int = TTL_SECONDS,
        same_call_seconds: float = SAME_CALL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r = r
        self.ttl_seconds = ttl_seconds
        self.same_call_seconds = same_call_seconds
        self.clock = clock

    def claim(self, signature: str, call_id: str | None = None) -> None:
        """Remember ``signature`` and when it was first seen; ReplayedSignatureError if it
        was seen more than ``same_call_seconds`` ago, or within that with the same
        ``call_id`` (the unsigned per-call id SDKs send, ``amz-sdk-invocation-id``): the
        client's own identical calls carry different ids, so the very same bytes again
        are a replay at any time. Whoever replays can change that id, which is why a
        different id earns only the short window, never more."""
        key = keys.seen_signature(replay_key(signature))
        now = self.clock()
        with redis_errors("recording a request signature"):
            first = self.r.set(key, repr(now), nx=True, ex=self.ttl_seconds)
            seen = None if first else self.r.get(key)
            repeated_call = False
            if call_id:
                calls = f"{key}:calls"
                pipe = self.r.pipeline(transaction=True)
                pipe.sadd(calls, call_id[:128])
                pipe.expire(calls, self.ttl_seconds)
                repeated_call = pipe.execute()[0] == 0
        if repeated_call and not first:
            raise ReplayedSignatureError(
                "Signature already used: this request was replayed (the same call, sent "
                "again). Sign every request anew (AWS SDKs and the AWS CLI do)"
            )
        if first or seen is None:  # new, or released (or expired) just now
            return
        try:
            since = now - float(seen)
        except ValueError:
            since = float("inf")
        if since > self.same_call_seconds:
            raise ReplayedSignatureError(
                "Signature already used: this request was replayed. Sign every request "
                "anew (AWS SDKs and the AWS CLI do)"
            )

    def release(self, signature: str) -> None:
        """Forget ``signature`` (its call changed nothing). Never raises: at worst a retry
        is refused as a replay."""
        try:
            key = keys.seen_signature(replay_key(signature))
            self.r.delete(key, f"{key}:calls")
        except redis.RedisError as exc:
            log.warning("could not release a request signature: %s", exc)
