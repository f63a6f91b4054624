"""Webhook secrets, and proving a delivery was sent by someone who holds one.

Secrets come from settings or files, never from pipeline definitions: a default secret, and
optionally one per repository (``owner/name`` as events name it) or per connection ARN. A
source action is guarded by the most specific secret that exists for it (its repository's,
else its connection's, else the default), and a delivery starts only actions whose guarding
secret signed it; so a repository with its own secret cannot be driven with the default one.

Verification runs before the body is parsed, against every configured secret, comparing in
constant time (``hmac.compare_digest``). The result is the *names* of the secrets that
verified, never their values, so nothing downstream can leak one.

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.
- GitLab: ``X-Gitlab-Token: <the secret itself>``; or, where GitLab signs deliveries
  (a webhook "signing token", in the Standard Webhooks scheme), ``webhook-signature:
  v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`` with the timestamp
  within a tolerance of now. A ``whsec_``-prefixed secret is base64 after the prefix, as
  Standard Webhooks writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from engine.errors import ConveyorError

DEFAULT = "*"  # the name of the default secret


class WebhookConfigError(ConveyorError):
    """A secrets file that cannot be used; says which file and why, never what it holds."""


class Unauthorized(Exception):
    """A delivery that proves nothing (401) or proves the wrong thing (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WebhookSecrets:
    default: SecretStr | None = None
    # repository id or connection ARN -> secret (keys compared case-insensitively)
    by_key: Mapping[str, SecretStr] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return self.default is not None or bool(self.by_key)

    def named(self) -> list[tuple[str, bytes]]:
        out = [(k, v.get_secret_value().encode()) for k, v in self.by_key.items()]
        if self.default is not None:
            out.append((DEFAULT, self.default.get_secret_value().encode()))
        return out

    def guarding(self, repository: str | None, connection: str | None) -> str | None:
        """The name of the secret that guards a source action, or None if none does."""
        for key in (repository, connection):
            if key and key.lower() in self.by_key:
                return key.lower()
        return DEFAULT if self.default is not None else None

    @classmethod
    def load(
        cls,
        default: SecretStr | None = None,
        default_file: Path | None = None,
        secrets_file: Path | None = None,
    ) -> WebhookSecrets:
        """From settings: a default (value or file holding it) and a JSON file mapping
        repository ids or connection ARNs to secrets."""
        if default is None and default_file is not None:
            default = SecretStr(_read(default_file).strip())
            if not default.get_secret_value():
                raise WebhookConfigError(f"webhook secret file {default_file} is empty")
        by_key: dict[str, SecretStr] = {}
        if secrets_file is not None:
            try:
                data = json.loads(_read(secrets_file))
            except json.JSONDecodeError as exc:
                raise WebhookConfigError(
                    f"webhook secrets file {secrets_file} is not valid JSON "
                    f"(line {exc.lineno}, column {exc.colno})"
                ) from None
            if not isinstance(data, dict):
                raise WebhookConfigError(
                    f"webhook secrets file {secrets_file} must hold a JSON object "
                    '{"<owner/repo or connection ARN>": "<secret>", ...}'
                )
            for key, value in data.items():
                if not isinstance(value, str) or not value:
                    raise WebhookConfigError(
                        f"webhook secrets file {secrets_file}: the secret of '{key}' "
                        "must be a non-empty string"
                    )
                by_key[key.lower()] = SecretStr(value)
        return cls(default=default, by_key=by_key)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebhookConfigError(
            f"cannot read webhook secrets from {path}: {exc.strerror}"
        ) from None


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def verify_github(headers: Mapping[str, str], body: bytes, secrets: WebhookSecrets) -> set[str]:
    header = headers.get("x-hub-signature-256")
    if not header:
        raise Unauthorized(401, "missing X-Hub-Signature-256 header (sha256=<HMAC of the body>)")
    scheme, _, given = header.partition("=")
    try:
        digest = bytes.fromhex(given)
    except ValueError:
        digest = b""
    if scheme != "sha256" or len(digest) != hashlib.sha256().digest_size:
        raise Unauthorized(401, "X-Hub-Signature-256 must be sha256=<64 hex digits>")
    return _verified(
        (name for name, key in secrets.named() if hmac.compare_digest(_hmac(key, body), digest)),
        "X-Hub-Signature-256",
    )


def verify_gitlab(
    headers: Mapping[str, str],
    body: bytes,
    secrets: WebhookSecrets,
    *,
    now: float,
    tolerance_seconds: float,
) -> set[str]:
    if headers.get("webhook-signature"):
        return _verify_signed(headers, body, secrets, now=now, tolerance=tolerance_seconds)
    token = headers.get("x-gitlab-token")
    if not token:
        raise Unauthorized(401, "missing X-Gitlab-Token header (or a webhook-signature)")
    given = token.encode()
    return _verified(
        (name for name, key in secrets.named() if hmac.compare_digest(key, given)),
        "X-Gitlab-Token",
    )


def _verify_signed(
    headers: Mapping[str, str],
    body: bytes,
    secrets: WebhookSecrets,
    *,
    now: float,
    tolerance: float,
) -> set[str]:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    if not msg_id or not stamp:
        raise Unauthorized(401, "a webhook-signature needs webhook-id and webhook-timestamp")
    try:
        sent = int(stamp)
    except ValueError:
        raise Unauthorized(401, "webhook-timestamp must be whole seconds since the epoch") from None
    if abs(now - sent) > tolerance:
        raise Unauthorized(
            403, f"webhook-timestamp is more than {tolerance:.0f} seconds away from now"
        )
    given: list[bytes] = []
    for part in headers["webhook-signature"].split():
        version, _, value = part.partition(",")
        if version != "v1":
            continue
        try:
            given.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise Unauthorized(401, "webhook-signature holds no v1,<base64> signature")
    signed = f"{msg_id}.{stamp}.".encode() + body
    return _verified(
        (
            name
            for name, key in secrets.named()
            if any(hmac.compare_digest(_hmac(_signing_key(key), signed), g) for g in given)
        ),
        "webhook-signature",
    )


def _signing_key(secret: bytes) -> bytes:
    if secret.startswith(b"whsec_"):
        try:
            return base64.b64decode(secret[len(b"whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            return secret
    return secret


def _verified(names: Iterable[str], header: str) -> set[str]:
    found = set(names)
    if not found:
        raise Unauthorized(403, f"{header} does not match any configured webhook secret")
    return found


def sign_github(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends (for tests and for testing a setup)."""
    return "sha256=" + _hmac(secret.encode(), body).hex()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value a Standard Webhooks sender (GitLab) sends."""
    key = _signing_key(secret.encode())
    digest = _hmac(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()
