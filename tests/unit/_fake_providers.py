"""Stand-ins for the built-in providers: the same action types, configuration keys and
artifact limits, and no behaviour, so definition tests don't depend on the real ones."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from providers.base import ActionTypeId, Category, Job, Provider, ProviderConfig, Result
from providers.registry import Registry


def _aws(category: Category, provider: str) -> ActionTypeId:
    return ActionTypeId(category=category, owner="AWS", provider=provider, version="1")


class _Fake(Provider):
    def run(self, job: Job) -> Result:
        raise AssertionError("definition tests never run a provider")


class S3SourceConfig(ProviderConfig):
    S3Bucket: str
    S3ObjectKey: str
    PollForSourceChanges: str | None = None


class FakeS3Source(_Fake):
    action_type = _aws(Category.SOURCE, "S3")
    Config = S3SourceConfig
    min_outputs = max_outputs = 1


class CodeBuildConfig(ProviderConfig):
    ProjectName: str
    PrimarySource: str | None = None
    EnvironmentVariables: str | None = None
    BatchEnabled: str | None = None


class FakeCodeBuild(_Fake):
    action_type = _aws(Category.BUILD, "CodeBuild")
    Config = CodeBuildConfig
    min_inputs, max_inputs = 1, 5
    min_outputs, max_outputs = 0, 5


class FakeCodeBuildTest(FakeCodeBuild):
    action_type = _aws(Category.TEST, "CodeBuild")


class S3DeployConfig(ProviderConfig):
    BucketName: str
    Extract: Literal["true", "false"]
    ObjectKey: str | None = None

    @model_validator(mode="after")
    def _key_needed_unless_extracting(self) -> Self:
        if self.Extract == "false" and not self.ObjectKey:
            raise ValueError('ObjectKey is required when Extract is "false"')
        return self


class FakeS3Deploy(_Fake):
    action_type = _aws(Category.DEPLOY, "S3")
    Config = S3DeployConfig
    min_inputs = max_inputs = 1


class ManualConfig(ProviderConfig):
    NotificationArn: str | None = None
    CustomData: str | None = None
    ExternalEntityLink: str | None = None


class FakeManual(_Fake):
    action_type = _aws(Category.APPROVAL, "Manual")
    Config = ManualConfig
    runs_on_worker = False


def fake_registry() -> Registry:
    return Registry([FakeS3Source, FakeCodeBuild, FakeCodeBuildTest, FakeS3Deploy, FakeManual])
