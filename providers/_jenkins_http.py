"""The few Jenkins remote-access endpoints Build/Custom/Jenkins uses, over plain urllib.

Why by hand rather than a Jenkins client library: the provider needs exactly six
endpoints, and control over two things libraries get wrong for us. Redirects are followed
here, and credentials are dropped when one leaves the Jenkins host (artifact managers
redirect downloads to object stores; urllib's own redirect handler would forward the
``Authorization`` header there). And the session cookie is kept from the crumb request to
the POST it protects: since Jenkins 2.176.2 a crumb is only valid in the web session it
was issued for.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any

# Statuses that mean "Jenkins (or a proxy before it) is briefly unable to answer".
TRANSIENT_STATUSES = frozenset({502, 503, 504})
MAX_REDIRECTS = 5
ERROR_BODY_CHARS = 300


class JenkinsUnreachable(Exception):
    """The server did not answer: connection refused, reset, timed out, or a 502/503/504."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


class JenkinsHTTPError(Exception):
    """Jenkins answered with an error status; ``body`` is the start of its answer."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}")
        self.method, self.url, self.status, self.body = method, url, status, body


# The most console log kept from one poll (what the job printed between two polls).
PROGRESSIVE_TEXT_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Crumb:
    field: str
    value: str


@dataclass(frozen=True)
class TextChunk:
    """One answer of ``logText/progressiveText``. ``next_start`` comes from Jenkins'
    ``X-Text-Size``, not from counting: the plain-text view leaves out console annotations,
    so the offset in the stored log moves by more than the bytes received."""

    data: bytes
    next_start: int
    more: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are JenkinsClient's to follow, so it can decide what travels with them."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def job_path(project: str) -> str:
    """``a/b`` (a job in folder ``a``) -> ``job/a/job/b``, each name URL-quoted."""
    return "/".join(f"job/{urllib.parse.quote(part, safe='')}" for part in project.split("/"))


class JenkinsClient:
    """One session with one Jenkins: basic auth on every request, crumb and cookie kept."""

    def __init__(
        self, base_url: str, user: str | None, token: str | None, *, timeout: float
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._host = urllib.parse.urlsplit(self.base_url).netloc
        self._auth: str | None = None
        if user is not None:
            pair = f"{user}:{token or ''}".encode()
            self._auth = "Basic " + base64.b64encode(pair).decode("ascii")
        self._timeout = timeout
        self._cookies = CookieJar()
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPCookieProcessor(self._cookies)
        )
        self._crumb: Crumb | None = None
        self._crumb_fetched = False

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path)

    # -- primitives ----------------------------------------------------------------------

    @contextmanager
    def get(self, url: str) -> Iterator[http.client.HTTPResponse]:
        """A 2xx response to GET ``url``, redirects followed (credentials stay home)."""
        for _ in range(MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, method="GET")
            if self._auth is not None and urllib.parse.urlsplit(url).netloc == self._host:
                request.add_unredirected_header("Authorization", self._auth)
            response = self._send(request)
            if 300 <= response.status < 400:
                location = response.headers.get("Location")
                response.close()
                if not location:
                    raise JenkinsHTTPError("GET", url, response.status, "redirect without Location")
                url = urllib.parse.urljoin(url, location)
                continue
            try:
                yield response
            finally:
                response.close()
            return
        raise JenkinsHTTPError("GET", url, 310, f"more than {MAX_REDIRECTS} redirects")

    def _send(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        url, method = request.full_url, request.get_method()
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=self._timeout)
            return response
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                # _NoRedirect hands every redirect back as this; it is an answer, not an error
                return exc  # type: ignore[return-value]
            body = _read_error(exc)
            if exc.code in TRANSIENT_STATUSES:
                raise JenkinsUnreachable(url, f"HTTP {exc.code}") from None
            raise JenkinsHTTPError(method, url, exc.code, body) from None
        except urllib.error.URLError as exc:
            raise JenkinsUnreachable(url, str(exc.reason)) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise JenkinsUnreachable(url, f"{type(exc).__name__}: {exc}") from None

    def get_json(self, url: str) -> dict[str, Any]:
        with self.get(url) as response:
            raw = response.read()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise JenkinsHTTPError("GET", url, 200, f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise JenkinsHTTPError("GET", url, 200, "JSON answer is not an object")
        return data

    def post(self, url: str, form: Mapping[str, str] | None = None) -> str | None:
        """POST a form with the crumb; the answer's ``Location`` (a queue item), if any."""
        self._ensure_crumb()
        data = urllib.parse.urlencode(form or {}).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if self._auth is not None:
            request.add_unredirected_header("Authorization", self._auth)
        if self._crumb is not None:
            request.add_unredirected_header(self._crumb.field, self._crumb.value)
        response = self._send(request)
        try:
            location = response.headers.get("Location")
        finally:
            response.close()
        return urllib.parse.urljoin(url, location) if location else None

    # -- endpoints -----------------------------------------------------------------------

    def _ensure_crumb(self) -> None:
        """``GET crumbIssuer/api/json`` once per session; a 404 means CSRF protection is off."""
        if self._crumb_fetched:
            return
        try:
            data = self.get_json(self.url("crumbIssuer/api/json"))
        except JenkinsHTTPError as exc:
            if exc.status != 404:
                raise
        else:
            field, value = data.get("crumbRequestField"), data.get("crumb")
            if isinstance(field, str) and isinstance(value, str):
                self._crumb = Crumb(field, value)
        self._crumb_fetched = True

    def progressive_text(self, build_url: str, start: int) -> TextChunk:
        url = urllib.parse.urljoin(build_url, f"logText/progressiveText?start={start}")
        with self.get(url) as response:
            # One answer holds everything the build printed since ``start``: keep at most
            # PROGRESSIVE_TEXT_MAX_BYTES of it and read the rest away, so a job printing
            # gigabytes between two polls cannot fill the worker's memory.
            raw = response.read(PROGRESSIVE_TEXT_MAX_BYTES)
            dropped = 0
            while piece := response.read(64 * 1024):
                dropped += len(piece)
            size = response.headers.get("X-Text-Size")
            more = response.headers.get("X-More-Data", "").lower() == "true"
        if dropped:
            raw += f"\n[Conveyor] {dropped} bytes of console log left out here\n".encode()
        try:
            next_start = int(size) if size is not None else start + len(raw) + dropped
        except ValueError:
            next_start = start + len(raw) + dropped
        return TextChunk(raw, next_start, more)


def _read_error(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(4096)
    except OSError:
        raw = b""
    finally:
        exc.close()
    return raw.decode("utf-8", errors="replace")[:ERROR_BODY_CHARS]
