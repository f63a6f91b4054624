"""Deploy/AWS/S3/1: publish the input artifact to a bucket, extracted or as it is.

Without Extract the artifact object is written under ObjectKey byte for byte, as AWS does
(a zip stays that very zip; an S3 source's tarball stays that tarball).

Like CodePipeline, the target bucket must already exist: creating it here would hide a
typo in ``BucketName`` behind a brand-new, empty, possibly public bucket.
"""

from __future__ import annotations

import mimetypes
import zipfile
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import field_validator, model_validator

from providers._s3 import (
    TRANSFER_CONFIG,
    BotoCoreError,
    ClientError,
    S3UploadFailedError,
    error_code,
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
from providers.ziputil import MAX_BYTES_SETTING, MAX_FILES_SETTING

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


def _check_key(key: str, what: str) -> None:
    """A newline in an object key is legal in S3 but almost always a mistake (a variable
    that captured command output), and breaks every listing and log that shows keys."""
    if "\n" in key or "\r" in key:
        raise ActionFailed(
            f"{what} {key!r} contains a line break; S3 object keys deployed by Deploy/S3 may "
            "not (nothing was uploaded)"
        )


def _check_limits(files: list[Path], job: Job) -> None:
    """The worker extracted the input within the limits; a deploy never publishes more."""
    if len(files) > job.max_artifact_files:
        raise ActionFailed(
            f"the input artifact has {len(files)} files; the limit is "
            f"{job.max_artifact_files} files ({MAX_FILES_SETTING})"
        )
    size = sum(path.stat().st_size for path in files)
    if size > job.max_artifact_bytes:
        raise ActionFailed(
            f"the input artifact has {size} bytes; the limit is "
            f"{job.max_artifact_bytes} bytes ({MAX_BYTES_SETTING})"
        )


class S3Deploy(Provider):
    action_type = ActionTypeId(category=Category.DEPLOY, owner="AWS", provider="S3", version="1")
    Config = S3DeployConfig
    min_inputs = 1
    max_inputs = 1
    default_timeout_minutes = 90  # AWS: "Amazon S3 deployment action: 90 minutes"

    @classmethod
    def needs_contents(cls, config: Any) -> bool:
        """Without Extract the artifact object itself is published, byte for byte."""
        return bool(config.Extract == "true")

    def run(self, job: Job) -> Result:
        config: S3DeployConfig = job.configuration
        client = s3_client(job.s3)
        bucket = config.BucketName
        base_args = _upload_args(config)

        if config.Extract == "false":
            # As on AWS: the artifact as its producer stored it, under ObjectKey.
            artifact = next(iter(job.input_files.values()), None)
            if artifact is None:
                raise ActionFailed("Deploy/S3 needs one input artifact")
            key = config.ObjectKey or ""  # validated: present when not extracting
            _check_key(key, "ObjectKey")
            kind = "application/zip" if zipfile.is_zipfile(artifact) else "application/octet-stream"
            self._put(client, job, artifact, bucket, key, {**base_args, "ContentType": kind})
            return Result(summary=f"Deployed s3://{bucket}/{key}")

        source = job.primary_input
        if source is None:
            raise ActionFailed("Deploy/S3 needs one input artifact")
        prefix = (config.ObjectKey or "").strip("/")
        _check_key(prefix, "ObjectKey")
        files = _files(source)
        _check_limits(files, job)
        for path in files:  # every key checked before the first byte is written
            _check_key(path.relative_to(source).as_posix(), "file name in the input artifact")
        # The worker runs this again after a transient failure: files an earlier try of
        # this attempt uploaded (same input, same keys) are not uploaded twice.
        journal = job.workdir / "s3-deploy-uploaded.txt"
        done = set(journal.read_text().splitlines()) if journal.exists() else set()
        if done:
            job.log.write(f"{len(done)} files were uploaded by an earlier try; not again\n")
        with journal.open("a") as record:
            for path in files:
                if job.cancelled.is_set():
                    raise ActionFailed("Deploy/S3 was stopped", retryable=False)
                rel = path.relative_to(source).as_posix()
                key = f"{prefix}/{rel}" if prefix else rel
                if key in done:
                    continue
                content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
                args = {**base_args, "ContentType": content_type}
                self._put(client, job, path, bucket, key, args)
                record.write(key + "\n")
                record.flush()
        target = f"s3://{bucket}/{prefix + '/' if prefix else ''}"
        return Result(summary=f"Deployed {len(files)} files to {target}")

    @staticmethod
    def _put(
        client: Any, job: Job, path: Path, bucket: str, key: str, args: dict[str, str]
    ) -> None:
        """One PUT for a small file; upload_file (multipart, streamed from disk, on a thread
        pool of its own) only for one big enough to need it. Like CodePipeline, the target
        bucket must exist: a missing one fails the action with a clear message (creating it
        here would hide a typo behind a brand-new, empty bucket)."""
        try:
            if path.stat().st_size < TRANSFER_CONFIG.multipart_threshold:
                with path.open("rb") as body:
                    client.put_object(Bucket=bucket, Key=key, Body=body, **args)
            else:
                client.upload_file(str(path), bucket, key, ExtraArgs=args, Config=TRANSFER_CONFIG)
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            cause = exc.__context__ if isinstance(exc, S3UploadFailedError) else exc
            if isinstance(cause, ClientError) and error_code(cause) == "NoSuchBucket":
                raise ActionFailed(
                    f"target bucket s3://{bucket} does not exist; Deploy/S3 does not create "
                    "buckets, create it first"
                ) from exc
            raise to_failure(exc, f"uploading s3://{bucket}/{key}", job.s3.endpoint_url) from exc
        job.log.write(f"upload: {path.name} -> s3://{bucket}/{key}\n")
