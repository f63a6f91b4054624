"""The audit log: who did what to which pipeline, one record per API request.

Recorded: every request that changes something, and every request that is refused (by
authentication, by a role, by a rule, or as malformed). Reads that succeed are not, unless
``CONVEYOR_AUDIT_READS=true`` (job workers poll constantly; recording every poll would
bury the changes). A record::

    {"time": "2026-11-29T12:00:00.123Z", "request_id": "...", "principal": "alice",
     "principal_arn": "arn:aws:iam::111122223333:user/alice", "access_key": "AKIA...",
     "source_ip": "10.0.0.7", "operation": "PutApprovalResult", "target": "Deploy",
     "pipeline": "Deploy", "params": {...}, "outcome": "ok", "status": 200}

``params`` is a compact summary of the request: long values cut short, lists counted, a
pipeline declaration reduced to its name and stage names, and every member that may hold a
secret (approval tokens, webhook secrets, nonces, credentials, client tokens) replaced by a
fingerprint (``sha256:<12 hex>``), so two records about the same token can be matched
without either revealing it. A refusal's ``message`` is kept (cut short, secrets scrubbed).

Sinks, both append-only:

* the Redis stream ``conveyor:audit`` (XADD, trimmed to about ``CONVEYOR_AUDIT_MAX_ENTRIES``
  records, 1,000,000 by default): what ``GET /audit`` and ``conveyor audit`` read;
* optionally a JSON-lines file, ``CONVEYOR_AUDIT_FILE``: the permanent record (the stream is
  trimmed; the file is never rewritten). Opened with O_APPEND, one ``write`` per line, so
  several API processes may share it; ``fsync`` after every record unless
  ``CONVEYOR_AUDIT_FSYNC=false`` (then a host crash may lose the last records). Rotate it by
  renaming (logrotate's default ``create`` mode): the next record reopens the path.

If a record cannot be written, the request's answer does not change: the record is written
to the server log at ERROR level instead (a third, last-resort sink) and counted
(``conveyor:stats:audit_failures``, and :attr:`AuditLog.failures` in the process). The
change has already happened when its record is written, so failing the request would tell
the client "nothing happened" about something that did, and invite a retry. The file is
opened when the API starts: a path that cannot be written stops the API there, not later.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from engine import keys
from engine.arns import WEBHOOK_RESOURCE, Account, resource_of
from engine.auth.context import RequestContext, current
from engine.auth.identity import principal_arn
from engine.auth.principals import READ_OPERATIONS
from engine.settings import Settings

log = logging.getLogger("conveyor.audit")

DEFAULT_MAX_ENTRIES = 1_000_000
# Reads besides the viewer's: job workers poll and fetch details all the time.
READS = READ_OPERATIONS | {
    "PollForJobs",
    "PollForThirdPartyJobs",
    "GetJobDetails",
    "GetThirdPartyJobDetails",
}
AUDIT_READ = "GET /audit"  # the operation name of reading the audit log itself

# The summary of a request stays small whatever was sent.
MAX_VALUE_CHARS = 120
MAX_MESSAGE_CHARS = 300
MAX_ITEMS = 10
MAX_DEPTH = 3
# Members that may hold a secret, by name (botocore's model marks only the job credentials
# sensitive; approval tokens, webhook secrets and nonces are secrets all the same).
_SECRET = re.compile(r"(?i)token|secret|password|passwd|credential|nonce|oauth|private|apikey")
# Refusals before authentication (anyone can cause them) are recorded at most this often
# per process and second; the next recorded one counts those left out (``suppressed``).
MAX_ANONYMOUS_REFUSALS_PER_SECOND = 20
# GET /audit scans at most this many records per request, whatever the filters.
MAX_SCAN = 10_000
SCAN_BATCH = 500


@dataclass(frozen=True)
class AuditConfig:
    file: Path | None = None
    max_entries: int = DEFAULT_MAX_ENTRIES
    reads: bool = False
    fsync: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditConfig:
        return cls(
            file=settings.audit_file,
            max_entries=settings.audit_max_entries,
            reads=settings.audit_reads,
            fsync=settings.audit_fsync,
        )


# ---------------------------------------------------------------------------- records (pure)


def fingerprint(value: Any) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


def _cut(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize(value: Any, depth: int = 0) -> Any:
    """A small, secret-free copy of a request member."""
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            return f"{{{len(value)} members}}"
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:MAX_ITEMS]:
            name = str(key)
            if _SECRET.search(name) and item not in ("", None):
                # A scalar by fingerprint; a secret-named structure (credentials) not at all.
                scalar = isinstance(item, str | int | float)
                out[name] = fingerprint(item) if scalar else "(redacted)"
            else:
                out[name] = summarize(item, depth + 1)
        if len(value) > MAX_ITEMS:
            out["..."] = f"{len(value) - MAX_ITEMS} more"
        return out
    if isinstance(value, list):
        if depth >= MAX_DEPTH or len(value) > MAX_ITEMS:
            return f"[{len(value)} items]"
        return [summarize(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bool | int | float) or value is None:
        return value if not isinstance(value, int) or abs(value) < 10**15 else _cut(str(value))
    return _cut(repr(value))


def params_of(operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's summary; a pipeline declaration is its name and its stages' names
    (its configuration values may hold credentials, and the definition is kept by version)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "pipeline" and isinstance(value, Mapping):
            stages = value.get("stages")
            out[key] = {
                "name": _cut(str(value.get("name"))),
                "stages": [
                    _cut(str(s.get("name"))) for s in stages[:MAX_ITEMS] if isinstance(s, Mapping)
                ]
                if isinstance(stages, list)
                else None,
            }
        else:
            out[key] = summarize({key: value})[key]
    return out


def secrets_in(value: Any, depth: int = 0) -> list[str]:
    """Every secret-looking value in a request, however deep (to scrub them from messages;
    the parser bounds the depth and the size)."""
    if depth > 100:
        return []
    if isinstance(value, Mapping):
        found: list[str] = []
        for k, v in value.items():
            if _SECRET.search(str(k)) and isinstance(v, str | int) and v != "":
                found.append(str(v))
            elif _SECRET.search(str(k)):
                found += _strings(v, depth + 1)  # everything under "credentials"
            else:
                found += secrets_in(v, depth + 1)
        return found
    if isinstance(value, list):
        return [s for v in value for s in secrets_in(v, depth + 1)]
    return []


def _strings(value: Any, depth: int) -> list[str]:
    if depth > 100:
        return []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v, depth + 1)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, depth + 1)]
    return [str(value)] if isinstance(value, str | int) and value != "" else []


def scrub(message: str, secrets: list[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return _cut(message, MAX_MESSAGE_CHARS)


def _get(body: Mapping[str, Any], *path: str) -> str | None:
    value: Any = body
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _action_type(value: Any) -> str | None:
    """``Owner/Category/Provider/Version`` (the action type ARN's order) of an ActionTypeId
    or the members of Create/DeleteCustomActionType (whose owner is Custom)."""
    if not isinstance(value, Mapping):
        return None
    parts = [value.get("owner") or "Custom", *(value.get(k) for k in ("category", "provider"))]
    if not all(isinstance(p, str) and p for p in parts):
        return None
    return "/".join([*(str(p) for p in parts), str(value.get("version") or "")])


def target_of(operation: str, body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(target, pipeline)``: what the request acted on, and the pipeline it concerns (for
    filtering by pipeline), from the members each operation names it with."""
    pipeline = (
        _get(body, "pipelineName")
        or _get(body, "pipeline", "name")
        or (_get(body, "name") if "Pipeline" in operation else None)
        or _get(body, "webhook", "targetPipeline")
    )
    arn = _get(body, "resourceArn")
    if arn is not None:
        resource = resource_of(arn)
        plain = resource is not None and ":" not in resource and "/" not in resource
        return arn, resource if plain else pipeline
    webhook = (
        _get(body, "webhook", "name")
        or _get(body, "webhookName")
        or (_get(body, "name") if "Webhook" in operation else None)
    )
    if webhook is not None:
        return f"{WEBHOOK_RESOURCE}{webhook}", pipeline
    if "ActionType" in operation or operation.startswith("PollFor"):
        found = _action_type(body.get("actionTypeId") or _get_map(body, "actionType", "id") or body)
        if found is not None:
            return f"actiontype:{found}", pipeline
    job = _get(body, "jobId")
    if job is not None:
        return f"job:{job}", pipeline
    if pipeline is not None:
        stage, action = _get(body, "stageName"), _get(body, "actionName")
        where = ".".join(p for p in (pipeline, stage, action) if p)
        return where, pipeline
    return None, None


def _get_map(body: Mapping[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


@dataclass(frozen=True)
class Outcome:
    """How a request ended: ``ok`` or the error code, the HTTP status, a message."""

    status: int
    code: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status < 400

    @classmethod
    def of_reply(cls, status: int, body: bytes) -> Outcome:
        """From an API answer (the error's ``__type`` and ``message``)."""
        if status < 400:
            return cls(status)
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        return cls(status, str(parsed.get("__type") or "Error"), str(parsed.get("message", "")))


def build_record(
    *,
    operation: str,
    body: Mapping[str, Any] | None,
    outcome: Outcome,
    request_id: str = "",
    principal: str | None = None,
    principal_arn: str | None = None,
    access_key: str | None = None,
    source_ip: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One audit record (pure but for the clock when ``now`` is not given)."""
    secrets = secrets_in(body) if body else []
    target, pipeline = target_of(operation, body) if body else (None, None)
    # Names come from the request as sent, valid or not: keep them short too.
    target, pipeline = (_cut(v, 2 * MAX_VALUE_CHARS) if v else v for v in (target, pipeline))
    params = params_of(operation, body) if body else {}
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    record: dict[str, Any] = {
        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        "request_id": request_id,
        "principal": principal,
        "principal_arn": principal_arn,
        "access_key": access_key,
        "source_ip": source_ip,
        "operation": operation,
        "target": target,
        "pipeline": pipeline,
        "params": params,
        "outcome": "ok" if outcome.ok else (outcome.code or "Error"),
        "status": outcome.status,
    }
    if not outcome.ok and outcome.message:
        record["message"] = scrub(outcome.message, secrets)
    return record


def matches(
    record: Mapping[str, Any],
    *,
    pipeline: str | None = None,
    principal: str | None = None,
    operation: str | None = None,
) -> bool:
    return (
        (pipeline is None or record.get("pipeline") == pipeline)
        and (principal is None or record.get("principal") == principal)
        and (operation is None or str(record.get("operation", "")).lower() == operation.lower())
    )


# ---------------------------------------------------------------------------- the log


@dataclass(frozen=True)
class AuditPage:
    records: list[dict[str, Any]]  # each with its stream ``id``, in scan order
    cursor: str  # the last id scanned: pass it back (after= or before=) to read on
    more: bool  # False: the scan reached the end of the stream


class AuditLog:
    """Writes records to the stream and the file; reads the stream for ``GET /audit``."""

    def __init__(
        self, client: redis.Redis, account: Account, config: AuditConfig | None = None
    ) -> None:
        self.r = client
        self.account = account
        self.config = config or AuditConfig()
        self.failures = 0
        self._file = (
            _AppendOnlyFile(self.config.file, self.config.fsync) if self.config.file else None
        )
        self._guard = threading.Lock()
        self._window = 0
        self._in_window = 0
        self._suppressed = 0

    # ------------------------------------------------------------------ writing

    def record_call(
        self,
        operation: str,
        body: Callable[[], Mapping[str, Any] | None],
        outcome: Outcome,
        ctx: RequestContext | None = None,
    ) -> None:
        """The record of one API request served for ``ctx`` (default: the current
        request's). ``body`` gives the request's members (called only when a record is
        made: succeeded reads are skipped unless configured). Never raises."""
        try:
            if outcome.ok and operation in READS | {AUDIT_READ} and not self.config.reads:
                return
            ctx = ctx or current()
            self.write(
                build_record(
                    operation=operation,
                    body=body(),
                    outcome=outcome,
                    request_id=ctx.request_id,
                    principal=ctx.principal.name,
                    principal_arn=principal_arn(ctx.principal.name, self.account),
                    access_key=ctx.access_key,
                    source_ip=ctx.source_ip,
                )
            )
        except Exception:  # the audit never fails a request
            self._failed("building an audit record", None)

    def record_refusal(
        self,
        *,
        operation: str | None,
        outcome: Outcome,
        request_id: str = "",
        access_key: str | None = None,
        source_ip: str | None = None,
    ) -> None:
        """A request refused before it reached its operation, by someone not (yet)
        authenticated: a bad or missing signature, an unknown key, a malformed request.
        ``access_key`` is the one the request claimed (unverified). Rate-limited per
        process (:data:`MAX_ANONYMOUS_REFUSALS_PER_SECOND`). Never raises."""
        try:
            suppressed = self._admit_refusal()
            if suppressed is None:
                return
            record = build_record(
                operation=operation or "(unknown)",
                body=None,
                outcome=outcome,
                request_id=request_id,
                access_key=access_key,
                source_ip=source_ip,
            )
            if suppressed:
                record["suppressed"] = suppressed
            self.write(record)
        except Exception:
            self._failed("building an audit record", None)

    def _admit_refusal(self) -> int | None:
        """None: over the limit (counted); else how many were left out before this one."""
        second = int(time.monotonic())
        with self._guard:
            if second != self._window:
                self._window, self._in_window = second, 0
            if self._in_window >= MAX_ANONYMOUS_REFUSALS_PER_SECOND:
                self._suppressed += 1
                return None
            self._in_window += 1
            left_out, self._suppressed = self._suppressed, 0
            return left_out

    def write(self, record: Mapping[str, Any]) -> None:
        """Append to every sink; a sink that fails is logged and counted, never raised."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        try:
            self.r.xadd(
                keys.AUDIT,
                {"record": line},
                maxlen=self.config.max_entries,
                approximate=True,
            )
        except redis.RedisError as exc:
            self._failed(f"the audit stream ({exc})", line, redis_ok=False)
        if self._file is not None:
            try:
                self._file.append(line)
            except OSError as exc:
                self._failed(f"the audit file {self.config.file} ({exc})", line)

    def _failed(self, where: str, line: str | None, *, redis_ok: bool = True) -> None:
        with self._guard:
            self.failures += 1
        if redis_ok:  # counted where operators look, unless Redis is what failed
            with contextlib.suppress(redis.RedisError):
                self.r.incr(keys.AUDIT_FAILURES)
        if line is None:
            log.exception("audit: failed %s", where)
        else:
            log.error("audit: could not write to %s; the record: %s", where, line)

    # ------------------------------------------------------------------ reading

    def read(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 100,
        pipeline: str | None = None,
        principal: str | None = None,
        operation: str | None = None,
    ) -> AuditPage:
        """Matching records after ``after`` (oldest first), or else before ``before`` /
        from the newest (newest first); at most ``limit``, scanning at most
        :data:`MAX_SCAN` records."""
        forward = after is not None
        cursor = after if after is not None else before
        found: list[dict[str, Any]] = []
        scanned = 0
        more = True
        while len(found) < limit and scanned < MAX_SCAN:
            if forward:
                rows = self.r.xrange(keys.AUDIT, min=f"({cursor}", max="+", count=SCAN_BATCH)
            else:
                top = f"({cursor}" if cursor else "+"
                rows = self.r.xrevrange(keys.AUDIT, max=top, min="-", count=SCAN_BATCH)
            if not rows:
                more = False
                break
            for rid, fields in rows:
                scanned += 1
                cursor = str(rid)
                try:
                    record = json.loads((fields or {})["record"])
                except (KeyError, ValueError, TypeError):
                    continue
                if matches(record, pipeline=pipeline, principal=principal, operation=operation):
                    found.append({"id": cursor, **record})
                    if len(found) >= limit:
                        break
        return AuditPage(found, cursor or ("0" if forward else "+"), more)


class _AppendOnlyFile:
    """A JSON-lines file opened O_APPEND (mode 0600): each record is one ``write``, so
    appends from several processes never interleave or overwrite."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def append(self, line: str) -> None:
        data = (line + "\n").encode()
        with self._lock:
            self._reopen_if_rotated()
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write: {written} of {len(data)} bytes")
            if self.fsync:
                os.fsync(self._fd)

    def _reopen_if_rotated(self) -> None:
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._fd))
        except FileNotFoundError:
            same = False
        if not same:
            old, self._fd = self._fd, self._open()
            os.close(old)
