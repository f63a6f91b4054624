"""The worker retries each step of an attempt on its own (workers/runner.py ``execute``).

The artifact store here is the real :class:`ArtifactStore` (zipping, hashing, verifying,
extracting) with only its two network calls, ``upload_file`` and ``download_file``,
replaced by ones that fail transiently a chosen number of times. Waits are shortened to
milliseconds; everything else is the code that runs on a worker.
"""

from __future__ import annotations

import functools
import io
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from engine.definition import PipelineDeclaration
from engine.errors import ArtifactError
from engine.execution import ActionResult, ArtifactLocation, new_execution
from engine.settings import Settings
from providers.base import ActionFailed, ActionTypeId, Category, Job, Provider, ProviderConfig
from providers.base import Result as ProviderResult
from providers.sandbox import SandboxPolicy
from providers.ziputil import sha256_file
from workers import retry, runner
from workers.artifacts import ArtifactRef, ArtifactStore
from workers.scratch import ScratchSpace

ENDPOINT = "http://127.0.0.1:9"


def unreachable(doing: str) -> ArtifactError:
    return ArtifactError(
        f"{doing}: cannot reach S3 endpoint {ENDPOINT}: Connection refused", retryable=True
    )


class FlakyStore(ArtifactStore):
    """The real store, whose uploads and downloads fail transiently ``fail_*`` times first."""

    def __init__(
        self,
        settings: Settings,
        *,
        fail_uploads: int = 0,
        fail_log_uploads: int = 0,
        fail_downloads: int = 0,
    ) -> None:
        super().__init__(settings)
        self.fail_uploads, self.fail_log_uploads = fail_uploads, fail_log_uploads
        self.fail_downloads = fail_downloads
        self.uploads: dict[str, bytes] = {}
        self.upload_tries: list[str] = []
        self.packaged: list[str] = []
        self.downloads = 0

    def package_dir(self, directory: Path, archive: Path, *, name: str | None = None) -> Any:
        self.packaged.append(name or str(directory))
        return super().package_dir(directory, archive, name=name)

    def upload_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        content_type: str = "application/octet-stream",
        *,
        sha256: str | None = None,
    ) -> ArtifactRef:
        self.upload_tries.append(key)
        failing = "fail_log_uploads" if key.endswith(".log") else "fail_uploads"
        if getattr(self, failing) > 0:
            setattr(self, failing, getattr(self, failing) - 1)
            raise unreachable(f"uploading s3://{bucket}/{key}")
        self.uploads[key] = path.read_bytes()
        return ArtifactRef(bucket=bucket, key=key, sha256=sha256, size=path.stat().st_size)

    def fetch(
        self, bucket: str, key: str, dest: Path, version_id: str | None = None
    ) -> tuple[ArtifactRef, str]:
        self.downloads += 1
        if self.fail_downloads > 0:
            self.fail_downloads -= 1
            raise unreachable(f"downloading s3://{bucket}/{key}")
        with zipfile.ZipFile(dest, "w") as zf:
            zf.writestr("input.txt", "from the source")
        return ArtifactRef(bucket=bucket, key=key), sha256_file(dest)


class _NoConfig(ProviderConfig):
    pass


class Builder(Provider):
    """Reads its input, writes its output; fails transiently ``fail_runs`` times first."""

    action_type = ActionTypeId(category=Category.BUILD, owner="Custom", provider="B", version="1")
    Config = _NoConfig
    fail_runs: ClassVar[int] = 0
    retryable: ClassVar[bool] = True
    build_log: ClassVar[bool] = False
    runs: ClassVar[int] = 0

    def run(self, job: Job) -> ProviderResult:
        type(self).runs += 1
        if type(self).fail_runs > 0:
            type(self).fail_runs -= 1
            raise ActionFailed(
                f"reading s3://src/app.zip: cannot reach S3 endpoint {ENDPOINT}: refused",
                retryable=self.retryable,
            )
        text = (job.inputs["In"] / "input.txt").read_text()
        (job.outputs["Out"] / "built.txt").write_text(text.upper())
        attachments = {}
        if self.build_log:
            path = job.workdir / "build.log"
            path.write_text("[Container] build output\n")
            attachments["build-log"] = path
        return ProviderResult(summary="Build succeeded", attachments=attachments)


class _Registry:
    def get(self, action_type: ActionTypeId) -> type[Provider] | None:
        return Builder


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Millisecond waits instead of seconds; the policy's limits are the real settings'."""
    monkeypatch.setattr(
        runner,
        "RetryPolicy",
        functools.partial(retry.RetryPolicy, base_delay=0.001, max_delay=0.002),
    )
    Builder.fail_runs, Builder.retryable, Builder.build_log, Builder.runs = 0, True, False, 0


def execute(store: FlakyStore, settings: Settings) -> ActionResult:
    decl = PipelineDeclaration.model_validate(
        {
            "name": "p",
            "stages": [
                {
                    "name": "Build",
                    "actions": [
                        {
                            "name": "B",
                            "actionTypeId": {
                                "category": "Build",
                                "owner": "Custom",
                                "provider": "B",
                                "version": "1",
                            },
                            "inputArtifacts": [{"name": "In"}],
                            "outputArtifacts": [{"name": "Out"}],
                        }
                    ],
                }
            ],
        }
    )
    state = new_execution(
        execution_id="e-1",
        definition=decl,
        version=1,
        digest="d",
        artifact_bucket="artifacts",
        variables={},
        timeout_minutes=lambda action: 60,
    )
    act = state.stages[0].actions[0]
    act.action_execution_id = "e-1-b-1"
    act.input_artifacts = [ArtifactLocation(name="In", bucket="artifacts", key="p/In/x.zip")]
    rt = SimpleNamespace(
        registry=_Registry(),
        artifacts=store,
        settings=settings,
        scratch=ScratchSpace(settings.workdir),
        sandbox=SandboxPolicy(),
    )
    return runner.execute(rt, state, "Build", "B", 1, threading.Event())  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workdir=str(tmp_path), s3_endpoint_url=ENDPOINT)


def stored_log(store: FlakyStore, name: str = "action-log") -> str:
    key = next(k for k in store.uploads if k.endswith(f"/{name}.log"))
    return store.uploads[key].decode()


def test_an_output_upload_is_retried_without_zipping_again(settings: Settings) -> None:
    store = FlakyStore(settings, fail_uploads=2)
    result = execute(store, settings)
    assert result.succeeded, result.error_message
    assert result.summary == "Build succeeded (after retrying 2 transient failures)"
    assert store.packaged == ["Out"]  # zipped once
    assert store.upload_tries[:3] == ["p/Out/e-1-b-1-1.zip"] * 3
    assert Builder.runs == 1 and store.downloads == 1
    log = stored_log(store)
    assert "uploading output artifact Out: transient failure (attempt 1 of 10): uploading " in log
    assert f"cannot reach S3 endpoint {ENDPOINT}: Connection refused; retrying in" in log
    assert "(attempt 2 of 10)" in log
    assert "uploading output artifact Out: succeeded on attempt 3" in log
    [out] = result.output_artifacts
    with zipfile.ZipFile(io.BytesIO(store.uploads[out.key])) as zf:
        assert zf.read("built.txt") == b"FROM THE SOURCE"


def test_an_input_download_is_retried_alone(settings: Settings) -> None:
    store = FlakyStore(settings, fail_downloads=1)
    result = execute(store, settings)
    assert result.succeeded, result.error_message
    assert store.downloads == 2 and Builder.runs == 1
    assert "downloading input artifact In: transient failure (attempt 1 of 10)" in stored_log(store)
    assert result.summary == "Build succeeded (after retrying 1 transient failure)"


def test_the_provider_runs_again_only_after_a_retryable_failure(settings: Settings) -> None:
    Builder.fail_runs = 1
    store = FlakyStore(settings)
    assert execute(store, settings).succeeded
    assert Builder.runs == 2 and store.downloads == 1  # the input was kept

    Builder.fail_runs, Builder.retryable, Builder.runs = 1, False, 0
    result = execute(FlakyStore(settings), settings)
    assert (result.succeeded, result.error_code, Builder.runs) == (False, "JobFailed", 1)


def test_running_out_fails_with_the_endpoint_and_the_number_of_attempts(
    tmp_path: Path,
) -> None:
    settings = Settings(workdir=str(tmp_path), transient_retry_attempts=4)
    store = FlakyStore(settings, fail_uploads=100)
    result = execute(store, settings)
    assert not result.succeeded
    assert result.error_code == "ArtifactError"
    assert result.error_message is not None
    assert result.error_message.startswith("gave up after 4 attempts over 0 s: uploading s3://")
    assert f"cannot reach S3 endpoint {ENDPOINT}: Connection refused" in result.error_message
    # 4 tries of the artifact, then one of the log: the endpoint was just found down
    assert len(store.upload_tries) == 5
    assert result.output_artifacts == []


def test_retries_show_in_a_providers_own_log(settings: Settings) -> None:
    Builder.build_log = True
    store = FlakyStore(settings, fail_downloads=1, fail_uploads=2, fail_log_uploads=1)
    result = execute(store, settings)
    assert result.succeeded, result.error_message
    assert result.log_location is not None and result.log_location.name == "build-log"
    log = stored_log(store, "build-log")
    assert log.startswith("[Container] build output\n")
    assert "downloading input artifact In: transient failure (attempt 1 of 10)" in log
    assert "uploading output artifact Out: transient failure (attempt 1 of 10)" in log
    assert "uploading output artifact Out: transient failure (attempt 2 of 10)" in log
    # noted in the file before the log's next try uploads it
    assert "uploading the build-log: transient failure (attempt 1 of 10)" in log
    assert result.summary == "Build succeeded (after retrying 4 transient failures)"


def test_no_retries_no_note(settings: Settings) -> None:
    store = FlakyStore(settings)
    result = execute(store, settings)
    assert result.summary == "Build succeeded"
    # A clean success of an action with no log of its own stores no log at all.
    assert result.log_location is None
    assert not [k for k in store.uploads if k.endswith(".log")]
