"""Source/ThirdParty/GitHub/1, self-hosted: ``<CONVEYOR_GIT_GITHUB_URL>/<Owner>/<Repo>``.

The definition's ``OAuthToken`` is accepted (definitions written for AWS carry it) but never
used: a token in a definition would be stored, listed and printed with it. Credentials come
from ``CONVEYOR_GIT_GITHUB_TOKEN`` / ``CONVEYOR_GIT_GITHUB_TOKEN_FILE``.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from providers.base import ActionTypeId, Category
from providers.git_remotes import GitSettings, Located, locate_github
from providers.git_source import (
    BoolFlag,
    Fetched,
    GitBranch,
    GitSource,
    GitSourceConfig,
    commit_variables,
)

_NAME = re.compile(r"^[\w.-]{1,100}$")


class GitHubConfig(GitSourceConfig):
    Owner: str
    Repo: str
    Branch: GitBranch
    OAuthToken: str | None = None  # accepted for compatibility, never used
    PollForSourceChanges: BoolFlag = None

    @field_validator("Owner", "Repo")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value) or value in (".", ".."):
            raise ValueError("must be letters, digits, '.', '_' or '-' (no '/')")
        return value


class GitHubSource(GitSource):
    action_type = ActionTypeId(
        category=Category.SOURCE, owner="ThirdParty", provider="GitHub", version="1"
    )
    Config = GitHubConfig

    def locate(self, config: GitHubConfig, settings: GitSettings) -> Located:
        return locate_github(settings, config.Owner, config.Repo)

    def branch(self, config: GitHubConfig) -> str:
        return config.Branch

    def output_variables(self, config: GitHubConfig, fetched: Fetched) -> dict[str, str]:
        variables = {**commit_variables(fetched), "RepositoryName": config.Repo}
        if fetched.remote.url.startswith("https://github.com/"):
            # GitHub's API URL of the commit, as AWS's CommitUrl; other servers have no
            # such URL that Conveyor could know.
            variables["CommitUrl"] = (
                f"https://api.github.com/repos/{config.Owner}/{config.Repo}"
                f"/git/commits/{fetched.commit.id}"
            )
        return variables
