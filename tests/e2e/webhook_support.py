"""What the webhook tests share: a stand-in git source provider, pipelines with V2
triggers, payloads in GitHub's and GitLab's shapes, and raw HTTP senders."""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

from providers.base import ActionTypeId, Category, Job, Provider, ProviderConfig, Result
from providers.registry import Registry
from tests.e2e.api_support import BUCKET, registry

CONNECTION = "arn:aws:codestar-connections:us-east-1:000000000000:connection/0f3e-example"


class ConnectionSourceConfig(ProviderConfig):
    FullRepositoryId: str
    BranchName: str
    ConnectionArn: str
    OutputArtifactFormat: str | None = None
    DetectChanges: str | None = None


class ConnectionSource(Provider):
    """Source/AWS/CodeStarSourceConnection's configuration and no behaviour: these tests run
    no workers, they only need definitions naming such a source to validate."""

    action_type = ActionTypeId(
        category=Category.SOURCE, owner="AWS", provider="CodeStarSourceConnection", version="1"
    )
    Config = ConnectionSourceConfig
    min_outputs = max_outputs = 1

    def run(self, job: Job) -> Result:
        raise AssertionError("the webhook tests run no workers")


def webhook_registry() -> Registry:
    """The API tests' registry, plus a connection source unless a real one is registered."""
    reg = registry()
    if reg.get(ConnectionSource.action_type) is None:
        reg.register(ConnectionSource)
    return reg


def git_pipeline(name: str, repository: str, git: dict[str, Any]) -> dict[str, Any]:
    """Source (a connection to ``repository``, branch main) -> Build, with one trigger."""
    return {
        "name": name,
        "roleArn": "arn:aws:iam::000000000000:role/conveyor",
        "artifactStore": {"type": "S3", "location": BUCKET},
        "pipelineType": "V2",
        "executionMode": "PARALLEL",
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Checkout",
                        "actionTypeId": {
                            "category": "Source",
                            "owner": "AWS",
                            "provider": "CodeStarSourceConnection",
                            "version": "1",
                        },
                        "configuration": {
                            "FullRepositoryId": repository,
                            "BranchName": "main",
                            "ConnectionArn": CONNECTION,
                        },
                        "outputArtifacts": [{"name": "Src"}],
                    }
                ],
            },
            {
                "name": "Build",
                "actions": [
                    {
                        "name": "Compile",
                        "actionTypeId": {
                            "category": "Build",
                            "owner": "AWS",
                            "provider": "CodeBuild",
                            "version": "1",
                        },
                        "configuration": {"ProjectName": "compile"},
                        "inputArtifacts": [{"name": "Src"}],
                    }
                ],
            },
        ],
        "triggers": [
            {
                "providerType": "CodeStarSourceConnection",
                "gitConfiguration": {"sourceActionName": "Checkout", **git},
            }
        ],
    }


# --------------------------------------------------------------------------- payloads


def sha(seed: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, seed).hex + "0" * 8


def github_push(
    repository: str,
    ref: str,
    commit: str,
    files: list[str],
    *,
    author: str = "ada",
) -> dict[str, Any]:
    head = {
        "id": commit,
        "message": "Make the build faster",
        "url": f"https://github.com/{repository}/commit/{commit}",
        "author": {"name": "Ada Lovelace", "email": "ada@example.com", "username": author},
        "added": [],
        "modified": files,
        "removed": [],
    }
    return {
        "ref": ref,
        "before": sha("before"),
        "after": commit,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {"full_name": repository, "name": repository.split("/")[-1]},
        "pusher": {"name": author, "email": "ada@example.com"},
        "head_commit": head,
        "commits": [head],
    }


def github_pull_request(
    repository: str, action: str, base: str, head_ref: str, commit: str
) -> dict[str, Any]:
    return {
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "title": "Speed up the build",
            "html_url": f"https://github.com/{repository}/pull/7",
            "user": {"login": "grace"},
            "merged": action == "closed",
            "head": {"ref": head_ref, "sha": commit},
            "base": {"ref": base, "sha": sha("base")},
        },
        "repository": {"full_name": repository},
        "sender": {"login": "grace"},
    }


def gitlab_push(project: str, branch: str, commit: str, files: list[str]) -> dict[str, Any]:
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": sha("before"),
        "after": commit,
        "ref": f"refs/heads/{branch}",
        "checkout_sha": commit,
        "user_name": "Linus",
        "user_username": "linus",
        "project": {"path_with_namespace": project},
        "commits": [
            {
                "id": commit,
                "message": "Tidy up\n",
                "url": f"https://gitlab.example.com/{project}/-/commit/{commit}",
                "author": {"name": "Linus", "email": "linus@example.com"},
                "added": files,
                "modified": [],
                "removed": [],
            }
        ],
        "total_commits_count": 1,
    }


def gitlab_merge_request(
    project: str, action: str, target: str, source: str, commit: str
) -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"name": "Linus", "username": "linus"},
        "project": {"path_with_namespace": project},
        "object_attributes": {
            "iid": 3,
            "title": "Tidy up",
            "action": action,
            "source_branch": source,
            "target_branch": target,
            "url": f"https://gitlab.example.com/{project}/-/merge_requests/3",
            "last_commit": {"id": commit, "message": "Tidy up"},
        },
    }


# --------------------------------------------------------------------------- HTTP


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float = 10
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(rest) >= length:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(rest)


def post_declaring(
    url: str, headers: dict[str, str], declared: int, *, send: bytes = b""
) -> tuple[int, dict[str, Any]]:
    """POST announcing ``declared`` bytes but sending only ``send``: a server that waited
    for the whole body would time out instead of answering."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += [f"Content-Length: {declared}", "", ""]
        sock.sendall("\r\n".join(lines).encode() + send)
        return _read_reply(sock)


def post_chunked(
    url: str,
    headers: dict[str, str],
    total: int,
    chunk: int = 256 * 1024,
    pause: float = 0.05,
) -> tuple[int, dict[str, Any], int]:
    """POST ``total`` bytes with chunked transfer encoding (no length announced), stopping
    as soon as the server answers; returns the status, the reply and the bytes sent.

    After each chunk it waits up to ``pause`` seconds for an answer: without that, loopback
    socket buffers swallow megabytes at once, and on a loaded machine the whole body is
    "sent" before the server (which stopped reading at its limit) gets to answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Transfer-Encoding: chunked", "", ""]
        sock.sendall("\r\n".join(lines).encode())
        sent = 0
        piece = b"x" * chunk
        try:
            while sent < total:
                readable, _, _ = select.select([sock], [], [], pause if sent else 0)
                if readable:
                    break  # the server answered before the body ended
                sock.sendall(f"{chunk:x}\r\n".encode() + piece + b"\r\n")
                sent += chunk
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, reply = _read_reply(sock)
        return status, reply, sent
