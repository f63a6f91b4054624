"""Keys and signed clients for tests: the suite runs with authentication ON.

The session writes one principals file (:class:`Principals`) holding :data:`ADMIN`; every
API the tests start (in-process or ``conveyor api`` processes) reads it, and accepts the
workers' key (:data:`WORKERS`, from ``CONVEYOR_API_ACCESS_KEY_ID``) as ``conveyor-workers``.
``Principals.add(roles, name=...)`` adds a principal with a fresh key; the APIs pick it up
without a restart (the file is re-read when it changes).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from engine.auth.keys import HANDLERS_PRINCIPAL, WORKERS_PRINCIPAL, generate_key_pair
from engine.auth.principals import Role

REGION = "us-east-1"


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    principal: str
    access_key_id: str
    secret_access_key: str

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key)


ADMIN = TestKey("test-admin", "AKIATESTADMIN0000001", "test-admin-secret-0000000000000000000000")
WORKERS = TestKey(
    WORKERS_PRINCIPAL, "AKIATESTWORKERS00001", "test-workers-secret-000000000000000000000"
)
HANDLERS = TestKey(
    HANDLERS_PRINCIPAL, "AKIATESTHANDLERS0001", "test-handlers-secret-00000000000000000000"
)


def auth_env(principals_file: Path) -> dict[str, str]:
    """``CONVEYOR_*`` auth settings for every process the tests start."""
    return {
        "CONVEYOR_AUTH_MODE": "sigv4",
        "CONVEYOR_AUTH_PRINCIPALS_FILE": str(principals_file),
        "CONVEYOR_API_ACCESS_KEY_ID": WORKERS.access_key_id,
        "CONVEYOR_API_SECRET_ACCESS_KEY": WORKERS.secret_access_key,
        "CONVEYOR_API_HANDLER_ACCESS_KEY_ID": HANDLERS.access_key_id,
        "CONVEYOR_API_HANDLER_SECRET_ACCESS_KEY": HANDLERS.secret_access_key,
    }


class Principals:
    """The session's principals file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._put(ADMIN, [Role.ADMIN])

    def add(self, roles: Iterable[Role | str], name: str | None = None) -> TestKey:
        """A fresh key for principal ``name`` (default: a new name) with ``roles`` (a
        principal named again gets these roles for all its keys)."""
        key_id, secret = generate_key_pair()
        key = TestKey(name or f"p-{uuid.uuid4().hex[:8]}", key_id, secret)
        self._put(key, [Role(r) for r in roles])
        return key

    def _put(self, key: TestKey, roles: list[Role]) -> None:
        with self._lock:
            entry = self._entries.setdefault(key.principal, {"name": key.principal, "keys": []})
            entry["roles"] = [r.value for r in roles]
            entry["keys"].append(
                {"accessKeyId": key.access_key_id, "secretAccessKey": key.secret_access_key}
            )
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"principals": list(self._entries.values())}, f)
            os.replace(tmp, self.path)  # a new inode: every API sees the change at once


def codepipeline(endpoint_url: str, key: TestKey = ADMIN, **config: Any) -> Any:
    """boto3's codepipeline client at ``endpoint_url``, signing as ``key``."""
    return boto3.client(
        "codepipeline",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        config=Config(**config) if config else None,
    )


def next_second() -> None:
    """Wait for the clock's next second: botocore signs an identical call within one second
    identically, and the API refuses a change whose signature it has seen (a replay)."""
    time.sleep(1.01 - time.time() % 1)


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    key: TestKey = ADMIN,
    *,
    at: datetime | None = None,
) -> dict[str, str]:
    """``headers`` plus SigV4's, as botocore signs them (with a fresh
    ``amz-sdk-invocation-id``, as botocore sends, so two identical calls differ); ``at``
    signs at another instant (botocore's clock frozen there)."""
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={**(headers or {}), "amz-sdk-invocation-id": str(uuid.uuid4())},
    )
    signer = SigV4Auth(key.credentials, "codepipeline", REGION)
    if at is None:
        signer.add_auth(request)
    else:
        with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
            signer.add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


def signed_get(url: str, key: TestKey = ADMIN, timeout: float = 10) -> Any:
    """GET ``url`` (``/events``) signed as ``key``; the JSON answer."""
    request = urllib.request.Request(url, headers=sign("GET", url, key=key), method="GET")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())
