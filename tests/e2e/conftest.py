"""An in-process API server on a free port over the session's real Redis, and boto3 at it.

No workers run here: dispatch effects stay in the outbox, and tests that need an action to
finish apply ``ActionCompleted`` through the store, exactly as a worker's callback would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass
from typing import Any, Protocol

import pytest
import redis
import uvicorn

from engine.api import create_app
from engine.api.auth import Authenticator
from engine.auth.keys import HANDLER_ROLES, WORKER_ROLES, AuthSources, Identity, KeyRing
from engine.auth.principals import Principal, Role
from engine.service import Service
from engine.store import Store
from tests.auth_support import ADMIN, HANDLERS, WORKERS, Principals, TestKey, codepipeline
from tests.e2e.api_support import BUCKET, registry
from tests.helpers import wait_for
from workers import devstack

# A database of its own, so flushing it never disturbs suites sharing the session Redis.
API_TEST_DB = 7


# --- The server ----------------------------------------------------------------------------


@dataclass
class ApiServer:
    url: str
    service: Service
    redis: redis.Redis


def signing_authenticator(principals: Principals, r: redis.Redis) -> Authenticator:
    """SigV4 with the session's principals file and the workers' key, as ``conveyor api``
    runs in the tests."""
    static = (
        Identity(Principal(WORKERS.principal, WORKER_ROLES), *astuple(WORKERS)[1:]),
        Identity(Principal(HANDLERS.principal, HANDLER_ROLES), *astuple(HANDLERS)[1:]),
    )
    sources = AuthSources(principals_file=principals.path, static=static)
    return Authenticator.sigv4(KeyRing(sources), r)


@pytest.fixture(scope="session")
def api_server(redis_service: devstack.Service, principals: Principals) -> Iterator[ApiServer]:
    url = devstack.with_redis_db(redis_service.url, API_TEST_DB)
    store = Store.from_url(url)
    service = Service(store, registry(), default_bucket=BUCKET, ensure_bucket=None)
    port = devstack.free_port()
    app = create_app(service, authenticator=signing_authenticator(principals, store.r))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="conveyor-api", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15, message="uvicorn did not start")
    yield ApiServer(f"http://127.0.0.1:{port}", service, redis.Redis.from_url(url))
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def api(api_server: ApiServer) -> ApiServer:
    """The server, with its Redis database emptied first."""
    api_server.redis.flushdb()
    return api_server


@pytest.fixture
def cp(api: ApiServer) -> Any:
    """A plain boto3 CodePipeline client aimed at the server, signing as the admin."""
    return codepipeline(api.url, ADMIN)


class PrincipalClient(Protocol):
    def __call__(
        self,
        roles: Iterable[Role | str],
        name: str | None = None,
        endpoint_url: str | None = None,
    ) -> Any: ...


@pytest.fixture
def principal_client(api: ApiServer, principals: Principals) -> PrincipalClient:
    """``principal_client(["approver"], name="carol")``: a boto3 codepipeline client signing
    with a fresh key of principal ``name`` (default: a new one) holding ``roles``, aimed at
    the in-process API (or ``endpoint_url``, e.g. a ``start_stack`` API). The client's
    ``.conveyor_key`` is its :class:`~tests.auth_support.TestKey`."""

    def make(
        roles: Iterable[Role | str], name: str | None = None, endpoint_url: str | None = None
    ) -> Any:
        key: TestKey = principals.add(roles, name)
        client = codepipeline(endpoint_url or api.url, key)
        client.conveyor_key = key
        return client

    return make
