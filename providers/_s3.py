"""A boto3 S3 client for providers, built from the job's ``S3Access``.

Providers that act on user buckets (S3 source, S3 deploy) use boto3, like the AWS-backed
providers do, so the same code talks to AWS or to any S3-compatible endpoint.
"""

from __future__ import annotations

from typing import Any

import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
)

from providers.base import ActionFailed, S3Access

# boto3's default of 10 concurrent 8 MiB parts holds ~70 MB per transfer; 4 is as fast here.
TRANSFER_CONFIG = TransferConfig(max_concurrency=4)

__all__ = [
    "TRANSFER_CONFIG",
    "BotoCoreError",
    "ClientError",
    "error_code",
    "is_missing",
    "s3_client",
    "to_failure",
]

_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound"})


def s3_client(access: S3Access) -> Any:
    """Path-style addressing: MinIO and most self-hosted endpoints have no bucket DNS."""
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint_url,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        region_name=access.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=300,
        ),
    )


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_missing(exc: Exception) -> bool:
    return error_code(exc) in _MISSING


def to_failure(exc: Exception, doing: str, endpoint: str) -> ActionFailed:
    """An SDK error as an ActionFailed: network trouble may pass, denials will not."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        retryable = code in {"SlowDown", "InternalError", "ServiceUnavailable", "503", "500"}
        return ActionFailed(f"{doing}: {code}: {message}", retryable=retryable)
    return ActionFailed(f"{doing}: cannot reach S3 endpoint {endpoint}: {exc}", retryable=True)
