"""V2 pipeline triggers (``PipelineTriggerDeclaration``) as pydantic models, and their checks.

Shapes and limits are botocore's (``GitConfiguration``, ``GitPushFilter``,
``GitPullRequestFilter``: at most 3 filters of each kind, at most 8 patterns per list, a
pattern 1-255 characters); the rules across fields are the ones AWS's "Filter triggers on
code push or pull requests" guide states: a push filter filters on tags, or on branches
(optionally with file paths), never tags together with branches or file paths; a
pull-request filter filters on branches (optionally with file paths); one trigger per
source action.

AWS accepts triggers only for ``CodeStarSourceConnection`` source actions. Conveyor stands
in for CodeCommit and GitHub (version 1) with plain git repositories too, so it accepts a
trigger on those source actions as well; ``providerType`` stays AWS's one value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from engine.errors import Problem
from engine.globs import GlobError, compile_glob
from engine.records import Declaration

MAX_TRIGGERS = 50
MAX_FILTERS = 3
MAX_PATTERNS = 8
MAX_PATTERN_LENGTH = 255

# Source actions a trigger may name, as (owner, provider).
GIT_SOURCES = frozenset(
    {("AWS", "CodeStarSourceConnection"), ("AWS", "CodeCommit"), ("ThirdParty", "GitHub")}
)

Pattern = str  # a glob (engine.globs); lengths are checked with the rules, by path
Patterns = list[Pattern]


class PullRequestEvent(StrEnum):
    """``GitPullRequestEventType``."""

    OPEN = "OPEN"
    UPDATED = "UPDATED"
    CLOSED = "CLOSED"


class FilterCriteria(Declaration):
    """``GitBranchFilterCriteria`` / ``GitTagFilterCriteria`` / ``GitFilePathFilterCriteria``.

    An absent list constrains nothing; excludes take priority over includes.
    """

    includes: Patterns | None = Field(default=None, min_length=1, max_length=MAX_PATTERNS)
    excludes: Patterns | None = Field(default=None, min_length=1, max_length=MAX_PATTERNS)


class GitPushFilter(Declaration):
    tags: FilterCriteria | None = None
    branches: FilterCriteria | None = None
    file_paths: FilterCriteria | None = Field(default=None, alias="filePaths")


class GitPullRequestFilter(Declaration):
    events: list[PullRequestEvent] | None = Field(default=None, min_length=1, max_length=3)
    branches: FilterCriteria | None = None
    file_paths: FilterCriteria | None = Field(default=None, alias="filePaths")

    def accepts(self, event: PullRequestEvent) -> bool:
        """Whether the filter listens for ``event``: all three when ``events`` is absent."""
        return self.events is None or event in self.events


class GitConfiguration(Declaration):
    source_action_name: str = Field(alias="sourceActionName")
    push: list[GitPushFilter] | None = Field(default=None, min_length=1, max_length=MAX_FILTERS)
    pull_request: list[GitPullRequestFilter] | None = Field(
        default=None, alias="pullRequest", min_length=1, max_length=MAX_FILTERS
    )

    @property
    def filtered(self) -> bool:
        """False for a trigger with no filter: it starts on any push to the action's branch."""
        return bool(self.push) or bool(self.pull_request)


class PipelineTriggerDeclaration(Declaration):
    provider_type: Literal["CodeStarSourceConnection"] = Field(alias="providerType")
    git_configuration: GitConfiguration = Field(alias="gitConfiguration")


def check_triggers(
    triggers: list[PipelineTriggerDeclaration],
    source_actions: dict[str, tuple[str, str]],
) -> list[Problem]:
    """Every rule a well-typed trigger list can break, each with its path.

    ``source_actions`` maps each first-stage action name to its (owner, provider).
    """
    problems: list[Problem] = []
    if len(triggers) > MAX_TRIGGERS:
        problems.append(Problem("triggers", f"at most {MAX_TRIGGERS} triggers"))
    seen: set[str] = set()
    for i, trigger in enumerate(triggers):
        git = trigger.git_configuration
        tp = f"triggers[{i}].gitConfiguration"
        name = git.source_action_name
        if name not in source_actions:
            problems.append(
                Problem(f"{tp}.sourceActionName", f"'{name}' is not an action of the first stage")
            )
        elif source_actions[name] not in GIT_SOURCES:
            owner, provider = source_actions[name]
            problems.append(
                Problem(
                    f"{tp}.sourceActionName",
                    f"'{name}' is a {owner}/{provider} source; triggers need a git source "
                    "(CodeStarSourceConnection, CodeCommit or ThirdParty GitHub)",
                )
            )
        if name in seen:
            problems.append(
                Problem(
                    f"{tp}.sourceActionName",
                    f"'{name}' already has a trigger; a source action takes only one",
                )
            )
        seen.add(name)
        for fi, push in enumerate(git.push or []):
            problems.extend(_check_push(push, f"{tp}.push[{fi}]"))
        for fi, pr in enumerate(git.pull_request or []):
            problems.extend(_check_pull_request(pr, f"{tp}.pullRequest[{fi}]"))
    return problems


def _check_push(push: GitPushFilter, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if push.tags is not None and (push.branches is not None or push.file_paths is not None):
        problems.append(
            Problem(
                path,
                "a push filter filters on tags, or on branches (with file paths); "
                "tags cannot be combined with branches or filePaths",
            )
        )
    elif push.tags is None and push.branches is None:
        problems.append(Problem(path, "a push filter needs tags or branches"))
    for key, criteria in (("tags", push.tags), ("branches", push.branches)):
        problems.extend(_check_criteria(criteria, f"{path}.{key}"))
    problems.extend(_check_criteria(push.file_paths, f"{path}.filePaths"))
    return problems


def _check_pull_request(pr: GitPullRequestFilter, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if pr.branches is None:
        problems.append(Problem(f"{path}.branches", "a pull request filter needs branches"))
    if pr.events is not None and len(set(pr.events)) != len(pr.events):
        problems.append(Problem(f"{path}.events", "an event is listed more than once"))
    problems.extend(_check_criteria(pr.branches, f"{path}.branches"))
    problems.extend(_check_criteria(pr.file_paths, f"{path}.filePaths"))
    return problems


def _check_criteria(criteria: FilterCriteria | None, path: str) -> list[Problem]:
    if criteria is None:
        return []
    problems: list[Problem] = []
    if criteria.includes is None and criteria.excludes is None:
        problems.append(Problem(path, "give includes, excludes or both"))
    for key, patterns in (("includes", criteria.includes), ("excludes", criteria.excludes)):
        for pi, pattern in enumerate(patterns or []):
            pp = f"{path}.{key}[{pi}]"
            if not 1 <= len(pattern) <= MAX_PATTERN_LENGTH:
                problems.append(Problem(pp, f"must be 1-{MAX_PATTERN_LENGTH} characters"))
                continue
            try:
                compile_glob(pattern)
            except GlobError as exc:
                problems.append(Problem(pp, str(exc)))
    return problems
