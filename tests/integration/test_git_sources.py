"""The git-backed sources against real git servers: ``git daemon`` (git://) and
``git http-backend`` behind basic auth (http://), both on loopback."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import ActionFailed, Job, Provider, S3Access
from providers.codecommit import CodeCommitSource
from providers.codestar_connection import CodeStarSourceConnection
from providers.git_remotes import GitSettings
from providers.github_source import GitHubSource
from tests.gitserve import GitHttpServer, Repo, git, git_daemon, make_repo
from workers.devstack import free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "builder", "s3cr3t-Pa55word-7f1c"
ARN = "arn:aws:codestar-connections:us-east-1:123456789012:connection/abcd-1234"
FILES = {"buildspec.yml": "version: 0.2\n", "src/app.py": "print('v1')\n"}
NO_S3 = S3Access("http://127.0.0.1:1", "x", "x", "us-east-1")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def repo(served: Path) -> Repo:
    repo = make_repo(served, "app.git", FILES)
    repo.commit({"src/app.py": "print('v2')\n"}, "second: bump to v2\n\nwith a body line")
    return repo


@pytest.fixture(scope="module")
def daemon(served: Path, repo: Repo) -> Iterator[str]:
    with git_daemon(served) as url:
        yield url


@pytest.fixture(scope="module")
def http(served: Path, repo: Repo) -> Iterator[GitHttpServer]:
    with GitHttpServer(served, USER, PASSWORD) as server:
        yield server


def make_job(tmp_path: Path, provider: type[Provider], config: dict[str, Any], **kw: Any) -> Job:
    out = tmp_path / "out" / "Src"
    out.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    return Job(
        pipeline_name="p",
        execution_id="e",
        stage_name="Source",
        action_name="Fetch",
        attempt=1,
        configuration=provider.Config.model_validate(config),
        variables={},
        inputs={},
        outputs={"Src": out},
        workdir=work,
        log=io.StringIO(),
        s3=NO_S3,
        **kw,
    )


def files_under(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def code_zip(job: Job, result: Any, name: str = "Src") -> dict[str, str]:
    """The CODE_ZIP artifact's files: the zip the provider made (``git archive``), else
    what it left in the output directory for the worker to zip."""
    ready = result.ready_outputs.get(name)
    if ready is None:
        return files_under(job.outputs[name])
    assert not any(job.outputs[name].iterdir()), "an archive and a directory both"
    with zipfile.ZipFile(ready) as zf:
        return {i.filename: zf.read(i).decode() for i in zf.infolist() if not i.is_dir()}


def codecommit(
    tmp_path: Path, settings: GitSettings, *, branch: str = "main", **kw: Any
) -> tuple[Job, Any]:
    config = {"RepositoryName": "app", "BranchName": branch, **kw.pop("config", {})}
    job = make_job(tmp_path, CodeCommitSource, config, **kw)
    return job, CodeCommitSource(settings).run(job)


# ---------------------------------------------------------------------------- git://


def test_code_zip_over_git_daemon(tmp_path: Path, daemon: str, repo: Repo) -> None:
    job, result = codecommit(tmp_path, GitSettings(base_url=daemon))
    assert code_zip(job, result) == {
        "buildspec.yml": "version: 0.2\n",
        "src/app.py": "print('v2')\n",
    }
    assert result.ready_outputs  # made straight from the object store
    head = repo.commits[-1]
    assert result.revision_id == head
    assert result.revision_summary == "second: bump to v2\n\nwith a body line"
    assert result.summary == "second: bump to v2"
    v = result.output_variables
    assert v["CommitId"] == head
    assert v["BranchName"] == "main"
    assert v["RepositoryName"] == "app"
    assert v["CommitMessage"] == "second: bump to v2\n\nwith a body line"
    assert set(v) == {
        "CommitId",
        "CommitMessage",
        "AuthorDate",
        "CommitterDate",
        "BranchName",
        "RepositoryName",
    }
    assert v["AuthorDate"].endswith("Z") and v["AuthorDate"][:4].isdigit()


def test_clone_ref_has_history(tmp_path: Path, daemon: str, repo: Repo) -> None:
    job, result = codecommit(
        tmp_path,
        GitSettings(base_url=daemon),
        config={"OutputArtifactFormat": "CODEBUILD_CLONE_REF"},
    )
    out = job.outputs["Src"]
    assert (out / ".git").is_dir()
    log = git("log", "--format=%H %s", cwd=out).splitlines()
    assert log == [f"{repo.commits[1]} second: bump to v2", f"{repo.commits[0]} initial commit"]
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=out).strip() == "main"
    assert git("remote", "get-url", "origin", cwd=out).strip() == f"{daemon}/app"
    assert files_under(out)["src/app.py"] == "print('v2')\n"
    assert result.revision_id == repo.commits[1]


def test_pinned_commit_is_fetched_exactly(tmp_path: Path, daemon: str, repo: Repo) -> None:
    first = repo.commits[0]
    job, result = codecommit(tmp_path, GitSettings(base_url=daemon), revision=first)
    assert result.revision_id == first
    assert result.output_variables["CommitMessage"] == "initial commit"
    assert result.output_variables["AuthorDate"] == "2024-01-02T01:04:05Z"
    assert code_zip(job, result)["src/app.py"] == "print('v1')\n"


def test_pinned_commit_in_a_clone_ref(tmp_path: Path, daemon: str, repo: Repo) -> None:
    first = repo.commits[0]
    job, result = codecommit(
        tmp_path,
        GitSettings(base_url=daemon),
        revision=first,
        config={"OutputArtifactFormat": "CODEBUILD_CLONE_REF"},
    )
    out = job.outputs["Src"]
    assert git("rev-parse", "HEAD", cwd=out).strip() == first
    assert result.revision_id == first


def test_unknown_commit_is_named(tmp_path: Path, daemon: str) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(ActionFailed) as err:
        codecommit(tmp_path, GitSettings(base_url=daemon), revision=missing)
    assert f"commit {missing} not found in app ({daemon}/app" in err.value.message
    assert not err.value.retryable


def test_missing_branch_is_named(tmp_path: Path, daemon: str) -> None:
    with pytest.raises(ActionFailed) as err:
        codecommit(tmp_path, GitSettings(base_url=daemon), branch="release/9")
    assert err.value.message == f"branch 'release/9' does not exist in app ({daemon}/app)"
    assert not err.value.retryable


def test_unknown_repository_names_what_was_tried(tmp_path: Path, daemon: str) -> None:
    job = make_job(tmp_path, CodeCommitSource, {"RepositoryName": "nope", "BranchName": "main"})
    with pytest.raises(ActionFailed) as err:
        CodeCommitSource(GitSettings(base_url=daemon)).run(job)
    msg = err.value.message
    assert "repository 'nope' not found" in msg
    assert f"{daemon}/nope, {daemon}/nope.git" in msg
    assert "CONVEYOR_GIT_BASE_URL" in msg


def test_unreachable_remote_is_retryable(tmp_path: Path) -> None:
    dead = f"git://127.0.0.1:{free_port()}"
    with pytest.raises(ActionFailed) as err:
        codecommit(tmp_path, GitSettings(base_url=dead))
    assert err.value.retryable
    assert "cannot reach app" in err.value.message


def test_a_local_directory_base(tmp_path: Path, served: Path, repo: Repo) -> None:
    _, result = codecommit(tmp_path, GitSettings(base_url=str(served)))
    assert result.revision_id == repo.commits[-1]


def test_a_stop_kills_the_fetch(tmp_path: Path) -> None:
    # A server that accepts and never answers: only the stop can end the fetch.
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    cancelled = threading.Event()
    threading.Timer(1.0, cancelled.set).start()
    started = time.monotonic()
    try:
        with pytest.raises(ActionFailed) as err:
            codecommit(
                tmp_path, GitSettings(base_url=f"git://127.0.0.1:{port}"), cancelled=cancelled
            )
    finally:
        sock.close()
    assert "stopped" in err.value.message
    assert time.monotonic() - started < 15
    left = subprocess.run(
        ["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True
    ).stdout
    assert left.strip() == ""


# ---------------------------------------------------------------------------- http + auth


def test_code_zip_over_authenticated_http(tmp_path: Path, http: GitHttpServer, repo: Repo) -> None:
    settings = GitSettings(
        repositories={"app": {"url": f"{http.url}/app.git", "username": USER, "password": PASSWORD}}
    )
    job, result = codecommit(tmp_path, settings)
    assert result.revision_id == repo.commits[-1]
    assert code_zip(job, result)["src/app.py"] == "print('v2')\n"
    assert PASSWORD not in job.log.getvalue()  # type: ignore[attr-defined]


def test_clone_ref_over_http_keeps_no_credentials(
    tmp_path: Path, http: GitHttpServer, repo: Repo
) -> None:
    secret = tmp_path / "token"
    secret.write_text(PASSWORD + "\n")
    settings = GitSettings(base_url=http.url + "/", username=USER, password_file=secret)
    job, _ = codecommit(tmp_path, settings, config={"OutputArtifactFormat": "CODEBUILD_CLONE_REF"})
    out = job.outputs["Src"]
    assert len(git("log", "--oneline", cwd=out).splitlines()) == 2
    blob = b"".join(p.read_bytes() for p in (out / ".git").rglob("*") if p.is_file())
    assert PASSWORD.encode() not in blob
    # <base>/app is tried first, and http-backend finds app.git for it as git does.
    assert git("remote", "get-url", "origin", cwd=out).strip() == f"{http.url}/app"


def test_wrong_password_is_refused_without_echoing_it(tmp_path: Path, http: GitHttpServer) -> None:
    wrong = "not-the-Pa55word-9d2e"
    settings = GitSettings(
        repositories={
            "app": f"http://{USER}:{wrong}@127.0.0.1:{http.url.rsplit(':', 1)[1]}/app.git"
        }
    )
    job = make_job(tmp_path, CodeCommitSource, {"RepositoryName": "app", "BranchName": "main"})
    with pytest.raises(ActionFailed) as err:
        CodeCommitSource(settings).run(job)
    msg = err.value.message
    assert "authentication to app (http://127.0.0.1:" in msg
    assert "CONVEYOR_GIT_REPOSITORIES[app]" in msg
    assert wrong not in msg and wrong not in job.log.getvalue()  # type: ignore[attr-defined]
    assert not err.value.retryable


def test_codestar_connection_over_http(tmp_path: Path, http: GitHttpServer, repo: Repo) -> None:
    # The server's root holds app.git; a connection's base is the owner's parent here.
    token = tmp_path / "token"
    token.write_text(PASSWORD)
    settings = GitSettings(
        connections={
            ARN: {
                "url": http.url,
                "providerType": "GitLab",
                "username": USER,
                "tokenFile": str(token),
            }
        }
    )
    config = {"ConnectionArn": ARN, "FullRepositoryId": "team/svc", "BranchName": "main"}
    served = Path(http.root)
    if not (served / "team" / "svc.git").exists():
        (served / "team").mkdir(exist_ok=True)
        git("clone", "-q", "--bare", str(repo.bare), str(served / "team" / "svc.git"))
    job = make_job(tmp_path, CodeStarSourceConnection, config)
    result = CodeStarSourceConnection(settings).run(job)
    v = result.output_variables
    assert v["ConnectionArn"] == ARN
    assert v["FullRepositoryName"] == "team/svc"
    assert v["CommitId"] == repo.commits[-1] == result.revision_id
    assert "CommitterDate" not in v and "RepositoryName" not in v
    assert json.loads(result.revision_summary or "") == {
        "ProviderType": "GitLab",
        "CommitMessage": "second: bump to v2\n\nwith a body line",
    }


def test_github_v1_ignores_the_oauth_token_in_the_definition(
    tmp_path: Path, http: GitHttpServer, repo: Repo
) -> None:
    served = Path(http.root)
    if not (served / "octo" / "app.git").exists():
        (served / "octo").mkdir(exist_ok=True)
        git("clone", "-q", "--bare", str(repo.bare), str(served / "octo" / "app.git"))
    config = {"Owner": "octo", "Repo": "app", "Branch": "main", "OAuthToken": PASSWORD}
    # The right token in the definition, none in settings: refused, so it was not used.
    job = make_job(tmp_path / "a", GitHubSource, config)
    with pytest.raises(ActionFailed) as err:
        GitHubSource(GitSettings(github_url=http.url)).run(job)
    assert "authentication to octo/app" in err.value.message
    assert PASSWORD not in err.value.message
    # The token from settings works.
    job = make_job(tmp_path / "b", GitHubSource, config)
    settings = GitSettings(github_url=http.url, github_username=USER, github_token=PASSWORD)
    result = GitHubSource(settings).run(job)
    assert result.revision_id == repo.commits[-1]
    assert result.output_variables["RepositoryName"] == "app"
    assert "CommitUrl" not in result.output_variables  # not github.com


def test_code_zip_keeps_export_ignored_files_and_checks_out_symlinks(
    tmp_path: Path, daemon: str, repo: Repo
) -> None:
    """``git archive`` would drop export-ignore'd files and keep links as link entries
    (which consumers refuse): the artifact must hold what a checkout holds either way."""
    repo.commit({".gitattributes": "secret.txt export-ignore\n", "secret.txt": "kept\n"}, "attrs")
    job, result = codecommit(tmp_path / "a", GitSettings(base_url=daemon))
    assert code_zip(job, result)["secret.txt"] == "kept\n"

    (repo.work / "link.py").symlink_to("src/app.py")
    repo.commit({}, "a symlink")
    job, result = codecommit(tmp_path / "b", GitSettings(base_url=daemon))
    assert not result.ready_outputs  # checked out and zipped by the worker instead
    assert (job.outputs["Src"] / "link.py").read_text() == "print('v2')\n"


def test_code_zip_over_the_artifact_limit_fails_before_archiving(
    tmp_path: Path, daemon: str, repo: Repo
) -> None:
    job = make_job(tmp_path, CodeCommitSource, {"RepositoryName": "app", "BranchName": "main"})
    job.max_artifact_files = 1
    with pytest.raises(ActionFailed, match="artifact limit is 1 files"):
        CodeCommitSource(GitSettings(base_url=daemon)).run(job)
    assert not list(job.workdir.glob("source-*.zip"))
