"""The plain-Celery baseline for the chain and fan-out benchmarks: tasks that do only the S3
work of Conveyor's S3 actions, with Conveyor's own broker, Redis and S3 endpoint.

Run as ``celery -A benchmarks.raw_s3 worker -c 2 -Q bench-s3`` with the ``CONVEYOR_*``
variables of the benchmark stack in its environment. Celery settings are raw_celery's (the
ones that matter in ``workers.app.make_app``: JSON, acks late, prefetch 1, no results).

Per task, with per-process clients made after the prefork fork (like Conveyor's Runtime),
the lightest version of the same S3 work: one request per hop, everything in memory (no
temp files, no bash, no log object, no bucket check, no checksum), so it is the floor a
hand-written Celery task could reach:

- ``bench.s3.deploy`` = what a ``Deploy/AWS/S3`` action with ``Extract: "true"`` does on S3:
  GET the input artifact zip (minio ``get_object``, one request, as Conveyor's artifact
  store downloads it), unzip it in memory, PUT each file to the target bucket (boto3
  ``put_object``, as the S3 deploy provider does for a small file);
- ``bench.s3.source`` = what a ``Source/AWS/S3`` action does on S3: GET the source zip
  (boto3 ``get_object``, as the S3 source provider does), re-zip its files in memory
  (DEFLATE, as ``zip_dir``) and PUT it as the output artifact (minio ``put_object``);
- a task given ``done`` XADDs ``{"run": done}`` to the Redis stream ``bench:raw:s3:done``
  when it is finished: the driver reads that stream with XREAD BLOCK, as it reads
  Conveyor's event stream, and takes the entry id (Redis's clock, ms) as the end time.
"""

from __future__ import annotations

import io
import mimetypes
import os
import zipfile
from typing import Any

import redis
from boto3.s3.transfer import TransferConfig

from benchmarks._s3env import boto3_client, minio_client
from benchmarks.raw_celery import make_app

QUEUE = "bench-s3"
SOURCE_TASK = "bench.s3.source"
DEPLOY_TASK = "bench.s3.deploy"
DONE_STREAM = "bench:raw:s3:done"
PART_SIZE = 8 * 1024 * 1024  # workers.artifacts.PART_SIZE
PARALLEL_UPLOADS = 2  # workers.artifacts.PARALLEL_UPLOADS
TRANSFER_CONFIG = TransferConfig(max_concurrency=4)  # providers._s3.TRANSFER_CONFIG

app = make_app(os.environ.get("CONVEYOR_BROKER_URL", "redis://127.0.0.1:6379/1"))
app.conf.task_default_queue = QUEUE

_clients: dict[str, Any] = {}


def _client(kind: str) -> Any:
    """Per-process clients, made after the prefork fork."""
    key = f"{kind}:{os.getpid()}"
    if key in _clients:
        return _clients[key]
    client: Any
    if kind == "minio":
        client = minio_client()
    elif kind == "boto3":
        client = boto3_client()
    else:
        client = redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"])
    _clients[key] = client
    return client


def _done(run: str | None) -> None:
    if run is not None:
        _client("redis").xadd(DONE_STREAM, {"run": run}, maxlen=100_000, approximate=True)


@app.task(  # type: ignore[untyped-decorator]
    name=SOURCE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def source(
    src_bucket: str, src_key: str, art_bucket: str, art_key: str, done: str | None = None
) -> None:
    body = _client("boto3").get_object(Bucket=src_bucket, Key=src_key)["Body"].read()
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(body)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            if not info.is_dir():
                dst.writestr(info.filename, src.read(info))
    data = out.getvalue()
    _client("minio").put_object(
        art_bucket, art_key, io.BytesIO(data), len(data), content_type="application/zip"
    )
    _done(done)


@app.task(  # type: ignore[untyped-decorator]
    name=DEPLOY_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def deploy(
    art_bucket: str, art_key: str, target: str, prefix: str, done: str | None = None
) -> None:
    resp = _client("minio").get_object(art_bucket, art_key)
    try:
        archive = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    s3 = _client("boto3")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            content_type = mimetypes.guess_type(info.filename)[0] or "application/octet-stream"
            s3.put_object(
                Bucket=target,
                Key=f"{prefix}/{info.filename}",
                Body=zf.read(info),
                ContentType=content_type,
            )
    _done(done)


def deploy_signatures(
    celery_app: Any, art_bucket: str, art_key: str, target: str, prefix: str, n: int, run: str
) -> list[Any]:
    """n deploy tasks of one artifact into prefix/dNN; the last reports `run` as done."""
    return [
        celery_app.signature(
            DEPLOY_TASK,
            args=(art_bucket, art_key, target, f"{prefix}/d{i:02d}", run if i == n else None),
            immutable=True,
            queue=QUEUE,
        )
        for i in range(1, n + 1)
    ]
