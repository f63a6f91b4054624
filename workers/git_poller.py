"""Polling git sources for ``conveyor beat``: the commit each polled branch is at, by
``git ls-remote`` (one small request per source, no objects fetched).

A new commit becomes a ``COMMIT_ID`` :class:`~workers.triggers.DetectedChange`, which the
trigger machinery in :mod:`workers.triggers` turns into exactly one execution pinned to that
commit. The sources of one pipeline are asked in parallel (at most
``CONVEYOR_GIT_POLL_CONCURRENCY`` at once), each ``ls-remote`` capped at
``CONVEYOR_GIT_POLL_TIMEOUT_SECONDS``, so an unreachable server costs beat one timeout per
round, not a stall.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.definition import ActionDeclaration, PipelineDeclaration
from providers.base import ActionFailed, Category
from providers.git import Failure, GitError, Limits, Remote, ls_remote
from providers.git_remotes import (
    GitSettings,
    Located,
    locate_codecommit,
    locate_connection,
    locate_github,
)
from workers.triggers import ChangeDetector, DetectedChange

log = logging.getLogger("conveyor.triggers.git")

COMMIT_ID = "COMMIT_ID"  # CodePipeline's SourceRevisionType for a commit


@dataclass(frozen=True)
class _Source:
    stage: str
    action: str
    located: Located
    branch: str


def _flag(action: ActionDeclaration, key: str) -> bool:
    value = action.configuration.get(key)
    return value is None or str(value).strip().lower() != "false"


# (owner, provider) -> (the switch that turns polling off, how to find its remote)
_Locate = Callable[[GitSettings, dict[str, str]], tuple[Located, str]]
_KINDS: dict[tuple[str, str], tuple[str, _Locate]] = {
    ("AWS", "CodeCommit"): (
        "PollForSourceChanges",
        lambda s, c: (locate_codecommit(s, c["RepositoryName"]), c["BranchName"]),
    ),
    ("AWS", "CodeStarSourceConnection"): (
        "DetectChanges",
        lambda s, c: (
            locate_connection(s, c["ConnectionArn"], c["FullRepositoryId"]),
            c["BranchName"],
        ),
    ),
    ("ThirdParty", "GitHub"): (
        "PollForSourceChanges",
        lambda s, c: (locate_github(s, c["Owner"], c["Repo"]), c["Branch"]),
    ),
}


def _webhook_actions(pipeline: PipelineDeclaration) -> set[str]:
    """Source actions a V2 ``triggers`` git configuration starts (webhooks): polling them
    too would start a second execution for the same push."""
    return {t.git_configuration.source_action_name for t in pipeline.triggers}


class GitBranchPoller(ChangeDetector):
    """The head commit of each polled git source's branch."""

    def __init__(self, settings: GitSettings | None = None) -> None:
        self._settings = settings
        # The candidate remote that answered last time, per repository: a base URL tried as
        # <base>/<name> then <base>/<name>.git costs one failed ls-remote only once.
        self._known: dict[tuple[Remote, ...], Remote] = {}

    @property
    def settings(self) -> GitSettings:
        return self._settings if self._settings is not None else GitSettings.load()

    def sources(self, pipeline: PipelineDeclaration, settings: GitSettings) -> Iterator[_Source]:
        hooked = _webhook_actions(pipeline)
        for stage in pipeline.stages:
            for action in stage.actions:
                t = action.action_type_id
                kind = _KINDS.get((t.owner, t.provider))
                if t.category is not Category.SOURCE or kind is None:
                    continue
                switch, locate = kind
                config = {k: str(v) for k, v in action.configuration.items()}
                if not _flag(action, switch) or action.name in hooked:
                    continue
                if any("#{" in v for v in config.values()):
                    continue  # variables resolve only inside an execution: nothing to poll
                try:
                    located, branch = locate(settings, config)
                except (ActionFailed, KeyError) as exc:
                    log.warning(
                        "pipeline %s: cannot poll %s.%s: %s",
                        pipeline.name,
                        stage.name,
                        action.name,
                        exc.message if isinstance(exc, ActionFailed) else f"no {exc}",
                    )
                    continue
                yield _Source(stage.name, action.name, located, branch)

    def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]:
        try:
            settings = self.settings
        except ActionFailed as exc:
            log.warning("git sources not polled: %s", exc.message)
            return []
        found = list(self.sources(pipeline, settings))
        if not found:
            return []
        limits = Limits(settings.poll_timeout_seconds)
        if len(found) == 1:
            results = [self._head(found[0], limits, pipeline.name)]
        else:
            workers = min(settings.poll_concurrency, len(found))
            with ThreadPoolExecutor(workers, thread_name_prefix="git-poll") as pool:
                results = list(pool.map(lambda s: self._head(s, limits, pipeline.name), found))
        return [r for r in results if r is not None]

    def _head(self, source: _Source, limits: Limits, pipeline: str) -> DetectedChange | None:
        candidates = source.located.candidates
        known = self._known.get(candidates)
        ordered = [known, *(c for c in candidates if c != known)] if known else list(candidates)
        for remote in ordered:
            try:
                sha = ls_remote(remote, source.branch, limits)
            except GitError as exc:
                if exc.kind is Failure.REPOSITORY:
                    continue
                log.warning(
                    "pipeline %s: cannot poll %s.%s at %s: %s; retrying next poll",
                    pipeline,
                    source.stage,
                    source.action,
                    remote.display,
                    exc.message,
                )
                return None
            self._known[candidates] = remote
            if sha is None:
                log.warning(
                    "pipeline %s: %s.%s: branch %r does not exist in %s (%s)",
                    pipeline,
                    source.stage,
                    source.action,
                    source.branch,
                    source.located.name,
                    remote.display,
                )
                return None
            # The remote and branch identify the source: pointing the action elsewhere
            # starts a new baseline instead of an execution.
            where = f"{remote.display}#{source.branch}"
            return DetectedChange(source.stage, source.action, sha, COMMIT_ID, None, where)
        log.warning(
            "pipeline %s: %s.%s: repository %s not found (tried %s)",
            pipeline,
            source.stage,
            source.action,
            source.located.name,
            ", ".join(r.display for r in candidates),
        )
        return None
