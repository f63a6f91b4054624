"""Pure units of the git sources: settings, remote resolution, credentials handling, git
error classification and the configuration models."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from engine.execution import ExecutionState
from providers.base import ActionFailed
from providers.codecommit import CodeCommitConfig
from providers.codestar_connection import CodeStarSourceConnectionConfig
from providers.git import Failure, Remote, classify
from providers.git_remotes import (
    GitSettings,
    connection_provider_type,
    locate_codecommit,
    locate_connection,
    locate_github,
)
from providers.git_source import OutputArtifactFormat
from providers.github_source import GitHubConfig
from workers.runner import _pinned_revision

SECRET = "hunter2-Zq8"
ARN = "arn:aws:codestar-connections:eu-west-1:111122223333:connection/x"


def urls(located: Any) -> list[str]:
    return [r.url for r in located.candidates]


# ---------------------------------------------------------------------------- Remote


def test_credentials_in_a_url_are_moved_out_of_it() -> None:
    r = Remote.parse(f"https://bot:{SECRET}@git.example.com:8443/team/app.git")
    assert r.url == "https://git.example.com:8443/team/app.git"
    assert (r.username, r.password) == ("bot", SECRET)
    assert SECRET not in repr(r)


def test_credentials_travel_as_a_header_scoped_to_the_remote() -> None:
    r = Remote("https://git.example.com/app.git", "bot", SECRET)
    env = r.env()
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com/app.git.extraHeader"
    token = base64.b64encode(f"bot:{SECRET}".encode()).decode()
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {token}"
    assert Remote("git://host/app", "bot", SECRET).env() == {}  # git:// has no auth
    assert Remote("https://host/app").env() == {}


def test_redact_hides_every_form_of_the_password() -> None:
    r = Remote("https://h/app", "bot", SECRET)
    token = base64.b64encode(f"bot:{SECRET}".encode()).decode()
    text = r.redact(f"a {SECRET} b bot:{SECRET} c {token}")
    assert SECRET not in text and token not in text
    assert text.count("****") == 3


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("fatal: Authentication failed for 'http://h/app/'", Failure.AUTH),
        ("fatal: could not read Username for 'https://h': terminal prompts disabled", Failure.AUTH),
        ("fatal: remote error: access denied or repository not exported: /x", Failure.REPOSITORY),
        ("fatal: repository 'http://h/x/' not found", Failure.REPOSITORY),
        ("fatal: couldn't find remote ref refs/heads/nope", Failure.BRANCH),
        ("fatal: remote error: upload-pack: not our ref 0123", Failure.COMMIT),
        ("fatal: unable to connect to 127.0.0.1:\nerrno=Connection refused", Failure.UNREACHABLE),
        ("fatal: unable to access 'https://h/': Could not resolve host: h", Failure.UNREACHABLE),
        (
            "error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
            Failure.UNREACHABLE,
        ),
        ("fatal: something else entirely", Failure.OTHER),
    ],
)
def test_git_errors_are_classified(stderr: str, kind: Failure) -> None:
    assert classify(stderr) is kind


# ---------------------------------------------------------------------------- resolving


def test_a_repository_map_wins_over_the_base_url() -> None:
    s = GitSettings(
        base_url="https://git.example.com/repos",
        repositories={"app": "git://other/app", "svc": {"url": "https://h/svc.git"}},
    )
    assert urls(locate_codecommit(s, "app")) == ["git://other/app"]
    assert urls(locate_codecommit(s, "svc")) == ["https://h/svc.git"]
    assert urls(locate_codecommit(s, "lib")) == [
        "https://git.example.com/repos/lib",
        "https://git.example.com/repos/lib.git",
    ]


def test_a_base_directory_names_the_repository_that_is_there(tmp_path: Path) -> None:
    (tmp_path / "app.git").mkdir()
    (tmp_path / "plain").mkdir()
    s = GitSettings(base_url=str(tmp_path))
    assert urls(locate_codecommit(s, "app")) == [f"{tmp_path}/app.git"]
    assert urls(locate_codecommit(s, "plain")) == [f"{tmp_path}/plain"]
    with pytest.raises(ActionFailed) as err:
        locate_codecommit(s, "gone")
    assert err.value.message == (
        f"repository 'gone' not found under {tmp_path} (looked for {tmp_path}/gone and "
        f"{tmp_path}/gone.git; CONVEYOR_GIT_REPOSITORIES or CONVEYOR_GIT_BASE_URL)"
    )


def test_an_unconfigured_repository_says_what_to_set() -> None:
    with pytest.raises(ActionFailed) as err:
        locate_codecommit(GitSettings(), "app")
    assert "repository 'app' is not configured" in err.value.message
    assert "CONVEYOR_GIT_REPOSITORIES" in err.value.message
    assert "CONVEYOR_GIT_BASE_URL" in err.value.message


def test_base_credentials_come_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(SECRET + "\n")
    s = GitSettings(base_url="https://h", username="bot", password_file=f)
    (first, _) = locate_codecommit(s, "app").candidates
    assert (first.username, first.password) == ("bot", SECRET)
    f.unlink()
    with pytest.raises(ActionFailed) as err:
        locate_codecommit(s, "app")
    assert f"cannot read the password file {f}" in err.value.message


def test_connections_map_arns_to_a_base_and_a_provider_type(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text(SECRET)
    s = GitSettings(
        connections={
            ARN: {
                "url": "https://gitlab.example.com/",
                "providerType": "GitLab",
                "tokenFile": str(token),
            }
        }
    )
    located = locate_connection(s, ARN, "grp/app")
    assert urls(located) == [
        "https://gitlab.example.com/grp/app",
        "https://gitlab.example.com/grp/app.git",
    ]
    assert located.candidates[0].password == SECRET
    assert connection_provider_type(s, ARN) == "GitLab"
    with pytest.raises(ActionFailed) as err:
        locate_connection(s, ARN + "-other", "grp/app")
    assert f"connection {ARN}-other is not configured" in err.value.message
    assert "CONVEYOR_GIT_CONNECTIONS" in err.value.message


def test_github_uses_settings_credentials() -> None:
    s = GitSettings(github_url="https://ghe.example.com", github_token=SECRET)
    (first, second) = locate_github(s, "octo", "app").candidates
    assert first.url == "https://ghe.example.com/octo/app"
    assert second.url == "https://ghe.example.com/octo/app.git"
    assert (first.username, first.password) == ("x-access-token", SECRET)
    assert locate_github(GitSettings(), "o", "r").candidates[0].password is None


# ---------------------------------------------------------------------------- from the env


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "repos.json"
    f.write_text(json.dumps({"app": "git://from-file/app", "lib": "git://from-file/lib"}))
    monkeypatch.setenv("CONVEYOR_GIT_REPOSITORIES", json.dumps({"app": "git://from-env/app"}))
    monkeypatch.setenv("CONVEYOR_GIT_REPOSITORIES_FILE", str(f))
    monkeypatch.setenv("CONVEYOR_GIT_CONNECTIONS", json.dumps({ARN: {"url": "https://h"}}))
    s = GitSettings.load()
    assert urls(locate_codecommit(s, "app")) == ["git://from-env/app"]  # the env wins
    assert urls(locate_codecommit(s, "lib")) == ["git://from-file/lib"]
    assert connection_provider_type(s, ARN) == "GitHub"


def test_invalid_json_names_the_variable_not_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_GIT_REPOSITORIES", '{"app": {"url": "x", "password": "' + SECRET)
    with pytest.raises(ActionFailed) as err:
        GitSettings.load()
    assert "CONVEYOR_GIT_REPOSITORIES" in err.value.message
    assert SECRET not in err.value.message


def test_a_bad_entry_names_where_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"app": {"url": "x", "password": SECRET, "pasword_file": "/x"}}
    monkeypatch.setenv("CONVEYOR_GIT_REPOSITORIES", json.dumps(bad))
    with pytest.raises(ActionFailed) as err:
        GitSettings.load()
    assert "CONVEYOR_GIT_REPOSITORIES[app" in err.value.message
    assert "pasword_file" in err.value.message
    assert SECRET not in err.value.message


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({ARN: {"providerType": "GitHub"}}))
    with pytest.raises(ActionFailed) as err:
        GitSettings(connections_file=f).connection_map()
    assert err.value.message.startswith(f"CONVEYOR_GIT_CONNECTIONS_FILE: {f}: ")
    assert "url: Field required" in err.value.message
    f.write_text("{nope")
    with pytest.raises(ActionFailed) as err:
        GitSettings(connections_file=f).connection_map()
    assert "is not valid JSON" in err.value.message


# ---------------------------------------------------------------------------- configuration


def test_codecommit_config() -> None:
    c = CodeCommitConfig.model_validate(
        {"RepositoryName": "app", "BranchName": "release/1.2", "PollForSourceChanges": False}
    )
    assert c.OutputArtifactFormat is OutputArtifactFormat.CODE_ZIP
    assert c.PollForSourceChanges == "false"
    for bad in (
        {"RepositoryName": "../etc"},
        {"RepositoryName": "a/b"},
        {"BranchName": "a..b"},
        {"BranchName": "-x"},
        {"OutputArtifactFormat": "TARBALL"},
    ):
        with pytest.raises(ValidationError) as err:
            CodeCommitConfig.model_validate({"RepositoryName": "app", "BranchName": "main", **bad})
        assert next(iter(bad)) in str(err.value)


def test_codestar_and_github_configs() -> None:
    c = CodeStarSourceConnectionConfig.model_validate(
        {
            "ConnectionArn": ARN,
            "FullRepositoryId": "org/app",
            "BranchName": "main",
            "OutputArtifactFormat": "CODEBUILD_CLONE_REF",
            "DetectChanges": "true",
        }
    )
    assert c.OutputArtifactFormat is OutputArtifactFormat.CODEBUILD_CLONE_REF
    with pytest.raises(ValidationError, match="FullRepositoryId"):
        CodeStarSourceConnectionConfig.model_validate(
            {"ConnectionArn": ARN, "FullRepositoryId": "../app", "BranchName": "main"}
        )
    g = GitHubConfig.model_validate(
        {"Owner": "o", "Repo": "r", "Branch": "main", "OAuthToken": "****"}
    )
    assert g.OAuthToken == "****"  # accepted, never used


# ---------------------------------------------------------------------------- pinning


def state(*revisions: dict[str, str]) -> ExecutionState:
    return cast(ExecutionState, SimpleNamespace(source_revisions=list(revisions)))


def test_commit_revisions_pin_their_source_action() -> None:
    sha = "a" * 40
    s = state({"actionName": "Fetch", "revisionType": "COMMIT_ID", "revisionId": sha})
    assert _pinned_revision(s, "Fetch") == sha
    assert _pinned_revision(s, "Other") is None
    # A recorded revision of a finished action (no type) pins nothing.
    assert _pinned_revision(state({"actionName": "Fetch", "revisionId": sha}), "Fetch") is None
