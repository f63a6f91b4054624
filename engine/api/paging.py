"""Opaque, tamper-checked ``nextToken`` values, sealed and opened at the API edge.

Handlers page with plain tokens (an offset, say); the edge seals each ``nextToken`` they
return with an HMAC bound to the operation, and opens each one a client sends back. A token
that was not sealed here for this operation (``"-5"``, a forged or edited one, one from
another operation) is ``InvalidNextTokenException`` before any handler sees it, so no
handler has to trust a client's token.

The key is per installation: 32 random bytes kept in Redis (created by the first API process
that needs it), so every API process behind one balancer accepts the others' tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from typing import Any

import redis

from engine import keys
from engine.errors import InvalidNextTokenError
from engine.store.connection import redis_errors

TOKEN = "nextToken"
_MAC_BYTES = 16
SECRET_KEY = f"{keys.PREFIX}:api:page-token-key"


class PageTokens:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._key: bytes | None = None
        self._guard = threading.Lock()

    def open(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with its sealed ``nextToken`` replaced by the handler's own token."""
        token = body.get(TOKEN)
        if not token:
            return body
        return {**body, TOKEN: self.unseal(operation, str(token))}

    def seal(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the handler's ``nextToken`` (if any) sealed for clients."""
        token = body.get(TOKEN)
        if not token:
            return body
        return {**body, TOKEN: self.sealed(operation, str(token))}

    def sealed(self, operation: str, inner: str) -> str:
        data = inner.encode()
        return base64.urlsafe_b64encode(self._mac(operation, data) + data).decode().rstrip("=")

    def unseal(self, operation: str, token: str) -> str:
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, data = blob[:_MAC_BYTES], blob[_MAC_BYTES:]
            if len(mac) == _MAC_BYTES and hmac.compare_digest(mac, self._mac(operation, data)):
                return data.decode()
        except (binascii.Error, ValueError):
            pass
        raise InvalidNextTokenError(
            f"The nextToken {_shown(token)} is not valid: it was not issued by this {operation}"
        )

    def _mac(self, operation: str, data: bytes) -> bytes:
        message = operation.encode() + b"\0" + data
        return hmac.new(self._secret(), message, hashlib.sha256).digest()[:_MAC_BYTES]

    def _secret(self) -> bytes:
        with self._guard:
            if self._key is None:
                with redis_errors("reading the page-token key"):
                    self.r.set(SECRET_KEY, secrets.token_hex(32), nx=True)
                    stored = self.r.get(SECRET_KEY)
                self._key = str(stored or "").encode()
            return self._key


def _shown(token: str, limit: int = 40) -> str:
    return repr(token if len(token) <= limit else token[:limit] + "...")
