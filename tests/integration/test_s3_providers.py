"""Source/AWS/S3 and Deploy/AWS/S3 against a real S3 endpoint."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from providers import BUILTIN_PROVIDERS, default_registry
from providers.base import ActionFailed, ActionTypeId, Category, Job, Provider, S3Access
from providers.manual_approval import ManualApproval, ManualApprovalConfig
from providers.s3_deploy import S3Deploy, S3DeployConfig
from providers.s3_source import S3Source, S3SourceConfig
from tests.integration._s3_local import ACCESS_KEY, REGION, SECRET_KEY, s3_endpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def access() -> Iterator[S3Access]:
    with s3_endpoint() as url:
        yield S3Access(url, ACCESS_KEY, SECRET_KEY, REGION)


@pytest.fixture
def s3(access: S3Access) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint_url,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        region_name=access.region,
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"conveyor-user-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def make_job(
    tmp_path: Path,
    access: S3Access,
    provider: type[Provider],
    config: dict[str, Any],
    *,
    inputs: dict[str, Path] | None = None,
    input_files: dict[str, Path] | None = None,
    outputs: tuple[str, ...] = (),
) -> Job:
    out = {}
    for name in outputs:
        out[name] = tmp_path / "out" / name
        out[name].mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Stage",
        action_name="Action",
        attempt=1,
        configuration=provider.Config.model_validate(config),
        variables={},
        inputs=inputs or {},
        input_files=input_files or {},
        outputs=out,
        workdir=work,
        log=io.StringIO(),
        s3=access,
    )


def output_object(result: Any, name: str = "SourceOutput") -> bytes:
    """The output artifact a source handed over byte for byte."""
    return bytes(result.verbatim_outputs[name].read_bytes())


def zip_files(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n).decode() for n in zf.namelist()}


def files_under(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


# -- Source/AWS/S3 ---------------------------------------------------------------------


def source_job(tmp_path: Path, access: S3Access, bucket: str, key: str) -> Job:
    config = {"S3Bucket": bucket, "S3ObjectKey": key, "PollForSourceChanges": False}
    return make_job(tmp_path, access, S3Source, config, outputs=("SourceOutput",))


def test_source_zip_in_unversioned_bucket(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    body = zip_bytes({"buildspec.yml": "version: 0.2\n", "src/main.py": "print(1)\n"})
    put = s3.put_object(
        Bucket=bucket,
        Key="app.zip",
        Body=body,
        Metadata={"codepipeline-artifact-revision-summary": "release 1.2"},
    )
    job = source_job(tmp_path, access, bucket, "app.zip")
    result = S3Source().run(job)

    etag = put["ETag"].strip('"')
    assert result.succeeded
    assert result.revision_id == etag
    assert result.revision_summary == "release 1.2"
    assert result.output_variables == {"ETag": etag, "BucketName": bucket, "ObjectKey": "app.zip"}
    assert output_object(result) == body  # the object itself, not unpacked and re-zipped
    assert files_under(job.outputs["SourceOutput"]) == {}
    assert job.configuration.PollForSourceChanges == "false"


def test_source_versioned_bucket_uses_current_version(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="app.zip", Body=zip_bytes({"v.txt": "one"}))
    second = s3.put_object(Bucket=bucket, Key="app.zip", Body=zip_bytes({"v.txt": "two"}))

    job = source_job(tmp_path, access, bucket, "app.zip")
    result = S3Source().run(job)

    assert result.revision_id == second["VersionId"]
    assert result.output_variables["VersionId"] == second["VersionId"]
    assert result.output_variables["ETag"] == second["ETag"].strip('"')
    assert zip_files(output_object(result)) == {"v.txt": "two"}


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("config/settings.json", b'{"a": 1}'),
        ("release.tar.gz", bytes(range(256)) * 7),
        ("looks-like.zip", b"not a zip at all"),  # refused by nobody: it is what was stored
        ("evil.zip", zip_bytes({"../../escape": "x"})),  # unpacked (and refused) by consumers
    ],
)
def test_source_object_is_the_artifact_byte_for_byte(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str, key: str, body: bytes
) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    result = S3Source().run(source_job(tmp_path, access, bucket, key))
    assert output_object(result) == body
    assert not (tmp_path / "escape").exists()


def test_source_object_over_the_size_limit_is_refused_before_download(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="big.bin", Body=b"x" * 2048)
    job = source_job(tmp_path, access, bucket, "big.bin")
    job.max_artifact_bytes = 1024
    with pytest.raises(ActionFailed, match="2048 bytes; the limit is 1024 bytes"):
        S3Source().run(job)


def test_source_missing_key_and_bucket(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    with pytest.raises(ActionFailed, match=f"s3://{bucket}/missing.zip does not exist"):
        S3Source().run(source_job(tmp_path, access, bucket, "missing.zip"))
    nobucket = f"conveyor-absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ActionFailed, match=f"bucket s3://{nobucket} does not exist"):
        S3Source().run(source_job(tmp_path / "2", access, nobucket, "app.zip"))


def test_source_config_validation() -> None:
    with pytest.raises(ValidationError, match="S3ObjectKey"):
        S3SourceConfig.model_validate({"S3Bucket": "b"})
    with pytest.raises(ValidationError, match="true"):
        S3SourceConfig.model_validate(
            {"S3Bucket": "b", "S3ObjectKey": "k", "PollForSourceChanges": "x"}
        )


# -- Deploy/AWS/S3 ---------------------------------------------------------------------


def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>hi</h1>")
    (root / "css" / "app.css").write_text("body {}")
    return root


def test_deploy_extract_true_with_prefix(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    config = {
        "BucketName": bucket,
        "Extract": "true",
        "ObjectKey": "/web/v1/",
        "CacheControl": "max-age=60",
        "CannedACL": "public-read",
    }
    job = make_job(tmp_path, access, S3Deploy, config, inputs={"BuildOutput": site(tmp_path)})
    result = S3Deploy().run(job)

    assert result.succeeded
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["web/v1/css/app.css", "web/v1/index.html"]
    head = s3.head_object(Bucket=bucket, Key="web/v1/index.html")
    assert head["ContentType"] == "text/html"
    assert head["CacheControl"] == "max-age=60"
    body = s3.get_object(Bucket=bucket, Key="web/v1/css/app.css")["Body"].read()
    assert body == b"body {}"


def test_deploy_extract_true_without_prefix(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str
) -> None:
    config = {"BucketName": bucket, "Extract": True}
    job = make_job(tmp_path, access, S3Deploy, config, inputs={"BuildOutput": site(tmp_path)})
    S3Deploy().run(job)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["css/app.css", "index.html"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (zip_bytes({"index.html": "<h1>hi</h1>", "css/app.css": "body {}"}), "application/zip"),
        (b"\x1f\x8b\x08 a tarball, or anything", "application/octet-stream"),
    ],
)
def test_deploy_extract_false_writes_the_artifact_unchanged(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str, data: bytes, content_type: str
) -> None:
    config = {"BucketName": bucket, "Extract": "false", "ObjectKey": "releases/site.zip"}
    artifact = tmp_path / "artifact"
    artifact.write_bytes(data)
    assert not S3Deploy.needs_contents(S3Deploy.Config.model_validate(config))
    job = make_job(tmp_path, access, S3Deploy, config, input_files={"BuildOutput": artifact})
    S3Deploy().run(job)

    got = s3.get_object(Bucket=bucket, Key="releases/site.zip")
    assert got["Body"].read() == data
    assert got["ContentType"] == content_type


def test_deploy_missing_bucket_fails_without_creating_it(
    tmp_path: Path, access: S3Access, s3: Any
) -> None:
    name = f"conveyor-absent-{uuid.uuid4().hex[:8]}"
    config = {"BucketName": name, "Extract": "true"}
    job = make_job(tmp_path, access, S3Deploy, config, inputs={"BuildOutput": site(tmp_path)})
    with pytest.raises(ActionFailed, match=f"s3://{name} does not exist"):
        S3Deploy().run(job)
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert name not in names


def test_deploy_config_validation() -> None:
    with pytest.raises(ValidationError, match='ObjectKey is required when Extract is "false"'):
        S3DeployConfig.model_validate({"BucketName": "b", "Extract": "false"})
    with pytest.raises(ValidationError, match="Extract"):
        S3DeployConfig.model_validate({"BucketName": "b"})
    with pytest.raises(ValidationError, match="CannedACL"):
        S3DeployConfig.model_validate({"BucketName": "b", "Extract": "true", "CannedACL": "open"})
    assert S3DeployConfig.model_validate({"BucketName": "b", "Extract": False, "ObjectKey": "k"})


# -- Registry and approval -------------------------------------------------------------


def test_default_registry_has_every_builtin() -> None:
    registry = default_registry(entry_points=False)
    assert set(registry) == set(BUILTIN_PROVIDERS)
    build = ActionTypeId(category=Category.BUILD, owner="AWS", provider="CodeBuild", version="1")
    test = ActionTypeId(category=Category.TEST, owner="AWS", provider="CodeBuild", version="1")
    assert registry.get(build) is not registry.get(test)
    assert registry.get(build) is not None and registry.get(test) is not None


def test_manual_approval_is_declared_not_run(tmp_path: Path, access: S3Access) -> None:
    assert ManualApproval.runs_on_worker is False
    with pytest.raises(ValidationError):
        ManualApprovalConfig.model_validate({"CustomData": "x" * 501})
    job = make_job(tmp_path, access, ManualApproval, {"CustomData": "Please review"})
    with pytest.raises(ActionFailed, match="engine"):
        ManualApproval().run(job)


@pytest.mark.parametrize(
    ("config", "culprit"),
    [
        ({"Extract": "false", "ObjectKey": "releases/site\n.zip"}, "ObjectKey"),
        ({"Extract": "true", "ObjectKey": "web\r\nv1"}, "ObjectKey"),
        ({"Extract": "true"}, "file name in the input artifact"),
    ],
)
def test_deploy_key_with_a_line_break_fails_before_anything_is_written(
    tmp_path: Path, access: S3Access, s3: Any, bucket: str, config: dict[str, str], culprit: str
) -> None:
    root = site(tmp_path)
    if culprit.startswith("file"):
        (root / "zz-bad\nname.html").write_text("x")  # sorted last: the others come first
    archive = tmp_path / "artifact.zip"
    archive.write_bytes(zip_bytes({"index.html": "x"}))
    job = make_job(
        tmp_path,
        access,
        S3Deploy,
        {"BucketName": bucket, **config},
        inputs={"BuildOutput": root},
        input_files={"BuildOutput": archive},
    )
    with pytest.raises(ActionFailed, match=f"{culprit} .* contains a line break"):
        S3Deploy().run(job)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
