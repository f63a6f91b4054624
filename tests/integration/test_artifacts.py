"""The artifact store against a real S3 endpoint (moto's server unless one is configured)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ArtifactError
from engine.settings import Settings
from tests.integration._s3_local import ACCESS_KEY, REGION, SECRET_KEY, s3_endpoint
from workers.artifacts import ArtifactRef, ArtifactStore, artifact_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_endpoint() as url:
        yield url


def make_store(endpoint: str, **limits: int) -> ArtifactStore:
    settings = Settings(
        s3_endpoint_url=endpoint,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        s3_region=REGION,
        **limits,  # type: ignore[arg-type]
    )
    return ArtifactStore(settings)


@pytest.fixture
def store(endpoint: str) -> ArtifactStore:
    return make_store(endpoint)


@pytest.fixture
def bucket(store: ArtifactStore) -> str:
    name = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(name)
    return name


def make_tree(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "README.md").write_text("# hello\n")
    (root / "src" / "pkg" / "data.bin").write_bytes(bytes(range(256)) * 4096)
    return root / "src"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_round_trip(store: ArtifactStore, bucket: str, tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    key = artifact_key("my-pipeline", "SourceOutput", "ae-1", 1)
    ref = store.upload_dir(src, bucket, key)

    assert ref.bucket == bucket and ref.key == key
    assert ref.sha256 and len(ref.sha256) == 64
    assert ref.size and ref.size > 0
    assert ref.s3_location() == {"bucket": bucket, "key": key}
    assert store.exists(bucket, key)
    assert not store.exists(bucket, key + ".missing")
    assert store.object_url(bucket, key) == f"s3://{bucket}/{key}"

    # The ref survives serialisation (the engine keeps it in Redis as JSON).
    again = ArtifactRef.model_validate_json(ref.model_dump_json())
    out = tmp_path / "out"
    store.download_to_dir(again, out)
    assert tree(out) == tree(src)


def test_artifact_key_is_deterministic_and_truncated() -> None:
    pipeline, artifact = "a-very-long-pipeline-name-indeed", "BuildArtifactWithLongName"
    key = artifact_key(pipeline, artifact, "x1", 2)
    assert key == "a-very-long-pipeline/BuildArtifactWithLon/x1-2.zip"
    assert key == artifact_key(pipeline, artifact, "x1", 2)
    assert key != artifact_key(pipeline, artifact, "x1", 3)


def test_tampered_object_is_refused(store: ArtifactStore, bucket: str, tmp_path: Path) -> None:
    ref = store.upload_dir(make_tree(tmp_path), bucket, "p/a/tampered.zip")
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("README.md", "# replaced\n")
    store.client.put_object(bucket, ref.key, io.BytesIO(evil.getvalue()), len(evil.getvalue()))

    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match="SHA-256") as info:
        store.download_to_dir(ref, out)
    assert not info.value.retryable
    assert not (out / "README.md").exists()


def test_metadata_digest_is_used_without_one_in_the_ref(
    store: ArtifactStore, bucket: str, tmp_path: Path
) -> None:
    ref = store.upload_dir(make_tree(tmp_path), bucket, "p/a/meta.zip")
    fetched = store.download_file(bucket, ref.key, tmp_path / "copy.zip")
    assert fetched.sha256 == ref.sha256
    store.download_to_dir(ArtifactRef(bucket=bucket, key=ref.key), tmp_path / "out")
    assert (tmp_path / "out" / "README.md").exists()


def test_versioned_bucket_keeps_each_version(
    store: ArtifactStore, bucket: str, tmp_path: Path
) -> None:
    store.enable_versioning(bucket)
    src = tmp_path / "v"
    src.mkdir()
    (src / "version.txt").write_text("one")
    first = store.upload_dir(src, bucket, "p/a/versioned.zip")
    (src / "version.txt").write_text("two")
    second = store.upload_dir(src, bucket, "p/a/versioned.zip")

    assert first.version_id and second.version_id and first.version_id != second.version_id
    store.download_to_dir(first, tmp_path / "one")
    store.download_to_dir(second, tmp_path / "two")
    assert (tmp_path / "one" / "version.txt").read_text() == "one"
    assert (tmp_path / "two" / "version.txt").read_text() == "two"


def test_unsafe_artifact_is_refused(store: ArtifactStore, bucket: str, tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape.txt", "gotcha")
    ref = store.upload_file(archive, bucket, "p/a/evil.zip", content_type="application/zip")
    with pytest.raises(ArtifactError, match=r"escape\.txt"):
        store.download_to_dir(ref, tmp_path / "a" / "b" / "out")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "a" / "escape.txt").exists()


def test_limits_come_from_settings(endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = make_store(endpoint, max_artifact_files=1)
    ref = store.upload_dir(make_tree(tmp_path), bucket, "p/a/many.zip")
    with pytest.raises(ArtifactError, match="entries"):
        store.download_to_dir(ref, tmp_path / "out")
    small = make_store(endpoint, max_artifact_bytes=1000)
    with pytest.raises(ArtifactError, match="limit"):
        small.download_to_dir(ref, tmp_path / "out2")


def test_missing_object(store: ArtifactStore, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=f"s3://{bucket}/nope.zip") as info:
        store.download_to_dir(ArtifactRef(bucket=bucket, key="nope.zip"), tmp_path / "out")
    assert not info.value.retryable


def test_unreachable_endpoint_is_retryable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = ArtifactStore(
        endpoint_url=f"http://127.0.0.1:{port}", access_key="k", secret_key="s", region=REGION
    )
    with pytest.raises(ArtifactError, match=f"127.0.0.1:{port}") as info:
        store.exists("some-bucket", "key")
    assert info.value.retryable


def test_ensure_bucket_is_idempotent_and_race_safe(store: ArtifactStore) -> None:
    name = f"conveyor-race-{uuid.uuid4().hex[:12]}"
    errors: list[BaseException] = []

    def create() -> None:
        try:
            store.ensure_bucket(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.ensure_bucket(name)
    assert store.client.bucket_exists(name)


def test_upload_file_for_logs(store: ArtifactStore, bucket: str, tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("line 1\nline 2\n")
    ref = store.upload_file(log, bucket, "logs/build.log", content_type="text/plain")
    assert ref.size == log.stat().st_size
    store.download_file(bucket, "logs/build.log", tmp_path / "copy.log", ref.version_id)
    assert (tmp_path / "copy.log").read_text() == "line 1\nline 2\n"


# A fresh interpreter, so the peak RSS it reports is this transfer's and nothing else's.
_LARGE_TRANSFER = textwrap.dedent(
    """
    import hashlib, json, os, resource, sys
    from pathlib import Path
    import psutil
    from workers.artifacts import ArtifactStore

    endpoint, bucket, root, size_mb = sys.argv[1:5]
    root = Path(root)
    store = ArtifactStore(endpoint_url=endpoint, access_key="k", secret_key="s",
                          region="us-east-1")
    store.ensure_bucket(bucket)
    src = root / "src"
    src.mkdir()
    digest = hashlib.sha256()
    seed = os.urandom(1024 * 1024)
    with open(src / "big.bin", "wb") as f:
        for i in range(int(size_mb)):
            # Random-ish and incompressible, without holding more than a chunk.
            chunk = hashlib.sha256(seed + i.to_bytes(4, "big")).digest() * 32768
            chunk = bytes(a ^ b for a, b in zip(chunk[:4096], seed[:4096])) + seed[4096:]
            seed = chunk
            digest.update(chunk)
            f.write(chunk)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_before = psutil.Process().memory_info().rss
    ref = store.upload_dir(src, bucket, "large/big.zip")
    store.download_to_dir(ref, root / "out")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    check = hashlib.sha256()
    with open(root / "out" / "big.bin", "rb") as f:
        while block := f.read(1024 * 1024):
            check.update(block)
    print(json.dumps({
        "baseline": baseline, "rss_before": rss_before, "peak": peak,
        "size": ref.size, "same": check.hexdigest() == digest.hexdigest(),
    }))
    """
)


def test_large_artifact_memory_stays_bounded(endpoint: str, tmp_path: Path) -> None:
    size_mb = 150
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _LARGE_TRANSFER,
            endpoint,
            f"conveyor-large-{uuid.uuid4().hex[:8]}",
            str(tmp_path),
            str(size_mb),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["same"]
    assert stats["size"] > size_mb * 1024 * 1024 * 0.9  # really incompressible
    growth = stats["peak"] - max(stats["baseline"], stats["rss_before"])
    # Bounded by the multipart parts in memory (~4 x 16 MiB, measured ~63 MiB), not by
    # the artifact: holding it whole even once would add 150 MB.
    assert growth < 100 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.1f} MiB"
