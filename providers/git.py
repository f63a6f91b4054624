"""Git plumbing for the git-backed source providers: the ``git`` binary in a subprocess.

Why the binary and not a library: it speaks every transport (file, git://, ssh, smart
HTTP) with the server's own protocol v2 negotiation, and fetching one commit shallowly is
one command. Each command runs in its own process group, so a timeout, the action's
deadline or a stop kills git and its helpers (``git-remote-http``, ``index-pack``)
together.

Credentials never go into a URL, where git would print them and a clone would keep them
in ``.git/config``: HTTP basic credentials travel as an ``http.<url>.extraHeader`` given
through ``GIT_CONFIG_*`` environment variables, scoped to the remote's own URL, and every
message that leaves this module passes through :meth:`Remote.redact`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

GIT = "git"
# A commit id as git prints it (SHA-1; SHA-256 repositories print 64).
COMMIT_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class Failure(StrEnum):
    """What went wrong, as far as git's own words tell."""

    REPOSITORY = "repository"  # no such repository at that remote
    BRANCH = "branch"
    COMMIT = "commit"
    AUTH = "auth"  # credentials missing or refused
    UNREACHABLE = "unreachable"  # network, server down, 5xx: may pass
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    OTHER = "other"


class GitError(Exception):
    """A git command failed; ``message`` is already free of credentials."""

    def __init__(self, kind: Failure, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.kind in (Failure.UNREACHABLE, Failure.TIMEOUT)


@dataclass(frozen=True)
class Remote:
    """A git remote: its URL (never holding credentials) and, for HTTP(S), basic auth."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, username: str | None = None, password: str | None = None) -> Remote:
        """Credentials written into the URL (``https://user:token@host/...``) are moved out
        of it, so they are sent the same way as configured ones and never printed."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and (parts.username or parts.password):
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
            return cls(clean, username or parts.username, password or parts.password)
        return cls(url, username, password)

    @property
    def is_http(self) -> bool:
        return self.url.startswith(("http://", "https://"))

    @property
    def display(self) -> str:
        """The URL as people may see it (it holds no credentials by construction)."""
        return self.url

    def secrets(self) -> list[str]:
        """Every form in which the password could show up in git's output."""
        if not self.password:
            return []
        pair = f"{self.username or ''}:{self.password}"
        return [
            self.password,
            pair,
            base64.b64encode(pair.encode()).decode(),
        ]

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "****")
        return text

    def env(self) -> dict[str, str]:
        """Git configuration for this remote's credentials, as environment variables (so
        nothing is written to disk and nothing shows in ``ps``)."""
        if not self.password or not self.is_http:
            return {}
        pair = f"{self.username or ''}:{self.password}"
        token = base64.b64encode(pair.encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{self.url}.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
        }


@dataclass(frozen=True)
class Commit:
    id: str
    message: str
    author_date: str  # ISO-8601, UTC
    committer_date: str
    author_name: str
    author_email: str

    @property
    def summary(self) -> str:
        return self.message.strip()


@dataclass
class Limits:
    """When a git command must give up: its own cap, the action's deadline, a stop."""

    timeout: float
    deadline: float | None = None  # epoch seconds
    cancelled: threading.Event | None = None

    def remaining(self) -> float:
        left = self.timeout
        if self.deadline is not None:
            left = min(left, self.deadline - time.time())
        return left


def base_env() -> dict[str, str]:
    """A predictable git: no prompts (a missing password fails instead of hanging), no
    user or system configuration, English messages (they are parsed)."""
    keep = ("PATH", "HOME", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",  # answers every prompt with nothing
            "SSH_ASKPASS": "true",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "LC_ALL": "C",
            "LANG": "C",
        }
    )
    return env


def run(
    args: list[str],
    *,
    limits: Limits,
    remote: Remote | None = None,
    cwd: Path | None = None,
    what: str = "git",
) -> str:
    """Run ``git ARGS``; its stdout, or GitError with the classified, redacted stderr."""
    env = base_env()
    if remote is not None:
        env.update(remote.env())
    redact = remote.redact if remote is not None else (lambda s: s)
    left = limits.remaining()
    if left <= 0:
        raise GitError(Failure.TIMEOUT, f"{what}: no time left before the action's deadline")
    try:
        proc = subprocess.Popen(
            [GIT, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed whole
        )
    except FileNotFoundError as exc:
        raise GitError(Failure.OTHER, "the git binary is not installed on this worker") from exc
    ends = time.monotonic() + left
    while True:
        try:
            out, err = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            stop = None
            if limits.cancelled is not None and limits.cancelled.is_set():
                stop = Failure.CANCELLED, f"{what}: stopped"
            elif time.monotonic() >= ends:
                stop = Failure.TIMEOUT, f"{what}: timed out after {left:.0f} s"
            if stop is not None:
                _kill_group(proc)
                raise GitError(*stop) from None
    stderr = redact(err.decode("utf-8", "replace")).strip()
    if proc.returncode != 0:
        kind = classify(stderr)
        raise GitError(kind, f"{what}: {last_lines(stderr) or f'exit status {proc.returncode}'}")
    return out.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


# Git's own words, lowercased, for each kind of failure. Checked in order: an HTTP 401
# also prints "unable to access", so authentication comes before reachability.
_PATTERNS: tuple[tuple[Failure, tuple[str, ...]], ...] = (
    (
        Failure.AUTH,
        (
            "authentication failed",
            "could not read username",
            "could not read password",
            "the requested url returned error: 401",
            "the requested url returned error: 403",
            "permission denied (publickey",
            "terminal prompts disabled",
        ),
    ),
    (
        Failure.REPOSITORY,
        (
            "does not appear to be a git repository",
            "repository not found",
            "no such repository",
            "not exported",
            "the requested url returned error: 404",
            "not a git repository",
        ),
    ),
    (Failure.BRANCH, ("couldn't find remote ref",)),
    (Failure.COMMIT, ("not our ref", "no such remote ref", "unadvertised object", "bad object")),
    (
        Failure.UNREACHABLE,
        (
            "unable to connect",
            "connection refused",
            "could not resolve host",
            "failed to connect",
            "connection timed out",
            "connection reset",
            "network is unreachable",
            "the remote end hung up unexpectedly",
            "early eof",
            "the requested url returned error: 5",
            "unable to look up",
            "operation timed out",
            "gnutls",
            "rpc failed",
        ),
    ),
)


# Smart HTTP's 404: "fatal: repository 'https://host/x/' not found".
_HTTP_NOT_FOUND = re.compile(r"repository '[^']*' not found")


def classify(stderr: str) -> Failure:
    low = stderr.lower()
    if _HTTP_NOT_FOUND.search(low) and "authentication" not in low:
        return Failure.REPOSITORY
    for kind, needles in _PATTERNS:
        if any(n in low for n in needles):
            return kind
    return Failure.OTHER


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-n:])


# ---------------------------------------------------------------------------- operations


def ls_remote(remote: Remote, branch: str, limits: Limits) -> str | None:
    """The commit the branch is at, or None when the remote has no such branch."""
    ref = f"refs/heads/{branch}"
    out = run(
        ["ls-remote", "--", remote.url, ref], limits=limits, remote=remote, what="git ls-remote"
    )
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name.strip() == ref:
            return sha.strip()
    return None


def init(gitdir: Path, limits: Limits, *, bare: bool = False) -> None:
    gitdir.mkdir(parents=True, exist_ok=True)
    run(["init", "-q", *(["--bare"] if bare else []), str(gitdir)], limits=limits, what="git init")


def fetch(
    repo: Path,
    remote: Remote,
    refspec: str,
    limits: Limits,
    *,
    depth: int | None,
    target: str = "refs/conveyor/fetched",
) -> str:
    """Fetch ``refspec`` (a branch ref or a commit id) into ``target`` of the repository at
    ``repo``; returns the commit fetched."""
    args = ["-C", str(repo), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head"]
    if depth is not None:
        args.append(f"--depth={depth}")
    run(
        [*args, "--", remote.url, f"+{refspec}:{target}"],
        limits=limits,
        remote=remote,
        what="git fetch",
    )
    return run(
        ["-C", str(repo), "rev-parse", "--verify", f"{target}^{{commit}}"],
        limits=limits,
        what="git rev-parse",
    ).strip()


def has_commit(repo: Path, sha: str, limits: Limits) -> bool:
    try:
        run(["-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"], limits=limits)
    except GitError:
        return False
    return True


def commit_info(repo: Path, sha: str, limits: Limits) -> Commit:
    fmt = "%H%x00%aI%x00%cI%x00%an%x00%ae%x00%B"
    out = run(
        ["-C", str(repo), "show", "-s", f"--format={fmt}", sha, "--"],
        limits=limits,
        what="git show",
    )
    cid, adate, cdate, name, email, message = out.split("\x00", 5)
    return Commit(cid, message.rstrip("\n"), _utc(adate), _utc(cdate), name, email)


def _utc(iso: str) -> str:
    """AWS prints commit dates in UTC with a Z (``2020-05-19T15:11:37Z``)."""
    try:
        when = datetime.fromisoformat(iso.strip())
    except ValueError:
        return iso.strip()
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkout_tree(repo: Path, sha: str, dest: Path, limits: Limits) -> None:
    """Write the tree of ``sha`` into ``dest`` (no ``.git`` there): the index lives in
    ``repo``, so nothing of git's own lands in the artifact."""
    dest.mkdir(parents=True, exist_ok=True)
    run(
        ["--git-dir", str(repo), "--work-tree", str(dest), "checkout", "-q", "-f", sha, "--", "."],
        limits=limits,
        what="git checkout",
    )


@dataclass(frozen=True)
class TreeEntry:
    mode: str  # git's: 100644, 100755, 120000 (symlink), 160000 (submodule)
    size: int  # 0 for submodules
    path: str


def tree_entries(repo: Path, sha: str, limits: Limits) -> list[TreeEntry]:
    """Every file of ``sha``'s tree with its mode and size, read from the object store
    (nothing is written): what an artifact of it would hold, judged before making it."""
    out = run(["--git-dir", str(repo), "ls-tree", "-r", "-l", "-z", sha], limits=limits)
    entries = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, _kind, _oid, size = meta.split(maxsplit=3)
        entries.append(TreeEntry(mode, int(size) if size.strip().isdigit() else 0, path))
    return entries


def archive_zip(repo: Path, sha: str, dest: Path, limits: Limits) -> None:
    """``sha``'s tree as a zip, straight from the object store (no file is checked out).

    Every file is kept: the repository's own ``export-ignore`` / ``export-subst``
    attributes (meant for release tarballs) are switched off, so the archive holds what a
    checkout would."""
    info = repo / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "attributes").write_text("* -export-ignore -export-subst\n")
    run(
        ["--git-dir", str(repo), "archive", "--format=zip", "-o", str(dest), sha],
        limits=limits,
        what="git archive",
    )


def checkout_branch(repo: Path, branch: str, sha: str, limits: Limits) -> None:
    """A working clone at ``sha`` on a local ``branch`` (so ``git log`` and ``git branch``
    inside it answer as in any clone)."""
    run(
        ["-C", str(repo), "checkout", "-q", "-f", "-B", branch, sha],
        limits=limits,
        what="git checkout",
    )
