"""Source/AWS/ECR against a real OCI registry (Debian's docker-registry) on loopback, images
pushed with python-dxf; and one pipeline run on real worker processes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from engine import keys
from engine.definition import validate
from engine.definition.loading import normalize
from engine.errors import ServiceUnavailableError
from engine.service import Service
from engine.store import Store
from providers import default_registry
from providers.base import ActionFailed, ActionTypeId, Category, Job, S3Access
from providers.ecr_source import IMAGE_DETAIL_FILE, EcrSource, EcrSourceConfig
from providers.oci_registry import DOCKER_MANIFEST, RegistrySettings, load_settings
from tests.helpers import wait_for
from tests.oci_registry import Registry, push_image, push_index, start_registry
from tests.stack import action, start_stack, unique, wait_status
from workers.devstack import free_port
from workers.image_triggers import EcrImagePoller
from workers.triggers import POLL_TRIGGER, poll_once

pytestmark = pytest.mark.integration

PASSWORD = "pw-Zq81-never-shown"
USER = "deployer"
UNUSED_S3 = S3Access("http://127.0.0.1:9", "unused", "unused", "us-east-1")


def _start(workdir: Path, **kwargs: Any) -> Registry:
    """A registry, or FAIL (never skip) saying what to install."""
    try:
        return start_registry(workdir, **kwargs)
    except ServiceUnavailableError as exc:
        pytest.fail(exc.message, pytrace=False)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """TLS with a self-signed certificate and htpasswd (bcrypt) basic auth."""
    reg = _start(tmp_path_factory.mktemp("auth-registry"), tls=True, credentials=(USER, PASSWORD))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """TLS and token auth: a ``Bearer realm=…`` challenge sends clients to a token service."""
    reg = _start(
        tmp_path_factory.mktemp("token-registry"),
        tls=True,
        credentials=(USER, PASSWORD),
        token_auth=True,
    )
    yield reg
    reg.stop()


def _job(tmp_path: Path, config: dict[str, Any], *, revision: str | None = None) -> Job:
    out = tmp_path / "out" / "ImageOutput"
    out.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    return Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Source",
        action_name="Image",
        attempt=1,
        configuration=EcrSourceConfig.model_validate(config),
        variables={},
        inputs={},
        outputs={"ImageOutput": out},
        workdir=work,
        log=io.StringIO(),
        s3=UNUSED_S3,
        revision=revision,
    )


def _detail(job: Job) -> dict[str, Any]:
    (files,) = [list(d.iterdir()) for d in job.outputs.values()]
    assert [f.name for f in files] == [IMAGE_DETAIL_FILE]
    parsed: dict[str, Any] = json.loads(files[0].read_text())
    return parsed


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_registered_under_codepipelines_action_type() -> None:
    key = ActionTypeId(category=Category.SOURCE, owner="AWS", provider="ECR", version="1")
    assert default_registry(entry_points=False).get(key) is EcrSource


def test_config_defaults_to_latest_and_names_bad_values() -> None:
    assert EcrSourceConfig.model_validate({"RepositoryName": "team/app"}).ImageTag == "latest"
    with pytest.raises(ValidationError) as bad_repo:
        EcrSourceConfig.model_validate({"RepositoryName": "Team/App"})
    assert bad_repo.value.errors()[0]["loc"] == ("RepositoryName",)
    assert "'Team/App' is not a repository name" in str(bad_repo.value)
    with pytest.raises(ValidationError) as bad_tag:
        EcrSourceConfig.model_validate({"RepositoryName": "app", "ImageTag": "-x"})
    assert bad_tag.value.errors()[0]["loc"] == ("ImageTag",)
    with pytest.raises(ValidationError, match="RegistryUrl"):
        EcrSourceConfig.model_validate({"RepositoryName": "app", "RegistryUrl": "x"})


def test_settings_refuse_a_url_with_credentials_or_a_path() -> None:
    with pytest.raises(ValidationError, match="credentials do not belong in the URL"):
        RegistrySettings(registry_url="https://me:secret@reg.example")
    with pytest.raises(ValidationError, match="without a path"):
        RegistrySettings(registry_url="https://reg.example/v2")
    with pytest.raises(ValidationError, match="not an http:// or https:// URL"):
        RegistrySettings(registry_url="reg.example:5000")


def test_bad_worker_settings_fail_the_action_without_echoing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ECR_REGISTRY_URL", "https://me:hunter2@reg.example")
    monkeypatch.setenv("CONVEYOR_ECR_TIMEOUT_SECONDS", "-1")
    with pytest.raises(ActionFailed) as bad:
        EcrSource().run(_job(tmp_path, {"RepositoryName": "app"}))
    assert bad.value.message == (
        "invalid registry settings: CONVEYOR_ECR_REGISTRY_URL: credentials do not belong in "
        "the URL: use CONVEYOR_ECR_USERNAME and CONVEYOR_ECR_PASSWORD_FILE; "
        "CONVEYOR_ECR_TIMEOUT_SECONDS: Input should be greater than 0"
    )
    # Beat keeps going: it polls no ECR source and says why.
    assert EcrImagePoller.from_env().settings is None


def test_tag_becomes_image_detail_variables_and_revision(
    tmp_path: Path, registry: Registry
) -> None:
    repo = f"team/{unique('app')}"
    digest, manifest = push_image(registry, repo, "v1.2", content=b"layer one")
    assert digest == _sha(manifest)
    settings = RegistrySettings(registry_url=registry.url, registry_id="123456789012")
    job = _job(tmp_path, {"RepositoryName": repo, "ImageTag": "v1.2"})

    result = EcrSource(settings).run(job)

    sizes = json.loads(manifest)
    size = sizes["layers"][0]["size"] + sizes["config"]["size"]
    detail = _detail(job)
    assert detail == {
        "ImageSizeInBytes": str(size),
        "ImageDigest": digest,
        "Version": "1.0",
        "ImagePushedAt": "Mon May 06 07:08:09 UTC 2024",  # the image's build time
        "RegistryId": "123456789012",
        "RepositoryName": repo,
        "ImageURI": f"{registry.host}/{repo}@{digest}",
        "ImageTags": ["v1.2"],
    }
    assert list(detail) == [  # CodePipeline's key order
        "ImageSizeInBytes",
        "ImageDigest",
        "Version",
        "ImagePushedAt",
        "RegistryId",
        "RepositoryName",
        "ImageURI",
        "ImageTags",
    ]
    assert result.succeeded
    assert result.revision_id == digest
    assert result.output_variables == {
        "RegistryId": "123456789012",
        "RepositoryName": repo,
        "ImageTag": "v1.2",
        "ImageDigest": digest,
        "ImageURI": f"{registry.host}/{repo}:v1.2",
    }
    assert result.summary == f"Resolved {repo}:v1.2 to {digest} at {registry.url}"


def test_a_second_push_moves_the_digest(tmp_path: Path, registry: Registry) -> None:
    repo = unique("moving")
    first, _ = push_image(registry, repo, "latest", content=b"release 1")
    one = EcrSource(RegistrySettings(registry_url=registry.url)).run(
        _job(tmp_path / "1", {"RepositoryName": repo})
    )
    second, _ = push_image(registry, repo, "latest", content=b"release 2")
    job = _job(tmp_path / "2", {"RepositoryName": repo})
    two = EcrSource(RegistrySettings(registry_url=registry.url)).run(job)

    assert first != second
    assert (one.revision_id, two.revision_id) == (first, second)
    assert two.output_variables["ImageDigest"] == second
    assert _detail(job)["ImageURI"].endswith(f"/{repo}@{second}")


def test_a_pinned_digest_is_read_even_after_the_tag_moved(
    tmp_path: Path, registry: Registry
) -> None:
    repo = unique("pinned")
    first, _ = push_image(registry, repo, "latest", content=b"detected by a trigger")
    push_image(registry, repo, "latest", content=b"pushed a moment later")
    job = _job(tmp_path, {"RepositoryName": repo}, revision=first)

    result = EcrSource(RegistrySettings(registry_url=registry.url)).run(job)

    assert result.revision_id == first
    assert _detail(job)["ImageTags"] == ["latest"]


def test_docker_manifests_and_oci_indexes(tmp_path: Path, registry: Registry) -> None:
    repo = unique("kinds")
    docker, manifest = push_image(
        registry, repo, "docker", content=b"docker layer", media_type=DOCKER_MANIFEST
    )
    index, sizes = push_index(registry, repo, "multi", {"amd64": b"a" * 10, "arm64": b"b" * 900})
    source = EcrSource(RegistrySettings(registry_url=registry.url))

    assert (
        source.run(_job(tmp_path / "d", {"RepositoryName": repo, "ImageTag": "docker"})).revision_id
        == docker
    )
    assert json.loads(manifest)["mediaType"] == DOCKER_MANIFEST
    job = _job(tmp_path / "i", {"RepositoryName": repo, "ImageTag": "multi"})
    result = source.run(job)
    # The index's own digest, as ECR reports a multi-platform image; its largest image's size.
    assert result.revision_id == index
    assert _detail(job)["ImageSizeInBytes"] == str(max(sizes))


def test_missing_tag_and_missing_repository_say_which(tmp_path: Path, registry: Registry) -> None:
    repo = unique("present")
    push_image(registry, repo, "v1", content=b"x")
    source = EcrSource(RegistrySettings(registry_url=registry.url))

    with pytest.raises(ActionFailed) as tag:
        source.run(_job(tmp_path / "t", {"RepositoryName": repo, "ImageTag": "v2"}))
    assert tag.value.message == (
        f"image tag 'v2' not found in repository '{repo}' at {registry.url}"
    )
    assert not tag.value.retryable
    with pytest.raises(ActionFailed) as missing:
        source.run(_job(tmp_path / "r", {"RepositoryName": "no/such-repo"}))
    assert missing.value.message == f"repository 'no/such-repo' not found at {registry.url}"


def test_unreachable_registry_is_retryable_and_no_registry_is_explained(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ActionFailed) as down:
        EcrSource(RegistrySettings(registry_url=url, timeout_seconds=2)).run(
            _job(tmp_path / "d", {"RepositoryName": "app"})
        )
    assert down.value.retryable
    assert down.value.message.startswith(f"the registry at {url} is unreachable (")
    with pytest.raises(ActionFailed, match="set CONVEYOR_ECR_REGISTRY_URL") as none:
        EcrSource(RegistrySettings(registry_url=None)).run(
            _job(tmp_path / "n", {"RepositoryName": "app"})
        )
    assert not none.value.retryable


def test_basic_auth_with_credentials_from_settings_and_files(
    tmp_path: Path, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = unique("private")
    digest, _ = push_image(auth_registry, repo, "v1", content=b"secret sauce")
    password_file = tmp_path / "registry-password"
    password_file.write_text(PASSWORD + "\n")
    assert auth_registry.ca_bundle is not None
    # The worker's way: every setting from the environment, the secret from a file.
    monkeypatch.setenv("CONVEYOR_ECR_REGISTRY_URL", auth_registry.url)
    monkeypatch.setenv("CONVEYOR_ECR_USERNAME", USER)
    monkeypatch.setenv("CONVEYOR_ECR_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("CONVEYOR_ECR_CA_BUNDLE", str(auth_registry.ca_bundle))
    job = _job(tmp_path / "ok", {"RepositoryName": repo, "ImageTag": "v1"})

    result = EcrSource().run(job)

    assert result.revision_id == digest
    assert _detail(job)["ImageURI"] == f"{auth_registry.host}/{repo}@{digest}"
    assert isinstance(job.log, io.StringIO)
    shown = [job.log.getvalue(), result.summary or "", json.dumps(result.output_variables)]
    shown.append(repr(load_settings()))
    assert not [text for text in shown if PASSWORD in text]

    password_file.write_text("not-the-password\n")
    with pytest.raises(ActionFailed) as refused:
        EcrSource().run(_job(tmp_path / "bad", {"RepositoryName": repo, "ImageTag": "v1"}))
    assert refused.value.message == (
        f"the registry at {auth_registry.url} refused the configured credentials for user "
        f"'{USER}' (HTTP 401) for repository '{repo}'"
    )
    assert "not-the-password" not in refused.value.message

    monkeypatch.delenv("CONVEYOR_ECR_USERNAME")
    monkeypatch.delenv("CONVEYOR_ECR_PASSWORD_FILE")
    with pytest.raises(ActionFailed, match="without credentials: set CONVEYOR_ECR_USERNAME"):
        EcrSource().run(_job(tmp_path / "anon", {"RepositoryName": repo, "ImageTag": "v1"}))

    monkeypatch.setenv("CONVEYOR_ECR_USERNAME", USER)
    monkeypatch.setenv("CONVEYOR_ECR_PASSWORD_FILE", str(password_file))
    password_file.write_text("\n")
    with pytest.raises(ActionFailed, match=r"CONVEYOR_ECR_PASSWORD_FILE \(.*\) is empty"):
        EcrSource().run(_job(tmp_path / "empty", {"RepositoryName": repo, "ImageTag": "v1"}))
    monkeypatch.setenv("CONVEYOR_ECR_PASSWORD_FILE", str(tmp_path / "missing-file"))
    with pytest.raises(
        ActionFailed, match=r"cannot read CONVEYOR_ECR_PASSWORD_FILE \(.*missing-file\)"
    ):
        EcrSource().run(_job(tmp_path / "gone", {"RepositoryName": repo, "ImageTag": "v1"}))


def test_bearer_token_auth_trades_credentials_for_a_pull_token(
    tmp_path: Path, token_registry: Registry
) -> None:
    tokens = token_registry.tokens
    assert tokens is not None and token_registry.ca_bundle is not None
    repo = unique("tokened")
    digest, _ = push_image(token_registry, repo, "v1", content=b"behind a token service")
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    settings = RegistrySettings(
        registry_url=token_registry.url,
        username=USER,
        password_file=password_file,
        ca_bundle=token_registry.ca_bundle,
    )
    asked = len(tokens.scopes)

    result = EcrSource(settings).run(
        _job(tmp_path / "ok", {"RepositoryName": repo, "ImageTag": "v1"})
    )

    assert result.revision_id == digest
    # Through the realm, for reading only.
    assert tokens.scopes[asked:] == [f"repository:{repo}:pull"]

    password_file.write_text("wrong")
    refused_before = tokens.refused
    with pytest.raises(ActionFailed) as refused:
        EcrSource(settings).run(_job(tmp_path / "bad", {"RepositoryName": repo, "ImageTag": "v1"}))
    assert tokens.refused == refused_before + 1
    assert refused.value.message == (
        f"the registry at {token_registry.url} refused the configured credentials for user "
        f"'{USER}' (HTTP 401) for repository '{repo}'"
    )


def test_a_ready_token_from_a_file(tmp_path: Path, token_registry: Registry) -> None:
    tokens = token_registry.tokens
    assert tokens is not None
    repo = unique("ready")
    digest, _ = push_image(token_registry, repo, "v1", content=b"read with a ready token")
    token_file = tmp_path / "token"
    settings = RegistrySettings(
        registry_url=token_registry.url,
        token_file=token_file,
        ca_bundle=token_registry.ca_bundle,
    )
    token_file.write_text(tokens.mint([f"repository:{repo}:pull"]) + "\n")
    asked = len(tokens.scopes)

    job = _job(tmp_path / "ok", {"RepositoryName": repo, "ImageTag": "v1"})
    assert EcrSource(settings).run(job).revision_id == digest
    assert len(tokens.scopes) == asked  # used as is: the token service was not asked

    token_file.write_text(tokens.mint(["repository:some/other:pull"]))
    with pytest.raises(ActionFailed, match=r"refused the configured credentials \(HTTP 401\)"):
        EcrSource(settings).run(
            _job(tmp_path / "other", {"RepositoryName": repo, "ImageTag": "v1"})
        )


def test_polling_starts_one_execution_per_new_digest(
    redis_client: redis.Redis, registry: Registry
) -> None:
    repo = unique("polled")
    first, _ = push_image(registry, repo, "stable", content=b"one")
    service = Service(Store(redis_client), default_registry(), default_bucket=unique("artifacts"))
    name = unique("poll")
    service.create_pipeline(_pipeline(name, repo, unique("target"), tag="stable"))
    detectors = [EcrImagePoller(RegistrySettings(registry_url=registry.url))]

    assert poll_once(redis_client, service, detectors, now=1.0) == []  # the baseline
    assert poll_once(redis_client, service, detectors, now=2.0) == []
    second, _ = push_image(registry, repo, "stable", content=b"two")
    (eid,) = poll_once(redis_client, service, detectors, now=3.0)
    assert poll_once(redis_client, service, detectors, now=4.0) == []

    (execution,) = service.list_executions(name)
    assert execution.execution_id == eid
    assert execution.trigger_type == POLL_TRIGGER
    assert execution.source_revisions == [
        {
            "actionName": "Image",
            "revisionId": second,
            "revisionType": "IMAGE_DIGEST",
            "revisionSummary": f"{repo}:stable",
        }
    ]
    assert first != second


def test_polling_skips_an_unreadable_source_and_an_unconfigured_registry(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    decl = validate(normalize(_pipeline("p", "absent/repo", "t")), default_registry())
    with caplog.at_level(logging.WARNING, logger="conveyor.triggers"):
        assert EcrImagePoller(RegistrySettings(registry_url=registry.url)).detect(decl, 1) == []
        assert EcrImagePoller(RegistrySettings(registry_url=None)).detect(decl, 1) == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("repository 'absent/repo' not found" in m for m in messages)
    assert any("no valid CONVEYOR_ECR_REGISTRY_URL: they are not polled" in m for m in messages)


# --- On real worker processes ----------------------------------------------------------------


def _pipeline(name: str, repo: str, target: str, *, tag: str = "release") -> dict[str, Any]:
    source = action(
        "Image",
        "Source",
        "ECR",
        config={"RepositoryName": repo, "ImageTag": tag},
        outs=("ImageOutput",),
    )
    source["namespace"] = "SourceVariables"
    deploy = action(
        "Publish",
        "Deploy",
        "S3",
        config={
            "BucketName": target,
            "Extract": "true",
            "ObjectKey": "images/#{SourceVariables.ImageTag}",
        },
        ins=("ImageOutput",),
    )
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": unique("artifacts")},
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Deploy", "actions": [deploy]},
        ],
    }


def test_pipeline_with_an_ecr_source_feeds_a_later_action_on_real_workers(
    spawn: Any,
    settings_env: dict[str, str],
    redis_client: redis.Redis,
    auth_registry: Registry,
    tmp_path: Path,
) -> None:
    repo = unique("svc")
    digest, _ = push_image(auth_registry, repo, "release", content=b"service build 7")
    password_file = tmp_path / "registry-password"
    password_file.write_text(PASSWORD)
    assert auth_registry.ca_bundle is not None
    stack = start_stack(
        spawn,
        settings_env,
        workers={"providers": ("all", 1)},
        worker_env={
            "CONVEYOR_ECR_REGISTRY_URL": auth_registry.url,
            "CONVEYOR_ECR_USERNAME": USER,
            "CONVEYOR_ECR_PASSWORD_FILE": str(password_file),
            "CONVEYOR_ECR_CA_BUNDLE": str(auth_registry.ca_bundle),
            "CONVEYOR_ECR_REGISTRY_ID": "210987654321",
        },
        beat_env={
            "CONVEYOR_ECR_REGISTRY_URL": auth_registry.url,
            "CONVEYOR_ECR_USERNAME": USER,
            "CONVEYOR_ECR_PASSWORD_FILE": str(password_file),
            "CONVEYOR_ECR_CA_BUNDLE": str(auth_registry.ca_bundle),
            "CONVEYOR_SOURCE_POLL_INTERVAL_SECONDS": "1",
        },
    )
    s3 = stack.s3()
    target = unique("deployed")
    s3.create_bucket(Bucket=target)
    name = unique("ecr")
    cp = stack.codepipeline()
    cp.create_pipeline(pipeline=_pipeline(name, repo, target))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]

    assert wait_status(cp, name, eid, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"

    deployed = s3.get_object(Bucket=target, Key="images/release/imageDetail.json")
    detail = json.loads(deployed["Body"].read())
    assert detail["ImageDigest"] == digest
    assert detail["ImageURI"] == f"{auth_registry.host}/{repo}@{digest}"
    assert detail["RegistryId"] == "210987654321"
    execution = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    revisions = execution["pipelineExecution"]["artifactRevisions"]
    assert [(r["name"], r["revisionId"]) for r in revisions] == [("ImageOutput", digest)]
    rows = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})[
        "actionExecutionDetails"
    ]
    by_name = {r["actionName"]: r for r in rows}
    assert by_name["Image"]["output"]["outputVariables"]["ImageURI"] == (
        f"{auth_registry.host}/{repo}:release"
    )
    assert by_name["Publish"]["input"]["resolvedConfiguration"]["ObjectKey"] == "images/release"

    # Beat polls the tag: once it holds the first digest as its baseline, a push starts one
    # execution, which reads the digest beat saw.
    wait_for(
        lambda: digest in str(redis_client.hget(keys.source_revisions(name), "Source/Image")),
        30,
        message="beat never recorded the tag's digest",
    )
    pushed, _ = push_image(auth_registry, repo, "release", content=b"service build 8")

    def polled() -> str | None:
        for summary in cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]:
            if summary["trigger"]["triggerType"] == "PollForSourceChanges":
                return str(summary["pipelineExecutionId"])
        return None

    second = wait_for(polled, 30, interval=0.3, message="no execution started by polling")
    assert wait_status(cp, name, second, {"Succeeded", "Failed"}, timeout=90) == "Succeeded"
    redeployed = s3.get_object(Bucket=target, Key="images/release/imageDetail.json")
    assert json.loads(redeployed["Body"].read())["ImageDigest"] == pushed
    again = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=second)
    assert [r["revisionId"] for r in again["pipelineExecution"]["artifactRevisions"]] == [pushed]
    assert len(cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]) == 2

    # The password was read by workers and beat, and appears in nothing anyone can see.
    seen = json.dumps([execution, rows, cp.get_pipeline_state(name=name)], default=str)
    seen += "".join(p.tail(10_000) for p in stack.processes.values())
    source_art = by_name["Image"]["output"]["outputArtifacts"][0]["s3location"]
    with zipfile.ZipFile(
        io.BytesIO(s3.get_object(Bucket=source_art["bucket"], Key=source_art["key"])["Body"].read())
    ) as zf:
        seen += "".join(zf.read(n).decode() for n in zf.namelist())
    seen += _everything_in(redis_client)
    assert PASSWORD not in seen


def _everything_in(client: redis.Redis) -> str:
    """Every value in the state database: records, outbox, leases and the event stream."""
    parts: list[str] = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(json.dumps(client.hgetall(key)))
        elif kind == "stream":
            parts.append(json.dumps(client.xrange(key)))
        elif kind == "list":
            parts.append(json.dumps(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(json.dumps(sorted(client.smembers(key))))
        elif kind == "zset":
            parts.append(json.dumps(client.zrange(key, 0, -1)))
    assert parts, "the state database was empty: nothing was checked"
    return "".join(parts)
