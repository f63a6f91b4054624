"""Replayed requests: a signed request is accepted once.

A signature covers the request's timestamp, so a captured request is only worth replaying
while the clock check still passes (:data:`~engine.auth.sigv4.MAX_SKEW_SECONDS` either side
of now); remembering each accepted request for twice that long refuses every verbatim
replay.

What is remembered is the signature *with* the SDK's per-call headers
``amz-sdk-invocation-id`` (a fresh uuid per call) and ``amz-sdk-request`` (``attempt=N``).
botocore adds both after signing, and its timestamps have one-second resolution: two
identical calls in one second (a polling loop, a CreatePipeline repeated to see it refused)
carry the same signature and differ only there. Keying on the signature alone would refuse
ordinary clients; keying on these headers too keeps them apart. The limit, stated plainly:
where the client did not sign those headers (botocore, the AWS CLI), a replay that also
changes them is not recognised as one; where it signed them (SDKs that do, or any client
listing them in ``SignedHeaders``) it is. Against an attacker who can read traffic, TLS is
the defence; this check, with the five-minute window, bounds what a captured request can do.
"""

from __future__ import annotations

import hashlib

import redis

from engine import keys
from engine.auth.sigv4 import MAX_SKEW_SECONDS, AuthError
from engine.store.connection import redis_errors

TTL_SECONDS = int(2 * MAX_SKEW_SECONDS)
PER_CALL_HEADERS = ("amz-sdk-invocation-id", "amz-sdk-request")


class ReplayedSignatureError(AuthError):
    aws_code = "InvalidSignatureException"


def replay_key(signature: str, per_call: tuple[str | None, ...]) -> str:
    """What identifies one signed call: its signature and its SDK per-call headers."""
    material = "\n".join([signature, *(v or "" for v in per_call)])
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


class ReplayGuard:
    def __init__(self, r: redis.Redis, ttl_seconds: int = TTL_SECONDS) -> None:
        self.r = r
        self.ttl_seconds = ttl_seconds

    def claim(self, call: str) -> None:
        """Remember ``call`` (a :func:`replay_key`); ReplayedSignatureError if it was seen
        before."""
        with redis_errors("recording a request signature"):
            first = self.r.set(keys.seen_signature(call), 1, nx=True, ex=self.ttl_seconds)
        if not first:
            raise ReplayedSignatureError(
                "Signature already used: this request was replayed. Sign every request "
                "anew (AWS SDKs and the AWS CLI do)"
            )
