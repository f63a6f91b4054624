"""The artifact store: zip files in an S3-compatible bucket, through the ``minio`` SDK.

Everything goes through temp files on disk: a directory is zipped to a file, hashed in
1 MiB chunks and uploaded in multipart parts; a download lands in a file, is hashed, then
extracted member by member. Memory use is bounded by the multipart part size, never by
the artifact's size. The SHA-256 recorded at upload travels in the :class:`ArtifactRef`
(and in the object's metadata) and is checked before anything is extracted, so a
tampered or truncated object never reaches an action.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.versioningconfig import VersioningConfig
from pydantic import BaseModel, ConfigDict

from engine.errors import ArtifactError
from engine.settings import Settings
from providers.ziputil import (
    CHUNK_SIZE,
    MAX_BYTES_SETTING,
    UnsafeArchiveError,
    check_zip,
    extract_zip,
    sha256_file,
    zip_dir,
)

# The SDK reads each multipart part into memory: peak extra memory of an upload is about
# (PARALLEL_UPLOADS + 2) x PART_SIZE (~32 MiB, measured), whatever the artifact's size.
# 8 MiB parts upload as fast as 16 MiB ones (measured) and allow objects up to 80 GB
# (10,000 parts), far above max_artifact_bytes.
PART_SIZE = 8 * 1024 * 1024
PARALLEL_UPLOADS = 2
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
ZIP_CONTENT_TYPE = "application/zip"
OCTET_STREAM = "application/octet-stream"

_MISSING_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "ResourceNotFound"}
)
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "SlowDownRead",
        "SlowDownWrite",
        "Throttling",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "XMinioServerNotInitialized",
    }
)
# Throttled or a server-side failure, whatever code the server gives it.
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Packed:
    """A directory zipped into a local archive, ready to upload."""

    path: Path
    sha256: str
    size: int
    content_type: str = "application/zip"


class ArtifactRef(BaseModel):
    """Where one stored artifact (or attachment) is, and how to know it is intact."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    sha256: str | None = None
    size: int | None = None

    def s3_location(self) -> dict[str, str]:
        """The ``s3Location`` shape CodePipeline uses in job data and execution details."""
        return {"bucket": self.bucket, "key": self.key}


def artifact_key(pipeline: str, artifact: str, action_execution_id: str, attempt: int) -> str:
    """The object key of one output artifact of one attempt.

    Shaped like CodePipeline's ``<pipeline[:20]>/<artifact[:20]>/<random>``: the name
    prefixes keep a bucket browsable per pipeline and artifact, truncated as CodePipeline
    truncates them. The last part is deterministic instead of random so a redelivered task
    overwrites its own attempt's object rather than leaving a duplicate, while a retry
    (a new attempt) never clobbers an object an earlier attempt's consumers may be reading.
    """
    return f"{pipeline[:20]}/{artifact[:20]}/{action_execution_id}-{attempt}.zip"


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _version(value: str | None) -> str | None:
    """S3 reports "null" for objects in unversioned buckets; some servers then reject
    ``versionId=null`` on GET, so "null" is stored as no version (address by key)."""
    return None if value in (None, "", "null") else value


def network_reason(exc: BaseException) -> str:
    """The root of a network error ("Connection refused"), not urllib3's paragraph that
    repeats the pool, the URL and an object's address around it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    deepest = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if str(current):
            deepest = current
        reason = getattr(current, "reason", None)  # MaxRetryError's underlying error
        nested = [a for a in current.args if isinstance(a, BaseException)]  # ProtocolError's
        if isinstance(reason, BaseException):
            current = reason
        elif nested:
            current = nested[0]
        else:
            current = current.__cause__ or current.__context__
    return str(deepest)


def _parse_endpoint(url: str) -> tuple[str, bool]:
    """``http://host:port`` -> (``host:port``, secure). MinIO takes no scheme or path."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint must look like http(s)://host[:port], got {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"S3 endpoint must not have a path, got {url!r}")
    return parts.netloc, parts.scheme == "https"


class ArtifactStore:
    """Artifact and attachment storage in S3-compatible buckets."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        """Explicit arguments win over ``settings`` (which defaults to the environment)."""
        settings = settings or Settings()
        self.endpoint_url = endpoint_url or settings.s3_endpoint_url
        self.region = region or settings.s3_region
        self.max_bytes = settings.max_artifact_bytes
        self.max_files = settings.max_artifact_files
        self.temp_dir = temp_dir or (Path(settings.workdir) if settings.workdir else None)
        host, secure = _parse_endpoint(self.endpoint_url)
        # Fewer, quicker retries than minio's default: the engine has its own retry policy
        # for actions, and an unreachable store should surface in seconds.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            maxsize=10,
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            host,
            access_key=access_key or settings.s3_access_key_id,
            secret_key=secret_key or settings.s3_secret_access_key,
            secure=secure,
            region=self.region,
            http_client=http,
        )

    # -- error mapping -------------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str, bucket: str, key: str | None = None) -> Iterator[None]:
        """Turn SDK and network errors into ArtifactError naming the object and endpoint."""
        where = s3_url(bucket, key) if key is not None else f"s3://{bucket}"
        try:
            yield
        except S3Error as exc:
            status = getattr(exc.response, "status", None)
            retryable = exc.code in _RETRYABLE_CODES or status in _RETRYABLE_STATUSES
            if exc.code in _MISSING_CODES:
                msg = f"{doing} {where}: not found ({exc.code})"
            else:
                msg = f"{doing} {where}: {exc.code}: {exc.message}"
            raise ArtifactError(msg, retryable=retryable) from exc
        except (ServerError, InvalidResponseError) as exc:
            raise ArtifactError(
                f"{doing} {where}: S3 endpoint {self.endpoint_url} failed: {exc}", retryable=True
            ) from exc
        except ValueError as exc:  # the SDK's own checks: invalid bucket or object names
            raise ArtifactError(f"{doing} {where}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise ArtifactError(
                f"{doing} {where}: cannot reach S3 endpoint {self.endpoint_url}: "
                f"{network_reason(exc)}",
                retryable=True,
            ) from exc

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="conveyor-artifact-", dir=self.temp_dir) as d:
            yield Path(d)

    # -- buckets -------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists; safe to call from many workers at once."""
        with self._errors("creating bucket", bucket):
            if self.client.bucket_exists(bucket):
                return
            try:
                self.client.make_bucket(bucket)
            except S3Error as exc:
                # Another worker won the race between our check and our create.
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise

    def enable_versioning(self, bucket: str) -> None:
        """Turn on versioning, so every attempt's object stays addressable by version id."""
        with self._errors("enabling versioning on", bucket):
            self.client.set_bucket_versioning(bucket, VersioningConfig(ENABLED))

    def object_url(self, bucket: str, key: str) -> str:
        """``s3://bucket/key``: how logs and execution details name an object."""
        return s3_url(bucket, key)

    def exists(self, bucket: str, key: str) -> bool:
        with self._errors("checking", bucket, key):
            try:
                self.client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES or exc.response.status == 404:
                    return False
                raise
        return True

    def stat(self, bucket: str, key: str) -> ArtifactRef | None:
        """The object at ``bucket``/``key`` as it stands (latest version), or None."""
        with self._errors("checking", bucket, key):
            try:
                obj = self.client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES or exc.response.status == 404:
                    return None
                raise
        return ArtifactRef(
            bucket=bucket,
            key=key,
            version_id=_version(obj.version_id),
            etag=(obj.etag or "").strip('"') or None,
            size=obj.size,
        )

    # -- upload --------------------------------------------------------------------

    def upload_dir(self, directory: Path, bucket: str, key: str) -> ArtifactRef:
        """Zip ``directory`` into a temp file and upload it as one artifact, in one go.

        Not limited: the limits are checked where an artifact is unpacked. Workers use
        :meth:`package_dir` and :meth:`upload_packed` instead.
        """
        with self._scratch() as scratch:
            archive = scratch / "artifact.zip"
            try:
                zip_dir(directory, archive)
            except UnsafeArchiveError as exc:
                raise ArtifactError(f"cannot package {directory}: {exc}") from exc
            return self.upload_file(archive, bucket, key, content_type=ZIP_CONTENT_TYPE)

    def package_dir(self, directory: Path, archive: Path, *, name: str | None = None) -> Packed:
        """Zip ``directory`` into ``archive`` within the artifact limits, and hash it.

        The limits are checked here too, so an action that made an artifact its consumers
        would refuse fails itself, naming the limit. Separate from :meth:`upload_packed` so a
        worker retrying an upload through an S3 outage zips and hashes once. ``name`` (the
        artifact's) is for the error message.
        """
        try:
            zip_dir(directory, archive, max_bytes=self.max_bytes, max_files=self.max_files)
        except UnsafeArchiveError as exc:
            what = f"output artifact {name!r}" if name else str(directory)
            raise ArtifactError(f"cannot package {what}: {exc}") from exc
        return Packed(path=archive, sha256=sha256_file(archive), size=archive.stat().st_size)

    def package_file(self, archive: Path, *, name: str) -> Packed:
        """A zip a provider made itself, checked like :meth:`package_dir`'s (entries and
        uncompressed bytes from its central directory, within the limits), and hashed."""
        try:
            check_zip(archive, max_bytes=self.max_bytes, max_files=self.max_files)
        except UnsafeArchiveError as exc:
            raise ArtifactError(f"cannot store output artifact {name!r}: {exc}") from exc
        return Packed(path=archive, sha256=sha256_file(archive), size=archive.stat().st_size)

    def package_verbatim(self, path: Path, *, name: str) -> Packed:
        """A file a provider hands over as the artifact itself (an S3 source's object):
        stored byte for byte, whatever it holds, so it is not checked as a zip; only the
        size limit applies. Whoever needs its contents unpacks it (:meth:`unpack`)."""
        size = path.stat().st_size
        if size > self.max_bytes:
            raise ArtifactError(
                f"cannot store output artifact {name!r}: it is {size} bytes; the limit is "
                f"{self.max_bytes} bytes ({MAX_BYTES_SETTING})"
            )
        kind = ZIP_CONTENT_TYPE if zipfile.is_zipfile(path) else OCTET_STREAM
        return Packed(path=path, sha256=sha256_file(path), size=size, content_type=kind)

    def upload_packed(self, packed: Packed, bucket: str, key: str) -> ArtifactRef:
        """Upload an archive made by :meth:`package_dir` (as often as it takes)."""
        return self.upload_file(
            packed.path, bucket, key, content_type=packed.content_type, sha256=packed.sha256
        )

    def upload_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        content_type: str = "application/octet-stream",
        *,
        sha256: str | None = None,
    ) -> ArtifactRef:
        """Upload one file as-is (build logs, reports), recording its SHA-256.

        ``sha256`` is the file's digest when the caller already has it (it is not checked).
        """
        digest = sha256 or sha256_file(path)
        size = path.stat().st_size
        with self._errors("uploading", bucket, key):
            result = self.client.fput_object(
                bucket,
                key,
                str(path),
                content_type=content_type,
                metadata={SHA256_METADATA: digest},
                part_size=PART_SIZE,
                num_parallel_uploads=PARALLEL_UPLOADS,
            )
        return ArtifactRef(
            bucket=bucket,
            key=key,
            version_id=_version(result.version_id),
            etag=result.etag,
            sha256=digest,
            size=size,
        )

    # -- download ------------------------------------------------------------------

    def download_file(
        self, bucket: str, key: str, dest: Path, version_id: str | None = None
    ) -> ArtifactRef:
        """Fetch one object to ``dest`` (no checks); returns what was fetched."""
        return self.fetch(bucket, key, dest, version_id)[0]

    def fetch(
        self, bucket: str, key: str, dest: Path, version_id: str | None = None
    ) -> tuple[ArtifactRef, str]:
        """One GET streamed to ``dest``, hashed on the way: (what was fetched, its SHA-256).

        A single request (the SDK's ``fget_object`` asks for the object's stat first), and
        the bytes are hashed as they arrive instead of read back from disk.
        """
        digest = hashlib.sha256()
        with self._errors("downloading", bucket, key):
            resp: Any = self.client.get_object(bucket, key, version_id=_version(version_id))
            try:
                with dest.open("wb") as fh:
                    for chunk in resp.stream(CHUNK_SIZE):
                        digest.update(chunk)
                        fh.write(chunk)
                headers = resp.headers
            except BaseException:
                resp.close()  # a half-read response: its connection cannot be reused
                raise
            resp.release_conn()  # read to the end: the connection goes back to the pool
        # A case-insensitive header dict: S3 servers differ in how they spell the header.
        ref = ArtifactRef(
            bucket=bucket,
            key=key,
            version_id=_version(headers.get("x-amz-version-id")) or version_id,
            etag=(headers.get("etag") or "").strip('"') or None,
            sha256=headers.get(f"x-amz-meta-{SHA256_METADATA}"),
            size=dest.stat().st_size,
        )
        return ref, digest.hexdigest()

    def download_verified(self, ref: ArtifactRef, dest: Path) -> None:
        """Fetch one artifact to ``dest`` byte for byte, and check it is what was stored.

        The expected digest is the one in ``ref`` (recorded by the uploader and kept by the
        engine), falling back to the object's metadata for refs made without one. The
        metadata alone proves little, since whoever can rewrite the object can rewrite it.
        """
        where = s3_url(ref.bucket, ref.key)
        fetched, actual = self.fetch(ref.bucket, ref.key, dest, ref.version_id)
        expected = ref.sha256 or fetched.sha256
        if expected is not None and actual != expected:
            raise ArtifactError(
                f"artifact {where} is corrupt or was modified: "
                f"SHA-256 {actual} does not match the recorded {expected}"
            )

    def unpack(self, archive: Path, directory: Path, *, name: str, where: str) -> None:
        """Extract a downloaded artifact into ``directory`` with the hardened extraction,
        within the limits. Artifacts move byte for byte, so one may not be a zip at all (an
        S3 source's tarball): that is said plainly, naming the artifact."""
        if not zipfile.is_zipfile(archive):
            raise ArtifactError(
                f"input artifact {name!r} ({where}) is not a zip archive, so its contents "
                "cannot be unpacked; actions that read an artifact's files (builds, Commands, "
                "deploys with Extract) need a zip"
            )
        try:
            extract_zip(archive, directory, max_bytes=self.max_bytes, max_files=self.max_files)
        except UnsafeArchiveError as exc:
            raise ArtifactError(f"refusing to extract artifact {where}: {exc}") from exc

    def download_to_dir(self, ref: ArtifactRef, directory: Path, *, name: str = "") -> None:
        """Fetch, verify and safely extract one artifact into ``directory`` (``name`` is the
        artifact's, for messages). The archive lands beside ``directory`` and is removed
        once extracted."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        archive = directory.parent / f".{directory.name}.download.zip"
        try:
            self.download_verified(ref, archive)
            where = s3_url(ref.bucket, ref.key)
            self.unpack(archive, directory, name=name or directory.name, where=where)
        finally:
            archive.unlink(missing_ok=True)
