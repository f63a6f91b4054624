"""Real git servers for tests, on loopback: bare repositories served by ``git daemon``
(git://) and by ``git http-backend`` behind a small HTTP server with basic auth.

Both serve every repository under one directory, like a hosting server would, so tests
point ``CONVEYOR_GIT_BASE_URL`` (or a repository map) at them.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import wait_for
from workers.devstack import free_port

GIT_CORE = Path(
    subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
)
AUTHOR = {
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Cy Committer",
    "GIT_COMMITTER_EMAIL": "cy@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **AUTHOR, **(env or {})},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


@dataclass
class Repo:
    """A bare repository (what servers serve) and a working clone that pushes to it."""

    bare: Path
    work: Path
    branch: str = "main"
    commits: list[str] = field(default_factory=list)

    def commit(
        self,
        files: dict[str, str],
        message: str,
        *,
        branch: str | None = None,
        date: str | None = None,
        remove: tuple[str, ...] = (),
    ) -> str:
        """Write ``files``, commit them and push; returns the commit id."""
        branch = branch or self.branch
        git("checkout", "-q", "-B", branch, cwd=self.work)
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for name in remove:
            git("rm", "-q", name, cwd=self.work)
        git("add", "-A", cwd=self.work)
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {}
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work, env=env)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work).strip()
        self.commits.append(sha)
        return sha


def make_repo(root: Path, name: str, files: dict[str, str], *, branch: str = "main") -> Repo:
    """``root/<name>`` bare (``name`` may end in ``.git``), with one commit of ``files``."""
    bare = root / name
    git("init", "-q", "--bare", "-b", branch, str(bare))
    work = root.parent / f"{root.name}-work" / name
    git("clone", "-q", str(bare), str(work))
    repo = Repo(bare, work, branch)
    repo.commit(files, "initial commit", date="2024-01-02T03:04:05+02:00")
    return repo


# ---------------------------------------------------------------------------- git daemon


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """``git daemon`` serving every repository under ``base``; yields ``git://host:port``."""
    port = free_port()
    log = (base.parent / f"git-daemon-{port}.log").open("wb")
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--informative-errors",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _port_open(port), 20, message="git daemon did not listen")
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- http-backend


class GitHttpServer:
    """Smart HTTP over ``git http-backend`` (CGI), basic auth required for every request.

    Records the Authorization headers it refused, so tests can see what was sent."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root, self.username, self.password = root, username, password
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                server.handle(self)

            def do_POST(self) -> None:
                server.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.username) and hmac.compare_digest(pw, self.password)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests += 1
        if not self._authorized(h.headers.get("Authorization")):
            h.send_response(401)
            h.send_header("WWW-Authenticate", 'Basic realm="git"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        path, _, query = h.path.partition("?")
        body = _read_body(h)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": h.command,
            "CONTENT_TYPE": h.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": self.username,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": h.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": h.headers.get("Content-Encoding", ""),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        out = subprocess.run(
            [str(GIT_CORE / "git-http-backend")], input=body, env=env, capture_output=True
        )
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        h.send_response(status)
        for name, value in headers:
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body; git sends big ones (over ``http.postBuffer``) chunked."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                h.rfile.readline()  # the blank line after the last chunk
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""
