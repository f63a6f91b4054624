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
  a replay of it changes nothing, so reads are not checked. A change repeated identically
  within the same second is refused as a replay; clients that mean it call again a second
  later.
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

import redis

from engine import keys
from engine.audit import AUDIT_READ
from engine.auth.principals import READ_OPERATIONS
from engine.auth.sigv4 import MAX_SKEW_SECONDS, AuthError
from engine.store.connection import redis_errors

log = logging.getLogger(__name__)

TTL_SECONDS = int(2 * MAX_SKEW_SECONDS)
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
    def __init__(self, r: redis.Redis, ttl_seconds: int = TTL_SECONDS) -> None:
        self.r = r
        self.ttl_seconds = ttl_seconds

    def claim(self, signature: str) -> None:
        """Remember ``signature``; ReplayedSignatureError if it was seen before."""
        with redis_errors("recording a request signature"):
            first = self.r.set(
                keys.seen_signature(replay_key(signature)), 1, nx=True, ex=self.ttl_seconds
            )
        if not first:
            raise ReplayedSignatureError(
                "Signature already used: this request was replayed. Sign every request "
                "anew (AWS SDKs and the AWS CLI do); an identical change repeated within "
                "the same second signs the same, so repeat it a second later"
            )

    def release(self, signature: str) -> None:
        """Forget ``signature`` (its call changed nothing). Never raises: at worst a retry
        is refused as a replay."""
        try:
            self.r.delete(keys.seen_signature(replay_key(signature)))
        except redis.RedisError as exc:
            log.warning("could not release a request signature: %s", exc)
