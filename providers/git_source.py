"""What every git-backed source action does, whichever CodePipeline provider it stands for.

A subclass says where the repository is (:meth:`GitSource.locate`) and how the result is
named (output variables, revision summary); this base fetches the branch, or exactly the
commit an execution is pinned to, and writes the output artifact in the configured
``OutputArtifactFormat``:

- ``CODE_ZIP``: the tree at the commit, without ``.git`` (a shallow fetch of one commit);
- ``CODEBUILD_CLONE_REF``: a clone with the branch's history, checked out on the branch at
  the commit, whose ``origin`` is the remote's URL (never with credentials). AWS hands the
  build a reference to clone itself; here the clone travels in the artifact, so the build
  needs no git credentials and ``git log`` works inside it.
"""

from __future__ import annotations

import re
import shutil
from abc import abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

from providers import git
from providers.base import ActionFailed, Job, Provider, ProviderConfig, Result
from providers.git import Commit, Failure, GitError, Limits, Remote
from providers.git_remotes import GitSettings, Located
from providers.s3_source import bool_string
from providers.ziputil import MAX_BYTES_SETTING, MAX_FILES_SETTING


class OutputArtifactFormat(StrEnum):
    CODE_ZIP = "CODE_ZIP"
    CODEBUILD_CLONE_REF = "CODEBUILD_CLONE_REF"


# What git accepts as a branch name, minus what would let one escape ``refs/heads/``.
_BRANCH = re.compile(r"^(?!/)(?!.*(\.\.|//|@\{|\\))[^\x00-\x20~^:?*\[\x7f]+(?<![/.])$")


def check_branch(value: str) -> str:
    if not _BRANCH.match(value) or value.endswith(".lock") or value.startswith("-"):
        raise ValueError(f"{value!r} is not a valid git branch name")
    return value


def check_bool(value: Any) -> Any:
    value = bool_string(value)
    if value is not None and value not in ("true", "false"):
        raise ValueError('must be "true" or "false"')
    return value


# Field types the git sources' configurations share: a branch name git accepts, and a
# CodePipeline boolean string ("true" / "false", any case, or a JSON boolean).
GitBranch = Annotated[str, AfterValidator(check_branch)]
BoolFlag = Annotated[str | None, BeforeValidator(check_bool)]


class GitSourceConfig(ProviderConfig):
    """What the git-backed sources share: the artifact format."""

    OutputArtifactFormat: OutputArtifactFormat = OutputArtifactFormat.CODE_ZIP


@dataclass(frozen=True)
class Fetched:
    commit: Commit
    remote: Remote
    branch: str
    # CODE_ZIP made by ``git archive`` (the output directory stays empty), when it could be
    archive: Path | None = None


class GitSource(Provider):
    """Base of the git-backed sources. Settings are read from the environment on each run
    (a worker picks up a changed repository map without a restart) unless given."""

    min_outputs = 1
    max_outputs = 1

    def __init__(self, settings: GitSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> GitSettings:
        return self._settings if self._settings is not None else GitSettings.load()

    @abstractmethod
    def locate(self, config: Any, settings: GitSettings) -> Located: ...

    @abstractmethod
    def branch(self, config: Any) -> str: ...

    @abstractmethod
    def output_variables(self, config: Any, fetched: Fetched) -> dict[str, str]: ...

    def revision_summary(self, config: Any, fetched: Fetched) -> str:
        return fetched.commit.summary

    def run(self, job: Job) -> Result:
        config = job.configuration
        settings = self.settings
        located = self.locate(config, settings)
        branch = self.branch(config)
        pinned = job.revision
        if pinned is not None and not git.COMMIT_ID.match(pinned):
            raise ActionFailed(
                f"this execution pins {job.action_name} to {pinned!r}, which is not a git "
                "commit id (40 hexadecimal digits)"
            )
        limits = Limits(settings.timeout_seconds, job.deadline, job.cancelled)
        clone = config.OutputArtifactFormat is OutputArtifactFormat.CODEBUILD_CLONE_REF
        fetched = self._fetch_any(job, located, branch, pinned, limits, clone=clone)
        commit = fetched.commit
        first_line = commit.summary.splitlines()[0] if commit.summary else ""
        job.log.write(f"Commit {commit.id} ({commit.author_date}): {first_line}\n")
        ready = {}
        if fetched.archive is not None:
            (name,) = job.outputs
            ready[name] = fetched.archive
        return Result(
            ready_outputs=ready,
            summary=first_line or f"Commit {commit.id}",
            revision_id=commit.id,
            revision_summary=self.revision_summary(config, fetched),
            external_execution_id=commit.id,
            output_variables=self.output_variables(config, fetched),
        )

    # ------------------------------------------------------------------ fetching

    def _fetch_any(
        self,
        job: Job,
        located: Located,
        branch: str,
        pinned: str | None,
        limits: Limits,
        *,
        clone: bool,
    ) -> Fetched:
        """Try each candidate remote in turn; the first that has the repository is used."""
        (output,) = job.outputs.values()
        tried: list[str] = []
        for remote in located.candidates:
            what = f"commit {pinned}" if pinned else f"branch {branch!r}"
            job.log.write(f"Fetching {what} of {located.name} from {remote.display}\n")
            repo = output if clone else job.workdir / f"git-{len(tried)}"
            try:
                if clone:
                    sha = self._clone(repo, remote, branch, pinned, limits)
                    archive = None
                else:
                    sha = self._shallow(repo, remote, branch, pinned, limits)
                    archive = _archive(job, repo, sha, limits)
                    if archive is None:
                        git.checkout_tree(repo, sha, output, limits)
                commit = git.commit_info(repo, sha, limits)
            except GitError as exc:
                if exc.kind is Failure.REPOSITORY:
                    tried.append(remote.display)
                    job.log.write(f"  not found there ({exc.message})\n")
                    _empty(output)
                    continue
                raise self._failure(exc, located, remote, branch, pinned) from exc
            return Fetched(commit, remote, branch, archive)
        raise ActionFailed(
            f"repository {located.name!r} not found (tried {', '.join(tried)}); "
            f"check {located.settings_hint}"
        )

    @staticmethod
    def _shallow(
        repo: Path, remote: Remote, branch: str, pinned: str | None, limits: Limits
    ) -> str:
        git.init(repo, limits, bare=True)
        if pinned is None:
            return git.fetch(repo, remote, f"refs/heads/{branch}", limits, depth=1)
        try:
            return git.fetch(repo, remote, pinned, limits, depth=1)
        except GitError as exc:
            if exc.kind not in (Failure.COMMIT, Failure.OTHER):
                raise
        # A server that refuses a commit by id (no protocol v2, uploadpack settings) still
        # serves the branch: fetch its history and look for the commit there.
        git.fetch(repo, remote, f"refs/heads/{branch}", limits, depth=None)
        if not git.has_commit(repo, pinned, limits):
            raise GitError(Failure.COMMIT, f"commit {pinned} is not on branch {branch!r}")
        return pinned

    @staticmethod
    def _clone(repo: Path, remote: Remote, branch: str, pinned: str | None, limits: Limits) -> str:
        git.init(repo, limits)
        tip = git.fetch(
            repo, remote, f"refs/heads/{branch}", limits, depth=None, target=_tracking(branch)
        )
        sha = pinned or tip
        if not git.has_commit(repo, sha, limits):
            git.fetch(repo, remote, sha, limits, depth=None, target="refs/conveyor/pinned")
            git.run(["-C", str(repo), "update-ref", "-d", "refs/conveyor/pinned"], limits=limits)
        git.checkout_branch(repo, branch, sha, limits)
        git.run(["-C", str(repo), "remote", "add", "origin", remote.display], limits=limits)
        git.run(
            ["-C", str(repo), "branch", "-q", f"--set-upstream-to=origin/{branch}", branch],
            limits=limits,
        )
        return sha

    @staticmethod
    def _failure(
        exc: GitError, located: Located, remote: Remote, branch: str, pinned: str | None
    ) -> ActionFailed:
        where = f"{located.name} ({remote.display})"
        if exc.kind is Failure.BRANCH:
            return ActionFailed(f"branch {branch!r} does not exist in {where}")
        if exc.kind is Failure.COMMIT:
            return ActionFailed(f"commit {pinned} not found in {where}: {exc.message}")
        if exc.kind is Failure.AUTH:
            return ActionFailed(
                f"authentication to {where} failed: check the credentials configured in "
                f"{located.settings_hint} ({exc.message})"
            )
        if exc.kind is Failure.UNREACHABLE:
            return ActionFailed(f"cannot reach {where}: {exc.message}", retryable=True)
        if exc.kind is Failure.TIMEOUT:
            return ActionFailed(f"fetching {where}: {exc.message}", retryable=True)
        if exc.kind is Failure.CANCELLED:
            return ActionFailed(f"fetching {where}: stopped")
        return ActionFailed(f"fetching {where}: {exc.message}")


# Tree entries a zip made by ``git archive`` would not hold as a checkout does: symlinks
# (archived as link entries, which consumers refuse) and submodules (left out).
_CHECKOUT_ONLY_MODES = ("120000", "160000")


def _archive(job: Job, repo: Path, sha: str, limits: Limits) -> Path | None:
    """CODE_ZIP straight from the object store: no file is written twice (checked out,
    then zipped). Judged against the artifact limits before anything is written, either
    way. None when the tree holds a symlink or a submodule: those are checked out and
    zipped the usual way."""
    entries = git.tree_entries(repo, sha, limits)
    total = sum(e.size for e in entries)
    if len(entries) > job.max_artifact_files:
        raise ActionFailed(
            f"commit {sha} has {len(entries)} files; the artifact limit is "
            f"{job.max_artifact_files} files ({MAX_FILES_SETTING})"
        )
    if total > job.max_artifact_bytes:
        raise ActionFailed(
            f"commit {sha} holds {total} bytes; the artifact limit is "
            f"{job.max_artifact_bytes} bytes ({MAX_BYTES_SETTING})"
        )
    if any(e.mode in _CHECKOUT_ONLY_MODES for e in entries):
        return None
    dest = job.workdir / f"source-{sha[:12]}.zip"
    git.archive_zip(repo, sha, dest, limits)
    return dest


def _tracking(branch: str) -> str:
    return f"refs/remotes/origin/{branch}"


def _empty(directory: Path) -> None:
    """A candidate that failed may have left files (a clone's ``.git``): start clean."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def commit_variables(fetched: Fetched) -> dict[str, str]:
    """The variables every git source emits, named as CodePipeline names them."""
    c = fetched.commit
    return {
        "CommitId": c.id,
        "CommitMessage": c.message,
        "AuthorDate": c.author_date,
        "CommitterDate": c.committer_date,
        "BranchName": fetched.branch,
    }
