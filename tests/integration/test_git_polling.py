"""Polling git sources (GitBranchPoller) against a real ``git daemon``, real Redis and the
real Service: a new commit on the branch starts exactly one execution pinned to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.execution import ExecutionState
from engine.service import Service
from engine.store import Store
from providers import default_registry
from providers.git_remotes import GitSettings
from tests.gitserve import Repo, git_daemon, make_repo
from tests.stack import action, unique
from workers.git_poller import COMMIT_ID, GitBranchPoller
from workers.triggers import POLL_TRIGGER, poll_once

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def daemon(served: Path) -> Iterator[str]:
    with git_daemon(served) as url:
        yield url


@pytest.fixture
def repo(served: Path, daemon: str) -> Repo:
    return make_repo(served, f"{unique('repo')}.git", {"a.txt": "one\n"})


@pytest.fixture
def service(redis_client: redis.Redis) -> Service:
    return Service(Store(redis_client), default_registry(), default_bucket=unique("artifacts"))


@pytest.fixture
def poller(daemon: str) -> GitBranchPoller:
    return GitBranchPoller(GitSettings(base_url=daemon, poll_timeout_seconds=5))


def source(name: str, repo: Repo, **config: str) -> dict[str, Any]:
    return action(
        name,
        "Source",
        "CodeCommit",
        config={"RepositoryName": repo.bare.name.removesuffix(".git"), "BranchName": "main"}
        | config,
        outs=(f"{name}Out",),
    )


def create(service: Service, *sources: dict[str, Any], **extra: Any) -> str:
    name = unique("gitpoll")
    approve = {"name": "Approve", "actions": [action("Gate", "Approval", "Manual")]}
    service.create_pipeline(
        {"name": name, "stages": [{"name": "Source", "actions": list(sources)}, approve], **extra}
    )
    return name


def polled(service: Service, name: str) -> list[ExecutionState]:
    return [e for e in service.list_executions(name) if e.trigger_type == POLL_TRIGGER]


def test_a_new_commit_starts_one_execution_pinned_to_it(
    redis_client: redis.Redis, service: Service, poller: GitBranchPoller, repo: Repo
) -> None:
    name = create(service, source("Fetch", repo))
    assert poll_once(redis_client, service, [poller], now=1.0) == []  # the baseline
    assert poll_once(redis_client, service, [poller], now=2.0) == []  # no commit: nothing

    sha = repo.commit({"a.txt": "two\n"}, "two")
    (eid,) = poll_once(redis_client, service, [poller], now=3.0)
    (execution,) = polled(service, name)
    assert execution.execution_id == eid
    assert execution.trigger_detail == "Fetch"
    assert {
        "actionName": "Fetch",
        "revisionId": sha,
        "revisionType": COMMIT_ID,
    }.items() <= execution.source_revisions[0].items()

    assert poll_once(redis_client, service, [poller], now=4.0) == []
    assert len(service.list_executions(name)) == 1


def test_sources_of_one_pipeline_are_polled_together(
    redis_client: redis.Redis, service: Service, poller: GitBranchPoller, served: Path
) -> None:
    a = make_repo(served, f"{unique('a')}.git", {"a": "1"})
    b = make_repo(served, unique("b"), {"b": "1"})  # no .git suffix on the server either
    name = create(service, source("A", a), source("B", b))
    poll_once(redis_client, service, [poller], now=1.0)
    b.commit({"b": "2"}, "b2")
    assert len(poll_once(redis_client, service, [poller], now=2.0)) == 1
    (execution,) = polled(service, name)
    assert execution.trigger_detail == "B"
    a.commit({"a": "2"}, "a2")
    b.commit({"b": "3"}, "b3")
    assert len(poll_once(redis_client, service, [poller], now=3.0)) == 2


def test_what_is_not_polled(
    redis_client: redis.Redis, service: Service, poller: GitBranchPoller, repo: Repo
) -> None:
    off = create(service, source("Off", repo, PollForSourceChanges="false"))
    hooked = create(
        service,
        source("Hooked", repo),
        pipelineType="V2",
        triggers=[
            {
                "providerType": "CodeStarSourceConnection",
                "gitConfiguration": {
                    "sourceActionName": "Hooked",
                    "push": [{"branches": {"includes": ["main"]}}],
                },
            }
        ],
    )
    missing = create(service, source("Missing", repo, BranchName="no-such-branch"))
    poll_once(redis_client, service, [poller], now=1.0)
    repo.commit({"a.txt": "changed\n"}, "changed")
    assert poll_once(redis_client, service, [poller], now=2.0) == []
    for name in (off, hooked, missing):
        assert service.list_executions(name) == []


def test_an_unreachable_server_starts_nothing(
    redis_client: redis.Redis, service: Service, repo: Repo
) -> None:
    from workers.devstack import free_port

    create(service, source("Fetch", repo))
    dead = GitBranchPoller(
        GitSettings(base_url=f"git://127.0.0.1:{free_port()}", poll_timeout_seconds=3)
    )
    assert poll_once(redis_client, service, [dead], now=1.0) == []
    assert poll_once(redis_client, service, [dead], now=2.0) == []


def test_connection_and_github_sources_are_polled(
    redis_client: redis.Redis, service: Service, daemon: str, served: Path
) -> None:
    arn = "arn:aws:codestar-connections:us-east-1:123456789012:connection/poll"
    org = unique("org")
    (served / org).mkdir()
    conn = make_repo(served / org, "conn.git", {"c": "1"})
    hub = make_repo(served / org, "hub.git", {"h": "1"})
    codestar = action(
        "Conn",
        "Source",
        "CodeStarSourceConnection",
        config={"ConnectionArn": arn, "FullRepositoryId": f"{org}/conn", "BranchName": "main"},
        outs=("ConnOut",),
    )
    github = action(
        "Hub",
        "Source",
        "GitHub",
        config={"Owner": org, "Repo": "hub", "Branch": "main", "OAuthToken": "****"},
        outs=("HubOut",),
    )
    github["actionTypeId"]["owner"] = "ThirdParty"
    quiet = {**codestar, "name": "Quiet", "outputArtifacts": [{"name": "QuietOut"}]}
    quiet["configuration"] = {**codestar["configuration"], "DetectChanges": "false"}
    name = create(service, codestar, github, quiet)
    poller = GitBranchPoller(
        GitSettings(connections={arn: {"url": daemon}}, github_url=daemon, poll_timeout_seconds=5)
    )
    poll_once(redis_client, service, [poller], now=1.0)
    conn.commit({"c": "2"}, "c2")
    hub.commit({"h": "2"}, "h2")
    assert len(poll_once(redis_client, service, [poller], now=2.0)) == 2
    details = sorted(e.trigger_detail or "" for e in polled(service, name))
    assert details == ["Conn", "Hub"]  # "Quiet" (DetectChanges false) started nothing
