"""Deploy/AWS/S3/1: publish the input artifact to a bucket, extracted or as one zip.

Like CodePipeline, the target bucket must already exist: creating it here would hide a
typo in ``BucketName`` behind a brand-new, empty, possibly public bucket.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import field_validator, model_validator

from providers._s3 import (
    TRANSFER_CONFIG,
    BotoCoreError,
    ClientError,
    is_missing,
    s3_client,
    to_failure,
)
from providers.base import (
    ActionFailed,
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.s3_source import bool_string
from providers.ziputil import UnsafeArchiveError, zip_dir

CannedAcl = Literal[
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
]


class S3DeployConfig(ProviderConfig):
    BucketName: str
    Extract: Literal["true", "false"]
    ObjectKey: str | None = None
    KMSEncryptionKeyARN: str | None = None
    CannedACL: CannedAcl | None = None
    CacheControl: str | None = None

    @field_validator("Extract", mode="before")
    @classmethod
    def _extract(cls, value: Any) -> Any:
        return bool_string(value)

    @model_validator(mode="after")
    def _key_needed_unless_extracting(self) -> Self:
        if self.Extract == "false" and not self.ObjectKey:
            raise ValueError('ObjectKey is required when Extract is "false"')
        return self


def _upload_args(config: S3DeployConfig) -> dict[str, str]:
    args: dict[str, str] = {}
    if config.CannedACL:
        args["ACL"] = config.CannedACL
    if config.CacheControl:
        args["CacheControl"] = config.CacheControl
    if config.KMSEncryptionKeyARN:
        args["ServerSideEncryption"] = "aws:kms"
        args["SSEKMSKeyId"] = config.KMSEncryptionKeyARN
    return args


def _files(directory: Path) -> list[Path]:
    root = directory.resolve()
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ActionFailed(
                f"{path.relative_to(directory)}: symlink points outside the artifact"
            )
        if path.is_file():
            found.append(path)
    return found


class S3Deploy(Provider):
    action_type = ActionTypeId(category=Category.DEPLOY, owner="AWS", provider="S3", version="1")
    Config = S3DeployConfig
    min_inputs = 1
    max_inputs = 1

    def run(self, job: Job) -> Result:
        config: S3DeployConfig = job.configuration
        source = job.primary_input
        if source is None:
            raise ActionFailed("Deploy/S3 needs one input artifact")
        client = s3_client(job.s3)
        bucket = config.BucketName
        self._check_bucket(client, bucket, job.s3.endpoint_url)
        base_args = _upload_args(config)

        if config.Extract == "false":
            key = config.ObjectKey or ""  # validated: present when not extracting
            archive = job.workdir / "s3-deploy.zip"
            try:
                zip_dir(source, archive)
            except UnsafeArchiveError as exc:
                raise ActionFailed(f"cannot package the input artifact: {exc}") from exc
            self._put(
                client, job, archive, bucket, key, {**base_args, "ContentType": "application/zip"}
            )
            return Result(summary=f"Deployed s3://{bucket}/{key}")

        prefix = (config.ObjectKey or "").strip("/")
        files = _files(source)
        for path in files:
            if job.cancelled.is_set():
                raise ActionFailed("Deploy/S3 was stopped", retryable=False)
            rel = path.relative_to(source).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            self._put(client, job, path, bucket, key, {**base_args, "ContentType": content_type})
        target = f"s3://{bucket}/{prefix + '/' if prefix else ''}"
        return Result(summary=f"Deployed {len(files)} files to {target}")

    @staticmethod
    def _check_bucket(client: Any, bucket: str, endpoint: str) -> None:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if is_missing(exc):
                raise ActionFailed(
                    f"target bucket s3://{bucket} does not exist; Deploy/S3 does not create "
                    "buckets, create it first"
                ) from exc
            raise to_failure(exc, f"checking bucket s3://{bucket}", endpoint) from exc
        except BotoCoreError as exc:
            raise to_failure(exc, f"checking bucket s3://{bucket}", endpoint) from exc

    @staticmethod
    def _put(
        client: Any, job: Job, path: Path, bucket: str, key: str, args: dict[str, str]
    ) -> None:
        # upload_file streams from disk and switches to multipart for big files.
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs=args, Config=TRANSFER_CONFIG)
        except (ClientError, BotoCoreError) as exc:
            raise to_failure(exc, f"uploading s3://{bucket}/{key}", job.s3.endpoint_url) from exc
        job.log.write(f"upload: {path.name} -> s3://{bucket}/{key}\n")
