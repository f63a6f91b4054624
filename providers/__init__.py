"""Action providers: the built-ins, listed explicitly, and the default registry."""

from __future__ import annotations

from providers.base import Provider
from providers.codebuild import CodeBuild, CodeBuildTest
from providers.codecommit import CodeCommitSource
from providers.codepipeline_invoke import PipelineInvoke
from providers.codestar_connection import CodeStarSourceConnection
from providers.commands_action import CommandsAction
from providers.ecr_source import EcrSource
from providers.github_source import GitHubSource
from providers.jenkins import JenkinsBuild, JenkinsTest
from providers.lambda_invoke import LambdaInvoke
from providers.manual_approval import ManualApproval
from providers.registry import Registry
from providers.s3_deploy import S3Deploy
from providers.s3_source import S3Source

BUILTIN_PROVIDERS: tuple[type[Provider], ...] = (
    S3Source,
    EcrSource,
    CodeBuild,
    CodeBuildTest,
    CommandsAction,
    S3Deploy,
    ManualApproval,
    JenkinsBuild,
    JenkinsTest,
    PipelineInvoke,
    LambdaInvoke,
    CodeCommitSource,
    CodeStarSourceConnection,
    GitHubSource,
)


def default_registry(*, entry_points: bool = True) -> Registry:
    """The built-ins plus, unless told otherwise, third-party providers from entry points."""
    registry = Registry(BUILTIN_PROVIDERS)
    if entry_points:
        registry.load_entry_points()
    return registry
