"""An in-process API server on a free port over the session's real Redis, and boto3 at it.

No workers run here: dispatch effects stay in the outbox, and tests that need an action to
finish apply ``ActionCompleted`` through the store, exactly as a worker's callback would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import redis
import uvicorn

from engine.api import create_app
from engine.service import Service
from engine.store import Store
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


@pytest.fixture(scope="session")
def api_server(redis_service: devstack.Service) -> Iterator[ApiServer]:
    url = devstack.with_redis_db(redis_service.url, API_TEST_DB)
    store = Store.from_url(url)
    service = Service(store, registry(), default_bucket=BUCKET, ensure_bucket=None)
    port = devstack.free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
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
    """A plain boto3 CodePipeline client aimed at the server, signing with any keys."""
    return boto3.client(
        "codepipeline",
        endpoint_url=api.url,
        region_name="us-east-1",
        aws_access_key_id="anything",
        aws_secret_access_key="anything",
    )
