"""A boto3 S3 client for providers, built from the job's ``S3Access``.

Providers that act on user buckets (S3 source, S3 deploy) use boto3, like the AWS-backed
providers do, so the same code talks to AWS or to any S3-compatible endpoint.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from providers.base import ActionFailed, S3Access

# boto3's default of 10 concurrent 8 MiB parts holds ~70 MB per transfer; 4 is as fast here.
TRANSFER_CONFIG = TransferConfig(max_concurrency=4)

__all__ = [
    "TRANSFER_CONFIG",
    "BotoCoreError",
    "ClientError",
    "S3UploadFailedError",
    "error_code",
    "is_missing",
    "s3_client",
    "to_failure",
]

_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound"})
# Throttled or failing on the server's side: worth another try.
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# The network failed, not the request: the endpoint is down, restarting or unreachable.
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError)


@functools.lru_cache(maxsize=16)
def s3_client(access: S3Access) -> Any:
    """One client per endpoint and credentials for the process's life: making a boto3 client
    costs milliseconds (it copies its event handlers and endpoint rules), and clients are
    thread-safe. Path-style addressing: MinIO and most self-hosted endpoints have no bucket
    DNS."""
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
    """An SDK error as an ActionFailed: network trouble, throttling and server errors may
    pass (``retryable``), denials and invalid requests will not."""
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__  # boto3's transfer manager wraps the service's error
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        retryable = code in _RETRYABLE_CODES or status in _RETRYABLE_STATUSES
        return ActionFailed(f"{doing}: {code}: {message}", retryable=retryable)
    if isinstance(exc, _NETWORK_ERRORS):
        return ActionFailed(f"{doing}: cannot reach S3 endpoint {endpoint}: {exc}", retryable=True)
    return ActionFailed(f"{doing}: {exc}")
