"""A small Jenkins on loopback that speaks exactly the endpoints Build/Custom/Jenkins uses.

The shapes follow Jenkins' remote access API (2.4xx LTS): ``crumbIssuer/api/json`` with a
crumb valid only in the session (``JSESSIONID`` cookie) it was issued for,
``job/<a>/job/<b>/buildWithParameters`` answering 201 with a queue item ``Location``,
``queue/item/<n>/api/json`` gaining ``executable`` after a few polls,
``<build>/api/json``, ``<build>/logText/progressiveText?start=N`` with ``X-Text-Size`` and
``X-More-Data``, ``<build>/artifact/<path>``, ``<build>/stop`` and ``queue/cancelItem``.
Basic auth is checked on every request.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workers import devstack


@dataclass
class FakeJob:
    """A job's next build: it waits ``queue_polls`` queue reads, then prints one log chunk
    per ``progressiveText`` read and ends with ``result`` (``None``: runs until stopped)."""

    # str chunks are UTF-8 encoded; bytes chunks go out as they are (e.g. half a character)
    log_chunks: Sequence[str | bytes] = field(default_factory=lambda: ["building\n"])
    result: str | None = "SUCCESS"
    artifacts: dict[str, bytes] = field(default_factory=dict)
    # relativePath -> URL the artifact download redirects to (as artifact managers do)
    artifact_redirects: dict[str, str] = field(default_factory=dict)
    queue_polls: int = 2
    parameterized: bool = True
    cancel_in_queue: bool = False
    # Jenkins answers 503 to the request after the build's first log read (a restart).
    outage_after_first_log_read: bool = False


@dataclass
class FakeBuild:
    job: str
    number: int
    spec: FakeJob
    revealed: int = 0
    stopped: bool = False

    @property
    def building(self) -> bool:
        if self.stopped:
            return False
        if self.spec.result is None:
            return True
        return self.revealed < len(self.spec.log_chunks)

    def text(self) -> bytes:
        chunks = self.spec.log_chunks[: self.revealed]
        if self.stopped:
            chunks = [*chunks, "Aborted by conveyor\n"]
        return b"".join(c.encode() if isinstance(c, str) else c for c in chunks)


@dataclass
class FakeQueueItem:
    number: int
    job: str
    params: dict[str, str]
    polls: int = 0
    cancelled: bool = False
    build: FakeBuild | None = None


class FakeJenkins:
    def __init__(self, *, user: str = "robot", token: str = "", crumbs: bool = True) -> None:
        self.user = user
        self.token = token or secrets.token_hex(16)
        self.crumbs = crumbs
        self.jobs: dict[str, FakeJob] = {}
        self.queue: dict[int, FakeQueueItem] = {}
        self.builds: list[FakeBuild] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) as received
        self.stops: list[str] = []
        self.cancelled_items: list[int] = []
        self.lock = threading.Lock()
        self._sessions: dict[str, str] = {}  # session id -> crumb
        self._next_item = 100
        self.outage = 0  # how many coming requests get 503
        self.url = ""

    # -- what tests look at ------------------------------------------------------------

    def build(self, job: str) -> FakeBuild:
        return next(b for b in self.builds if b.job == job)

    def triggered(self, job: str) -> list[FakeQueueItem]:
        return [item for item in self.queue.values() if item.job == job]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
        pass

    # -- plumbing ------------------------------------------------------------------------

    @property
    def jenkins(self) -> FakeJenkins:
        return self.server.jenkins

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            200, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _authorized(self) -> bool:
        expected = base64.b64encode(f"{self.jenkins.user}:{self.jenkins.token}".encode()).decode()
        if self.headers.get("Authorization") == f"Basic {expected}":
            return True
        self._send(401, b"Unauthorized", {"WWW-Authenticate": 'Basic realm="Jenkins"'})
        return False

    def _session(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == "JSESSIONID":
                return value
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length).decode()
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urllib.parse.urlsplit(self.path)
        with self.jenkins.lock:
            self.jenkins.requests.append((method, self.path))
            if not self._authorized():
                return
            if self.jenkins.outage > 0:
                self.jenkins.outage -= 1
                self._send(503, b"Jenkins is restarting")
                return
            if method == "POST" and self.jenkins.crumbs and not self._crumb_ok():
                self._send(403, b"No valid crumb was included in the request")
                return
            query = dict(urllib.parse.parse_qsl(split.query))
            self._route(method, split.path, query)

    def _crumb_ok(self) -> bool:
        session = self._session()
        crumb = self.jenkins._sessions.get(session or "")
        return crumb is not None and self.headers.get("Jenkins-Crumb") == crumb

    # -- routes --------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        j = self.jenkins
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if path == "/crumbIssuer/api/json" and method == "GET":
            if not j.crumbs:
                self._send(404, b"Not Found")
                return
            session, crumb = secrets.token_hex(8), secrets.token_hex(16)
            j._sessions[session] = crumb
            self._json(
                {"crumb": crumb, "crumbRequestField": "Jenkins-Crumb"},
                {"Set-Cookie": f"JSESSIONID={session}; Path=/; HttpOnly"},
            )
            return
        if parts[:2] == ["queue", "item"] and method == "GET":
            self._queue_item(int(parts[2]))
            return
        if parts[:2] == ["queue", "cancelItem"] and method == "POST":
            item = j.queue[int(query["id"])]
            item.cancelled = True
            j.cancelled_items.append(item.number)
            self._send(302, headers={"Location": f"{j.url}/queue/"})
            return
        names: list[str] = []
        while len(parts) >= 2 and parts[0] == "job":
            names.append(parts[1])
            parts = parts[2:]
        name = "/".join(names)
        if not names or name not in j.jobs:
            self._send(404, b"<html>Not Found</html>")
            return
        if parts == ["buildWithParameters"] and method == "POST":
            self._trigger(name, query, parameters=True)
        elif parts == ["build"] and method == "POST":
            self._trigger(name, query, parameters=False)
        elif parts and parts[0].isdigit():
            self._build_route(method, name, int(parts[0]), parts[1:], query)
        else:
            self._send(404, b"Not Found")

    def _trigger(self, name: str, query: dict[str, str], *, parameters: bool) -> None:
        j = self.jenkins
        spec = j.jobs[name]
        if parameters and not spec.parameterized:
            self._send(400, b"java.lang.IllegalStateException: This build is not parameterized!")
            return
        params = dict(urllib.parse.parse_qsl(self._body)) if parameters else {}
        j._next_item += 1
        j.queue[j._next_item] = FakeQueueItem(j._next_item, name, params)
        self._send(201, headers={"Location": f"{j.url}/queue/item/{j._next_item}/"})

    def _queue_item(self, number: int) -> None:
        j = self.jenkins
        item = j.queue.get(number)
        if item is None:
            self._send(404, b"Not Found")
            return
        spec = j.jobs[item.job]
        item.polls += 1
        data: dict[str, Any] = {"id": number, "cancelled": item.cancelled, "why": None}
        if spec.cancel_in_queue:
            data["cancelled"] = True
        elif item.build is None and not item.cancelled and item.polls > spec.queue_polls:
            item.build = FakeBuild(item.job, len(j.builds) + 1, spec)
            j.builds.append(item.build)
        if item.build is not None:
            data["executable"] = {"number": item.build.number, "url": self._build_url(item.build)}
        elif not data["cancelled"]:
            data["why"] = "Waiting for next available executor"
        self._json(data)

    def _build_url(self, build: FakeBuild) -> str:
        path = "/".join(f"job/{urllib.parse.quote(n, safe='')}" for n in build.job.split("/"))
        return f"{self.jenkins.url}/{path}/{build.number}/"

    def _build_route(
        self, method: str, name: str, number: int, rest: list[str], query: dict[str, str]
    ) -> None:
        j = self.jenkins
        build = next((b for b in j.builds if b.job == name and b.number == number), None)
        if build is None:
            self._send(404, b"Not Found")
            return
        if rest == ["api", "json"]:
            done = not build.building
            result = "ABORTED" if build.stopped else (build.spec.result if done else None)
            self._json(
                {
                    "number": build.number,
                    "url": self._build_url(build),
                    "building": build.building,
                    "result": result,
                    "artifacts": [
                        {"fileName": p.rsplit("/", 1)[-1], "relativePath": p}
                        for p in build.spec.artifacts
                    ]
                    if done
                    else [],
                }
            )
        elif rest == ["logText", "progressiveText"]:
            if build.revealed == 0 and build.spec.outage_after_first_log_read:
                j.outage = 1
            build.revealed = min(build.revealed + 1, len(build.spec.log_chunks))
            text = build.text()
            start = int(query.get("start", "0"))
            headers = {"X-Text-Size": str(len(text)), "Content-Type": "text/plain"}
            if build.building:
                headers["X-More-Data"] = "true"
            self._send(200, text[start:], headers)
        elif rest and rest[0] == "artifact":
            rel = "/".join(rest[1:])
            if rel in build.spec.artifact_redirects:
                self._send(302, headers={"Location": build.spec.artifact_redirects[rel]})
                return
            if rel not in build.spec.artifacts:
                self._send(404, b"Not Found")
                return
            self._send(200, build.spec.artifacts[rel], {"Content-Type": "application/octet-stream"})
        elif rest == ["stop"] and method == "POST":
            build.stopped = True
            j.stops.append(self._build_url(build))
            self._send(302, headers={"Location": self._build_url(build)})
        else:
            self._send(404, b"Not Found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, jenkins: FakeJenkins, port: int) -> None:
        self.jenkins = jenkins
        super().__init__(("127.0.0.1", port), _Handler)


@contextmanager
def fake_jenkins(**kwargs: Any) -> Iterator[FakeJenkins]:
    """A FakeJenkins served on a free loopback port for the duration of the block."""
    jenkins = FakeJenkins(**kwargs)
    server = _Server(jenkins, devstack.free_port())
    jenkins.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-jenkins", daemon=True
    )
    thread.start()
    try:
        yield jenkins
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
