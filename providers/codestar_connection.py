"""Source/AWS/CodeStarSourceConnection/1, self-hosted: the ``ConnectionArn`` is mapped in
settings (``CONVEYOR_GIT_CONNECTIONS``) to a git base URL and credentials, and
``FullRepositoryId`` (``owner/repo``) is a repository under it. GitHub, GitLab, Bitbucket or
any git server: the connection's ``providerType`` setting says which it reports."""

from __future__ import annotations

import json
import re

from pydantic import field_validator

from providers.base import ActionTypeId, Category
from providers.git_remotes import (
    GitSettings,
    Located,
    connection_provider_type,
    locate_connection,
)
from providers.git_source import (
    BoolFlag,
    Fetched,
    GitBranch,
    GitSource,
    GitSourceConfig,
    commit_variables,
)

# owner/repo, or group/subgroup/repo on GitLab; no empty, "." or ".." segment.
_FULL_ID = re.compile(r"^(?!.*(^|/)\.{1,2}(/|$))[\w.-]+(/[\w.-]+)+$")


class CodeStarSourceConnectionConfig(GitSourceConfig):
    ConnectionArn: str
    FullRepositoryId: str
    BranchName: GitBranch
    DetectChanges: BoolFlag = None

    @field_validator("FullRepositoryId")
    @classmethod
    def _full_id(cls, value: str) -> str:
        if not _FULL_ID.match(value):
            raise ValueError("must be owner/repository (e.g. my-org/my-repo)")
        return value


class CodeStarSourceConnection(GitSource):
    action_type = ActionTypeId(
        category=Category.SOURCE,
        owner="AWS",
        provider="CodeStarSourceConnection",
        version="1",
    )
    Config = CodeStarSourceConnectionConfig

    def locate(self, config: CodeStarSourceConnectionConfig, settings: GitSettings) -> Located:
        return locate_connection(settings, config.ConnectionArn, config.FullRepositoryId)

    def branch(self, config: CodeStarSourceConnectionConfig) -> str:
        return config.BranchName

    def output_variables(
        self, config: CodeStarSourceConnectionConfig, fetched: Fetched
    ) -> dict[str, str]:
        variables = commit_variables(fetched)
        del variables["CommitterDate"]  # not among the variables AWS documents for it
        return {
            **variables,
            "ConnectionArn": config.ConnectionArn,
            "FullRepositoryName": config.FullRepositoryId,
        }

    def revision_summary(self, config: CodeStarSourceConnectionConfig, fetched: Fetched) -> str:
        # CodePipeline records a connection source's revision summary as this JSON object.
        return json.dumps(
            {
                "ProviderType": connection_provider_type(self.settings, config.ConnectionArn),
                "CommitMessage": fetched.commit.summary,
            },
            separators=(",", ":"),
        )
