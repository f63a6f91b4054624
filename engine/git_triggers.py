"""Whether a git event starts a pipeline through its V2 triggers: pure, no I/O.

A webhook receiver turns GitHub's or GitLab's payload into a :class:`GitEvent`;
:func:`plan_starts` then decides, for every pipeline, which trigger (if any) the event
satisfies and what the execution it starts looks like. The rules are AWS's:

- a trigger listens to one source action; the event must come from that action's
  repository (``FullRepositoryId``, ``RepositoryName``, or ``Owner/Repo``);
- a trigger without filters starts on a push to the action's own branch, and on nothing
  else;
- a push filter with ``tags`` takes only tag pushes, one with ``branches`` only branch
  pushes (its ``filePaths`` judged over the files the push changed); a pull-request filter
  takes only the events it lists, its ``branches`` judged against the branch the pull
  request merges into;
- in every include/exclude pair, excludes win, and an absent list constrains nothing;
- filters of one kind are alternatives: any one matching is enough.

A push executes the pushed commit on the destination branch; a pull request executes the
head commit of its source branch, as AWS does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from engine.definition.model import ActionDeclaration, PipelineDeclaration
from engine.definition.triggers import (
    FilterCriteria,
    GitPullRequestFilter,
    GitPushFilter,
    PipelineTriggerDeclaration,
    PullRequestEvent,
)
from engine.globs import matches

# CodePipeline's SourceRevisionType for a commit: how an execution is pinned to one.
COMMIT_ID = "COMMIT_ID"
# Of a commit message, what a revision summary keeps (AWS allows 2,048 characters in all).
MAX_MESSAGE = 1000
MAX_TRIGGER_DETAIL = 1024


class GitEventKind(StrEnum):
    PUSH = "push"
    PULL_REQUEST = "pull_request"


@dataclass(frozen=True)
class GitEvent:
    """One push or pull-request event, whatever git host sent it.

    ``changed_files`` is None when the host did not say (or not completely) which files
    changed; a file-path filter then cannot rule the event out, so it matches.
    """

    kind: GitEventKind
    repository: str  # "owner/name" (GitLab: the project's path with namespace)
    commit_id: str  # the commit an execution would run
    host: str = "GitHub"  # the provider type AWS names in revision summaries
    branch: str | None = None  # push: the pushed branch; pull request: its source branch
    tag: str | None = None  # push of a tag
    base_branch: str | None = None  # pull request: the branch it merges into
    pr_event: PullRequestEvent | None = None
    changed_files: frozenset[str] | None = None
    author: str | None = None
    message: str | None = None
    url: str | None = None


# --------------------------------------------------------------------------- criteria


def criteria_match(criteria: FilterCriteria | None, name: str) -> bool:
    """One name against an include/exclude pair: excluded never, else included if listed
    (or if there is no include list)."""
    if criteria is None:
        return True
    if any(matches(p, name) for p in criteria.excludes or []):
        return False
    return criteria.includes is None or any(matches(p, name) for p in criteria.includes)


def files_match(criteria: FilterCriteria | None, files: frozenset[str] | None) -> bool:
    """Some changed file passes the pair. Unknown files cannot rule the event out."""
    if criteria is None or files is None:
        return True
    return any(criteria_match(criteria, f) for f in files)


def push_filter_matches(f: GitPushFilter, event: GitEvent) -> bool:
    if f.tags is not None:
        return event.tag is not None and criteria_match(f.tags, event.tag)
    if event.branch is None:
        return False
    return criteria_match(f.branches, event.branch) and files_match(
        f.file_paths, event.changed_files
    )


def pull_request_filter_matches(f: GitPullRequestFilter, event: GitEvent) -> bool:
    if event.pr_event is None or event.base_branch is None or not f.accepts(event.pr_event):
        return False
    return criteria_match(f.branches, event.base_branch) and files_match(
        f.file_paths, event.changed_files
    )


# --------------------------------------------------------------------------- triggers


def repository_of(action: ActionDeclaration) -> str | None:
    """The repository a git source action reads, as events name it; None if not git."""
    t = action.action_type_id
    cfg = action.configuration
    if (t.owner, t.provider) == ("AWS", "CodeStarSourceConnection"):
        return cfg.get("FullRepositoryId")
    if (t.owner, t.provider) == ("AWS", "CodeCommit"):
        return cfg.get("RepositoryName")
    if (t.owner, t.provider) == ("ThirdParty", "GitHub"):
        owner, repo = cfg.get("Owner"), cfg.get("Repo")
        return f"{owner}/{repo}" if owner and repo else None
    return None


def default_branch_of(action: ActionDeclaration) -> str | None:
    cfg = action.configuration
    return cfg.get("BranchName") or cfg.get("Branch")


def same_repository(action_repo: str, event: GitEvent) -> bool:
    """CodeCommit names a repository without its owner; hosts are case-insensitive."""
    want, got = action_repo.lower(), event.repository.lower()
    return want == got or ("/" not in want and got.rsplit("/", 1)[-1] == want)


def trigger_matches(
    trigger: PipelineTriggerDeclaration, action: ActionDeclaration, event: GitEvent
) -> bool:
    """Whether ``event`` starts the pipeline through ``trigger`` on ``action``."""
    repo = repository_of(action)
    if repo is None or not same_repository(repo, event):
        return False
    git = trigger.git_configuration
    if event.kind is GitEventKind.PUSH:
        if not git.filtered:
            return event.branch is not None and event.branch == default_branch_of(action)
        return any(push_filter_matches(f, event) for f in git.push or [])
    return any(pull_request_filter_matches(f, event) for f in git.pull_request or [])


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlannedStart:
    """An execution an event should start, before anything is started."""

    pipeline: str
    source_action: str
    trigger_detail: str
    source_revision: dict[str, str]


def plan_starts(event: GitEvent, pipelines: Iterable[PipelineDeclaration]) -> list[PlannedStart]:
    """One start per pipeline with a trigger the event satisfies (the first such trigger)."""
    plans: list[PlannedStart] = []
    for decl in pipelines:
        if decl.pipeline_type != "V2" or not decl.triggers or not decl.stages:
            continue
        actions = {a.name: a for a in decl.stages[0].actions}
        for trigger in decl.triggers:
            action = actions.get(trigger.git_configuration.source_action_name)
            if action is not None and trigger_matches(trigger, action, event):
                plans.append(
                    PlannedStart(
                        pipeline=decl.name,
                        source_action=action.name,
                        trigger_detail=trigger_detail(action, event),
                        source_revision=source_revision(action, event),
                    )
                )
                break
    return plans


def trigger_detail(action: ActionDeclaration, event: GitEvent) -> str:
    """What ``trigger.triggerDetail`` names: the connection the event arrived through, as
    AWS does for WebhookV2, or the repository when the action has no connection."""
    connection = action.configuration.get("ConnectionArn")
    return (connection or f"{event.host}/{event.repository}")[:MAX_TRIGGER_DETAIL]


def source_revision(action: ActionDeclaration, event: GitEvent) -> dict[str, str]:
    """The execution's ``sourceRevisions`` entry pinning ``action`` to the event's commit.

    ``branchName`` tells the source provider which ref holds the commit (a filtered
    trigger can fire for any branch, not only the action's ``BranchName``).
    """
    rev = {
        "actionName": action.name,
        "revisionType": COMMIT_ID,
        "revisionId": event.commit_id,
        "revisionSummary": revision_summary(event),
    }
    ref = event.branch or event.tag
    if ref:
        rev["branchName" if event.branch else "tagName"] = ref
    if event.url:
        rev["revisionUrl"] = event.url
    return rev


def revision_summary(event: GitEvent) -> str:
    """The summary CodePipeline shows for a connection source's revision: a JSON object
    with ``ProviderType`` and ``CommitMessage``, here with who and where added (within
    the 2,048 characters ``revisionSummary`` allows: a long message is cut)."""
    fields: dict[str, str] = {"ProviderType": event.host}
    if event.message is not None:
        fields["CommitMessage"] = event.message[:MAX_MESSAGE]
    if event.author:
        fields["AuthorDisplayName"] = event.author
    if event.branch:
        fields["BranchName"] = event.branch
    if event.tag:
        fields["TagName"] = event.tag
    if event.kind is GitEventKind.PULL_REQUEST and event.pr_event is not None:
        fields["PullRequestEvent"] = event.pr_event.value
        if event.base_branch:
            fields["DestinationBranchName"] = event.base_branch
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
