"""The raw sides' S3 clients, built from the same environment and settings the workers use.

Kept apart from raw_s3 (which builds a Celery app on import) so that raw_transfer, whose
RSS is measured, imports only the clients.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from minio import Minio


def _env() -> tuple[str, str, str, str]:
    return (
        os.environ["CONVEYOR_S3_ENDPOINT_URL"],
        os.environ["CONVEYOR_S3_ACCESS_KEY_ID"],
        os.environ["CONVEYOR_S3_SECRET_ACCESS_KEY"],
        os.environ.get("CONVEYOR_S3_REGION", "us-east-1"),
    )


def boto3_client() -> Any:
    endpoint, access, secret, region = _env()
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=300,
        ),
    )


def minio_client() -> Minio:
    endpoint, access, secret, region = _env()
    return Minio(
        endpoint.split("://", 1)[1],
        access_key=access,
        secret_key=secret,
        secure=endpoint.startswith("https://"),
        region=region,
    )
