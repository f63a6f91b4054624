"""GitHub's and GitLab's webhook payloads, read into :class:`engine.git_triggers.GitEvent`.

Pure functions of (event name, parsed JSON). What a payload does not say is left unknown
rather than guessed: neither host lists the files a pull request changes, and a GitLab push
lists at most 20 commits, so ``changed_files`` is None there (a file-path filter then
cannot rule the event out).

Pull-request actions map onto AWS's three trigger events as AWS describes them per provider:
opened or reopened is OPEN, new commits (GitHub ``synchronize``, GitLab ``update`` with an
``oldrev``) are UPDATED, closed or merged is CLOSED. Every other action (labels, edits,
approvals, ...) is ignored, as AWS ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.definition.triggers import PullRequestEvent
from engine.git_triggers import GitEvent, GitEventKind

# GitHub lists at most this many commits of a push; a push that reaches it may list fewer
# than it made, and so fewer changed files.
GITHUB_MAX_COMMITS = 2048
NULL_SHA = "0" * 40

GITHUB_PR_EVENTS = {
    "opened": PullRequestEvent.OPEN,
    "reopened": PullRequestEvent.OPEN,
    "synchronize": PullRequestEvent.UPDATED,
    "closed": PullRequestEvent.CLOSED,
}
GITLAB_MR_EVENTS = {
    "open": PullRequestEvent.OPEN,
    "reopen": PullRequestEvent.OPEN,
    "update": PullRequestEvent.UPDATED,
    "close": PullRequestEvent.CLOSED,
    "merge": PullRequestEvent.CLOSED,
}


class BadPayload(ValueError):
    """A payload of a supported event that lacks what that event always carries."""


@dataclass(frozen=True)
class Ignored:
    """An event that can never start anything (a ping, a label change, a deleted branch)."""

    reason: str


Outcome = GitEvent | Ignored


# --------------------------------------------------------------------------- helpers


def _get(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _str(data: Mapping[str, Any], path: str) -> str:
    """A string the event always carries; its absence is the sender's error."""
    value = _get(data, path)
    if not isinstance(value, str) or not value:
        raise BadPayload(f"payload field '{path}' is missing or not a string")
    return value


def _opt(data: Mapping[str, Any], path: str) -> str | None:
    value = _get(data, path)
    return value if isinstance(value, str) and value else None


def _files(commits: Any) -> frozenset[str]:
    files: set[str] = set()
    for commit in commits if isinstance(commits, list) else []:
        if not isinstance(commit, Mapping):
            continue
        for key in ("added", "modified", "removed"):
            names = commit.get(key)
            if isinstance(names, list):
                files.update(n for n in names if isinstance(n, str))
    return frozenset(files)


def _ref(ref: str) -> tuple[str | None, str | None]:
    """(branch, tag) a ``refs/...`` name points at."""
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), None
    if ref.startswith("refs/tags/"):
        return None, ref.removeprefix("refs/tags/")
    return None, None


# --------------------------------------------------------------------------- GitHub


def github(event: str, data: Mapping[str, Any]) -> Outcome:
    """An ``X-GitHub-Event`` delivery."""
    if event == "push":
        return _github_push(data)
    if event == "pull_request":
        return _github_pull_request(data)
    return Ignored(f"GitHub event '{event}' starts nothing")


def _github_push(data: Mapping[str, Any]) -> Outcome:
    ref = _str(data, "ref")
    after = _str(data, "after")
    if data.get("deleted") is True or after == NULL_SHA:
        return Ignored(f"{ref} was deleted")
    branch, tag = _ref(ref)
    if branch is None and tag is None:
        return Ignored(f"{ref} is neither a branch nor a tag")
    commits = data.get("commits")
    complete = isinstance(commits, list) and len(commits) < GITHUB_MAX_COMMITS
    head = _get(data, "head_commit")
    head = head if isinstance(head, Mapping) else {}
    return GitEvent(
        kind=GitEventKind.PUSH,
        host="GitHub",
        repository=_str(data, "repository.full_name"),
        # An annotated tag's "after" is the tag object; the commit it tags is the head.
        commit_id=_opt(head, "id") or after,
        branch=branch,
        tag=tag,
        changed_files=_files(commits) if complete else None,
        author=_opt(head, "author.username")
        or _opt(head, "author.name")
        or _opt(data, "pusher.name"),
        message=_opt(head, "message"),
        url=_opt(head, "url"),
    )


def _github_pull_request(data: Mapping[str, Any]) -> Outcome:
    action = _str(data, "action")
    pr_event = GITHUB_PR_EVENTS.get(action)
    if pr_event is None:
        return Ignored(f"pull request action '{action}' starts nothing")
    return GitEvent(
        kind=GitEventKind.PULL_REQUEST,
        host="GitHub",
        repository=_str(data, "repository.full_name"),
        commit_id=_str(data, "pull_request.head.sha"),
        branch=_str(data, "pull_request.head.ref"),
        base_branch=_str(data, "pull_request.base.ref"),
        pr_event=pr_event,
        author=_opt(data, "pull_request.user.login") or _opt(data, "sender.login"),
        message=_opt(data, "pull_request.title"),
        url=_opt(data, "pull_request.html_url"),
    )


# --------------------------------------------------------------------------- GitLab


def gitlab(event: str, data: Mapping[str, Any]) -> Outcome:
    """An ``X-Gitlab-Event`` delivery."""
    if event in ("Push Hook", "Tag Push Hook"):
        return _gitlab_push(data)
    if event == "Merge Request Hook":
        return _gitlab_merge_request(data)
    return Ignored(f"GitLab event '{event}' starts nothing")


def _gitlab_push(data: Mapping[str, Any]) -> Outcome:
    ref = _str(data, "ref")
    sha = _opt(data, "checkout_sha")
    after = _opt(data, "after")
    if sha is None or after == NULL_SHA:
        return Ignored(f"{ref} was deleted")
    branch, tag = _ref(ref)
    if branch is None and tag is None:
        return Ignored(f"{ref} is neither a branch nor a tag")
    commits = data.get("commits")
    listed = len(commits) if isinstance(commits, list) else 0
    total = data.get("total_commits_count")
    complete = isinstance(commits, list) and (not isinstance(total, int) or total <= listed)
    head: Mapping[str, Any] = next(
        (c for c in commits or [] if isinstance(c, Mapping) and c.get("id") == sha), {}
    )
    return GitEvent(
        kind=GitEventKind.PUSH,
        host="GitLab",
        repository=_str(data, "project.path_with_namespace"),
        commit_id=sha,
        branch=branch,
        tag=tag,
        changed_files=_files(commits) if complete else None,
        author=_opt(data, "user_username") or _opt(head, "author.name"),
        message=_opt(head, "message") or _opt(data, "message"),
        url=_opt(head, "url"),
    )


def _gitlab_merge_request(data: Mapping[str, Any]) -> Outcome:
    action = _str(data, "object_attributes.action")
    pr_event = GITLAB_MR_EVENTS.get(action)
    if pr_event is None:
        return Ignored(f"merge request action '{action}' starts nothing")
    if action == "update" and _get(data, "object_attributes.oldrev") is None:
        return Ignored("merge request updated without new commits")
    return GitEvent(
        kind=GitEventKind.PULL_REQUEST,
        host="GitLab",
        repository=_str(data, "project.path_with_namespace"),
        commit_id=_str(data, "object_attributes.last_commit.id"),
        branch=_str(data, "object_attributes.source_branch"),
        base_branch=_str(data, "object_attributes.target_branch"),
        pr_event=pr_event,
        author=_opt(data, "user.username") or _opt(data, "user.name"),
        message=_opt(data, "object_attributes.title"),
        url=_opt(data, "object_attributes.url"),
    )
