"""Source/AWS/S3/1: an object in a bucket becomes the pipeline's source artifact.

Like CodePipeline's S3 source, the output artifact is the object exactly as stored: usually
a zip whose contents are the source, but whatever it is (a tarball, a single file) it is
handed on byte for byte, never unpacked and re-zipped here. Actions that need the contents
unpack it themselves. Its version id (or, in an unversioned bucket, its ETag) is the
revision. The object is
read once with ``head_object`` and then fetched by that exact version, so a concurrent
upload cannot give the execution a revision id that does not match its files.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from pydantic import field_validator

from providers._s3 import (
    BotoCoreError,
    ClientError,
    error_code,
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
from providers.ziputil import MAX_BYTES_SETTING

# CodePipeline puts an optional human summary of the revision in this user metadata key.
REVISION_SUMMARY_METADATA = "codepipeline-artifact-revision-summary"


def bool_string(value: Any) -> Any:
    """CodePipeline configuration values are strings; YAML authors write booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower()
    return value


class S3SourceConfig(ProviderConfig):
    S3Bucket: str
    S3ObjectKey: str
    PollForSourceChanges: str | None = None

    @field_validator("PollForSourceChanges", mode="before")
    @classmethod
    def _poll(cls, value: Any) -> Any:
        value = bool_string(value)
        if value is not None and value not in ("true", "false"):
            raise ValueError('must be "true" or "false"')
        return value


class S3Source(Provider):
    action_type = ActionTypeId(category=Category.SOURCE, owner="AWS", provider="S3", version="1")
    Config = S3SourceConfig
    min_outputs = 1
    max_outputs = 1

    def run(self, job: Job) -> Result:
        config: S3SourceConfig = job.configuration
        bucket, key = config.S3Bucket, config.S3ObjectKey
        where = f"s3://{bucket}/{key}"
        client = s3_client(job.s3)
        # One GET: its response names the version (and ETag) of exactly the bytes it
        # carries, so the revision recorded always matches the files. A pinned revision (a
        # poll trigger's) is a version id; an ETag (unversioned bucket) cannot be fetched by
        # value, so the latest object is read then.
        pinned = {"VersionId": job.revision} if job.revision and '"' not in job.revision else {}
        got = self._get(client, bucket, key, job.s3.endpoint_url, pinned)
        body = got["Body"]
        version = got.get("VersionId")
        if version == "null":  # an object written before versioning was turned on
            version = None
        etag = str(got.get("ETag", "")).strip('"') or None
        size = got.get("ContentLength")
        if isinstance(size, int) and size > job.max_artifact_bytes:
            body.close()
            # The object is the artifact: refuse it before fetching its bytes.
            raise ActionFailed(
                f"{where} is {size} bytes; the limit is {job.max_artifact_bytes} bytes "
                f"({MAX_BYTES_SETTING})"
            )
        job.log.write(f"Fetching {where} (version {version or '-'}, ETag {etag or '-'})\n")

        name = PurePosixPath(key).name or "source"
        download = job.workdir / f"s3-source-{name}"
        try:
            with download.open("wb") as fh:
                for chunk in body.iter_chunks(1024 * 1024):
                    fh.write(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise to_failure(exc, f"downloading {where}", job.s3.endpoint_url) from exc
        finally:
            body.close()
        job.log.write(
            f"Fetched {download.stat().st_size} bytes; the artifact is the object as is\n"
        )

        variables = {"ETag": etag, "VersionId": version, "BucketName": bucket, "ObjectKey": key}
        summary = (got.get("Metadata") or {}).get(REVISION_SUMMARY_METADATA)
        (output_name,) = job.outputs
        return Result(
            verbatim_outputs={output_name: download},
            summary=f"Fetched {where}",
            revision_id=version or etag,
            revision_summary=summary,
            external_execution_id=version or etag,
            output_variables={k: v for k, v in variables.items() if v},
        )

    @staticmethod
    def _get(
        client: Any, bucket: str, key: str, endpoint: str, pinned: dict[str, str]
    ) -> dict[str, Any]:
        """The object's GET response (its body not read yet), or a clear failure: a GET's
        error names what is missing (unlike a HEAD's), so no second request is needed."""
        where = f"s3://{bucket}/{key}"
        try:
            got: dict[str, Any] = client.get_object(Bucket=bucket, Key=key, **pinned)
            return got
        except ClientError as exc:
            if error_code(exc) == "NoSuchBucket":
                raise ActionFailed(
                    f"source bucket s3://{bucket} does not exist (reading {where})"
                ) from exc
            if is_missing(exc):
                raise ActionFailed(f"source object {where} does not exist") from exc
            raise to_failure(exc, f"reading {where}", endpoint) from exc
        except BotoCoreError as exc:
            raise to_failure(exc, f"reading {where}", endpoint) from exc
