"""Source/AWS/CodeCommit/1, self-hosted: ``RepositoryName`` names a git repository that
settings map to a remote (``CONVEYOR_GIT_REPOSITORIES`` or ``CONVEYOR_GIT_BASE_URL``)."""

from __future__ import annotations

import re

from pydantic import field_validator

from providers.base import ActionTypeId, Category
from providers.git_remotes import GitSettings, Located, locate_codecommit
from providers.git_source import (
    BoolFlag,
    Fetched,
    GitBranch,
    GitSource,
    GitSourceConfig,
    commit_variables,
)

# CodeCommit's own rule for repository names (1-100 of letters, digits, ".", "_", "-"),
# which also keeps a name from reaching outside the configured base.
_REPOSITORY_NAME = re.compile(r"^[\w.-]{1,100}$")


class CodeCommitConfig(GitSourceConfig):
    RepositoryName: str
    BranchName: GitBranch
    PollForSourceChanges: BoolFlag = None

    @field_validator("RepositoryName")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not _REPOSITORY_NAME.match(value) or value in (".", ".."):
            raise ValueError("a repository name is 1-100 letters, digits, '.', '_' or '-' (no '/')")
        return value


class CodeCommitSource(GitSource):
    action_type = ActionTypeId(
        category=Category.SOURCE, owner="AWS", provider="CodeCommit", version="1"
    )
    Config = CodeCommitConfig

    def locate(self, config: CodeCommitConfig, settings: GitSettings) -> Located:
        return locate_codecommit(settings, config.RepositoryName)

    def branch(self, config: CodeCommitConfig) -> str:
        return config.BranchName

    def output_variables(self, config: CodeCommitConfig, fetched: Fetched) -> dict[str, str]:
        return {**commit_variables(fetched), "RepositoryName": config.RepositoryName}
