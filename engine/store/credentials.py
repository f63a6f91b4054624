"""Temporary artifact credentials: what a job's ``artifactCredentials`` may do.

Each grant is an access key id (``ASIA…``, like STS's temporary keys), a secret, a session
token, and the exact objects it may read (the job's input artifacts) and write (its output
artifacts). Conveyor's S3 gateway (:mod:`engine.api.s3_gateway`) checks requests signed with
it and forwards the allowed ones with the store's own keys, which never leave Conveyor.
A grant expires with the jobs it was made for.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from engine import keys
from engine.store.connection import redis_errors


@dataclass(frozen=True)
class Grant:
    access_key_id: str
    secret_access_key: str
    session_token: str
    reads: frozenset[tuple[str, str]]  # (bucket, key)
    writes: frozenset[tuple[str, str]]

    def credentials(self) -> dict[str, str]:
        """CodePipeline's ``AWSSessionCredentials``."""
        return {
            "accessKeyId": self.access_key_id,
            "secretAccessKey": self.secret_access_key,
            "sessionToken": self.session_token,
        }


def _access_key_id() -> str:
    return "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode()[:16]


class CredentialStore:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def issue(
        self,
        reads: Iterable[tuple[str, str]],
        writes: Iterable[tuple[str, str]],
        ttl_seconds: float,
    ) -> Grant:
        grant = Grant(
            access_key_id=_access_key_id(),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token=secrets.token_urlsafe(96),
            reads=frozenset(reads),
            writes=frozenset(writes),
        )
        record = {
            "secret": grant.secret_access_key,
            "token": grant.session_token,
            "reads": sorted(grant.reads),
            "writes": sorted(grant.writes),
        }
        with redis_errors("issuing artifact credentials"):
            self.r.set(
                keys.artifact_credentials(grant.access_key_id),
                json.dumps(record),
                ex=max(1, int(ttl_seconds)),
            )
        return grant

    def lookup(self, access_key_id: str) -> Grant | None:
        with redis_errors("reading artifact credentials"):
            raw = self.r.get(keys.artifact_credentials(access_key_id))
        if not raw:
            return None
        record = json.loads(raw)
        return Grant(
            access_key_id=access_key_id,
            secret_access_key=record["secret"],
            session_token=record["token"],
            reads=frozenset((b, k) for b, k in record["reads"]),
            writes=frozenset((b, k) for b, k in record["writes"]),
        )

    def revoke(self, access_key_id: str) -> None:
        with redis_errors("revoking artifact credentials"):
            self.r.delete(keys.artifact_credentials(access_key_id))
