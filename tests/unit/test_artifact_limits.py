"""Every provider that unpacks or packs something honours the artifact limits from settings
(``CONVEYOR_MAX_ARTIFACT_BYTES`` / ``_FILES``, handed to providers on the Job), and says
which limit it hit. Small crafted zips and small limits; S3 is a stand-in object here (the
providers' S3 paths against a real endpoint are in tests/integration)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from engine.errors import ArtifactError
from engine.settings import Settings
from providers import s3_deploy, s3_source
from providers.base import ActionFailed, Job, S3Access
from providers.codebuild import CodeBuild, CodeBuildConfig
from providers.s3_deploy import S3Deploy, S3DeployConfig
from providers.s3_source import S3Source, S3SourceConfig
from providers.ziputil import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    UnsafeArchiveError,
    check_tree,
    zip_dir,
)
from workers.artifacts import ArtifactStore

MAX_BYTES = 100_000
MAX_FILES = 10


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


BOMB = zip_of({"bomb.bin": b"\0" * 2_000_000})  # ~2 KB that expands to 2 MB
MANY = zip_of({f"f{i:03}.txt": b"x" for i in range(MAX_FILES + 5)})


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0  # bytes the caller took from the response
        self.closed = False

    def iter_chunks(self, size: int) -> Any:
        for i in range(0, len(self.data), size):
            self.read += len(self.data[i : i + size])
            yield self.data[i : i + size]

    def close(self) -> None:
        self.closed = True


class FakeS3:
    """head_object / get_object / head_bucket / put_object / upload_file of one bucket, in
    memory."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.gets: list[str] = []
        self.uploaded: dict[str, bytes] = {}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        return {"ETag": '"abc"', "ContentLength": len(self.objects[Key]), "VersionId": "v1"}

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.gets.append(Key)
        self.body = Body(self.objects[Key])
        return {
            "Body": self.body,
            "ETag": '"abc"',
            "ContentLength": len(self.objects[Key]),
            "VersionId": "v1",
        }

    def head_bucket(self, Bucket: str) -> None:
        return None

    def upload_file(self, path: str, bucket: str, key: str, **_: Any) -> None:
        self.uploaded[key] = Path(path).read_bytes()

    def put_object(self, Bucket: str, Key: str, Body: Any, **_: Any) -> None:
        self.uploaded[Key] = Body.read()


def job(tmp_path: Path, config: Any, **kw: Any) -> Job:
    outputs = kw.pop("outputs", {"Out": tmp_path / "out"})
    for d in outputs.values():
        d.mkdir(parents=True, exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    return Job(
        pipeline_name="p",
        execution_id="e",
        stage_name="S",
        action_name="A",
        attempt=1,
        configuration=config,
        variables={},
        inputs=kw.pop("inputs", {}),
        outputs=outputs,
        workdir=tmp_path / "work",
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:9", "k", "s", "us-east-1"),
        max_artifact_bytes=kw.pop("max_bytes", MAX_BYTES),
        max_artifact_files=kw.pop("max_files", MAX_FILES),
        **kw,
    )


def test_the_job_defaults_are_the_settings_defaults() -> None:
    settings = Settings()
    limits = (settings.max_artifact_bytes, settings.max_artifact_files)
    assert limits == (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
    fields = Job.__dataclass_fields__
    assert fields["max_artifact_bytes"].default == settings.max_artifact_bytes
    assert fields["max_artifact_files"].default == settings.max_artifact_files


# --- S3 source -----------------------------------------------------------------------------


def run_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: FakeS3, key: str) -> Any:
    monkeypatch.setattr(s3_source, "s3_client", lambda access: s3)
    config = S3SourceConfig(S3Bucket="src", S3ObjectKey=key)
    return S3Source().run(job(tmp_path, config))


@pytest.mark.parametrize("body", [BOMB, MANY], ids=["bomb", "many-files"])
def test_s3_source_hands_on_the_object_and_its_consumers_refuse_to_unpack_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    """The source does not unpack (its artifact is the object as stored); the limits hold
    where an action unpacks it, and the refusal names the limit and the artifact."""
    result = run_source(tmp_path, monkeypatch, FakeS3({"app.zip": body}), "app.zip")
    assert result.verbatim_outputs["Out"].read_bytes() == body
    assert list((tmp_path / "out").iterdir()) == []  # nothing unpacked
    store = ArtifactStore(Settings(max_artifact_files=MAX_FILES, max_artifact_bytes=MAX_BYTES))
    with pytest.raises(ArtifactError) as info:
        store.unpack(
            result.verbatim_outputs["Out"],
            tmp_path / "in",
            name="SourceOutput",
            where="s3://artifacts/p/SourceOutput/x",
        )
    assert "refusing to extract artifact s3://artifacts/p/SourceOutput/x" in info.value.message
    assert "(CONVEYOR_MAX_ARTIFACT_" in info.value.message
    assert not info.value.retryable


def test_unpacking_an_artifact_that_is_not_a_zip_names_it(tmp_path: Path) -> None:
    tarball = tmp_path / "release.tar.gz"
    tarball.write_bytes(b"\x1f\x8b\x08\x00 not a zip")
    with pytest.raises(ArtifactError) as info:
        ArtifactStore(Settings()).unpack(tarball, tmp_path / "in", name="Src", where="s3://b/k")
    assert info.value.message.startswith("input artifact 'Src' (s3://b/k) is not a zip archive")
    assert not (tmp_path / "in").exists()


def test_the_worker_refuses_to_store_a_verbatim_output_over_the_byte_limit(
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (MAX_BYTES + 1))
    store = ArtifactStore(Settings(max_artifact_files=MAX_FILES, max_artifact_bytes=MAX_BYTES))
    with pytest.raises(ArtifactError) as info:
        store.package_verbatim(big, name="SourceOutput")
    assert info.value.message.startswith("cannot store output artifact 'SourceOutput'")
    assert f"the limit is {MAX_BYTES} bytes (CONVEYOR_MAX_ARTIFACT_BYTES)" in info.value.message
    within = tmp_path / "ok.bin"
    within.write_bytes(b"\x00" * 10)
    packed = store.package_verbatim(within, name="SourceOutput")
    assert (packed.size, packed.content_type) == (10, "application/octet-stream")


def test_s3_source_refuses_a_big_plain_object_before_fetching_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = FakeS3({"big.bin": b"x" * (MAX_BYTES + 1)})
    with pytest.raises(ActionFailed) as info:
        run_source(tmp_path, monkeypatch, s3, "big.bin")
    assert f"is {MAX_BYTES + 1} bytes; the limit is {MAX_BYTES} bytes" in info.value.message
    assert "CONVEYOR_MAX_ARTIFACT_BYTES" in info.value.message
    assert s3.body.read == 0 and s3.body.closed  # refused on its headers, body never read


# --- CodeBuild -----------------------------------------------------------------------------


def test_codebuild_fails_an_output_artifact_over_the_limits(tmp_path: Path) -> None:
    src = tmp_path / "in" / "SourceOutput"
    src.mkdir(parents=True)
    (src / "buildspec.yml").write_text(
        dedent(
            f"""
            version: 0.2
            phases:
              build:
                commands:
                  - mkdir -p dist && for i in $(seq 1 {MAX_FILES + 1}); do echo $i > dist/$i; done
            artifacts:
              base-directory: dist
              files: ['**/*']
            """
        )
    )
    config = CodeBuildConfig(ProjectName="p")
    result = CodeBuild().run(job(tmp_path, config, inputs={"SourceOutput": src}))
    assert not result.succeeded
    assert result.summary is not None
    assert "Build failed in phase UPLOAD_ARTIFACTS: output artifact Out is too large" in (
        result.summary
    )
    assert f"the limit is {MAX_FILES} files (CONVEYOR_MAX_ARTIFACT_FILES)" in result.summary


# --- S3 deploy -----------------------------------------------------------------------------


def deploy_input(tmp_path: Path, files: int, size: int = 1) -> Path:
    d = tmp_path / "in" / "BuildOutput"
    d.mkdir(parents=True)
    for i in range(files):
        (d / f"f{i}").write_bytes(b"x" * size)
    return d


def test_s3_deploy_refuses_an_input_over_the_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = FakeS3()
    monkeypatch.setattr(s3_deploy, "s3_client", lambda access: s3)
    src = deploy_input(tmp_path, MAX_FILES + 1)
    config = S3DeployConfig(BucketName="site", Extract="true")
    with pytest.raises(ActionFailed) as info:
        S3Deploy().run(job(tmp_path, config, inputs={"BuildOutput": src}, outputs={}))
    assert f"the limit is {MAX_FILES} files (CONVEYOR_MAX_ARTIFACT_FILES)" in info.value.message
    assert s3.uploaded == {}


def test_s3_deploy_refuses_an_input_over_the_byte_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = FakeS3()
    monkeypatch.setattr(s3_deploy, "s3_client", lambda access: s3)
    src = deploy_input(tmp_path, 2, size=MAX_BYTES // 2 + 1)
    config = S3DeployConfig(BucketName="site", Extract="true")
    with pytest.raises(ActionFailed) as info:
        S3Deploy().run(job(tmp_path, config, inputs={"BuildOutput": src}, outputs={}))
    assert f"the limit is {MAX_BYTES} bytes (CONVEYOR_MAX_ARTIFACT_BYTES)" in info.value.message
    assert s3.uploaded == {}


def test_s3_deploy_after_a_transient_failure_uploads_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker runs the provider again after a retryable failure: files the first run
    uploaded are not uploaded again."""

    class DropsOut(FakeS3):
        """The endpoint drops out once, at the third file."""

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []
            self.dropped = False

        def put_object(self, Bucket: str, Key: str, Body: Any, **kw: Any) -> None:
            if Key == "f2" and not self.dropped:
                self.dropped = True
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/site/f2")
            self.calls.append(Key)
            super().put_object(Bucket, Key, Body, **kw)

    s3 = DropsOut()
    monkeypatch.setattr(s3_deploy, "s3_client", lambda access: s3)
    src = deploy_input(tmp_path, 4)
    config = S3DeployConfig(BucketName="site", Extract="true")
    the_job = job(tmp_path, config, inputs={"BuildOutput": src}, outputs={})
    with pytest.raises(ActionFailed) as info:
        S3Deploy().run(the_job)
    assert info.value.retryable
    assert "cannot reach S3 endpoint http://127.0.0.1:9" in info.value.message
    assert S3Deploy().run(the_job).summary == "Deployed 4 files to s3://site/"
    assert s3.calls == ["f0", "f1", "f2", "f3"]


# --- the worker's own packing and the shared helpers ------------------------------------------


def test_the_worker_refuses_to_package_an_output_over_the_limits(tmp_path: Path) -> None:
    store = ArtifactStore(Settings(max_artifact_files=MAX_FILES, max_artifact_bytes=MAX_BYTES))
    src = deploy_input(tmp_path, MAX_FILES + 1)
    with pytest.raises(ArtifactError) as info:
        store.package_dir(src, tmp_path / "a.zip", name="BuildOutput")
    assert info.value.message.startswith("cannot package output artifact 'BuildOutput': ")
    assert "(CONVEYOR_MAX_ARTIFACT_FILES)" in info.value.message
    assert not info.value.retryable


def test_zip_dir_and_check_tree_stop_at_the_limits(tmp_path: Path) -> None:
    src = deploy_input(tmp_path, 3, size=400)
    assert zip_dir(src, tmp_path / "ok.zip", max_files=3, max_bytes=1200) == 3
    assert check_tree(src, max_files=3, max_bytes=1200).files == 3
    with pytest.raises(UnsafeArchiveError, match="the limit is 2 files"):
        zip_dir(src, tmp_path / "a.zip", max_files=2)
    with pytest.raises(UnsafeArchiveError, match="the limit is 1000 bytes"):
        zip_dir(src, tmp_path / "b.zip", max_bytes=1000)
    with pytest.raises(UnsafeArchiveError, match="the limit is 2 files"):
        check_tree(src, max_files=2)
    with pytest.raises(UnsafeArchiveError, match="the limit is 1000 bytes"):
        check_tree(src, max_bytes=1000)
