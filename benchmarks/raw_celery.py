"""The plain-Celery baseline for the overhead benchmark: what a hand-written Celery chain does
for each of the 50 actions, with Conveyor's own broker and S3 endpoint.

Run as ``celery -A benchmarks.raw_celery worker -c 1 -Q bench`` with the ``CONVEYOR_*``
variables of the benchmark stack in its environment (the same broker URL Conveyor uses).
Celery settings mirror the ones that matter in ``workers.app.make_app``: JSON, acks late,
reject on worker lost, prefetch 1, results ignored. Task events are off (Conveyor turns them
on for Flower; that cost is counted on Conveyor's side).

One task = one action's work:

1. download the tiny source zip from S3 (minio SDK, one client per process, as Conveyor's
   artifact store does) to a temp dir;
2. extract it;
3. run ``bash -c "echo ok"`` in the extracted dir, output to a log file;
4. upload that log as an object (Conveyor uploads a log per action too);
5. the last task of a chain writes a completion key in Redis that the driver polls.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from minio import Minio

TASK = "bench.step"
QUEUE = "bench"
DONE_KEY = "bench:raw:done:{run}"


def make_app(broker_url: str) -> Celery:
    app = Celery("bench_raw", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_transport_options={"visibility_timeout": 12 * 3600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


app = make_app(os.environ.get("CONVEYOR_BROKER_URL", "redis://127.0.0.1:6379/1"))

_clients: dict[str, Any] = {}


def _client(kind: str) -> Any:
    """Per-process clients, made after the prefork fork (like Conveyor's Runtime)."""
    key = f"{kind}:{os.getpid()}"
    if key not in _clients:
        if kind == "s3":
            endpoint = os.environ["CONVEYOR_S3_ENDPOINT_URL"]
            _clients[key] = Minio(
                endpoint.split("://", 1)[1],
                access_key=os.environ["CONVEYOR_S3_ACCESS_KEY_ID"],
                secret_key=os.environ["CONVEYOR_S3_SECRET_ACCESS_KEY"],
                secure=endpoint.startswith("https://"),
                region=os.environ.get("CONVEYOR_S3_REGION", "us-east-1"),
            )
        else:
            _clients[key] = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"])
    return _clients[key]


@app.task(  # type: ignore[untyped-decorator]
    name=TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def step(run: str, index: int, total: int, bucket: str, key: str, log_bucket: str) -> None:
    s3 = _client("s3")
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "source.zip"
        s3.fget_object(bucket, key, str(archive))
        src = tmp / "src"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(src)
        log_path = tmp / "action.log"
        with log_path.open("wb") as out:
            subprocess.run(
                ["bash", "-c", "echo ok"],
                cwd=src,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        s3.fput_object(log_bucket, f"raw-logs/{run}/{index:03d}.log", str(log_path))
    if index == total - 1:
        _client("redis").set(DONE_KEY.format(run=run), repr(time.time()), ex=3600)
