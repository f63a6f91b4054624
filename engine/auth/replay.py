"""Replayed signatures: a SigV4 signature is accepted once.

A signature covers the request's timestamp, so it is only worth replaying while the clock
check still passes (:data:`~engine.auth.sigv4.MAX_SKEW_SECONDS` either side of now);
remembering each accepted signature for twice that long refuses every replay. Real clients
never collide: botocore signs a fresh ``amz-sdk-invocation-id`` into every call, and signs
each retry again (with ``amz-sdk-request: attempt=N``).
"""

from __future__ import annotations

import redis

from engine import keys
from engine.auth.sigv4 import MAX_SKEW_SECONDS, AuthError
from engine.store.connection import redis_errors

TTL_SECONDS = int(2 * MAX_SKEW_SECONDS)


class ReplayedSignatureError(AuthError):
    aws_code = "InvalidSignatureException"


class ReplayGuard:
    def __init__(self, r: redis.Redis, ttl_seconds: int = TTL_SECONDS) -> None:
        self.r = r
        self.ttl_seconds = ttl_seconds

    def claim(self, signature: str) -> None:
        """Remember ``signature``; ReplayedSignatureError if it was seen before."""
        with redis_errors("recording a request signature"):
            first = self.r.set(keys.seen_signature(signature), 1, nx=True, ex=self.ttl_seconds)
        if not first:
            raise ReplayedSignatureError(
                "Signature already used: this request was replayed. Sign every request "
                "anew (AWS SDKs and the AWS CLI do)"
            )
