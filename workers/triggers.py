"""Source change detection: CodePipeline's ``PollForSourceChanges``, run by ``conveyor beat``.

Detecting and starting are two separate seams so git sources and webhooks can plug into the
second later. A :class:`ChangeDetector` reports the revision each of a pipeline's source
actions is at now; it knows nothing about Redis or executions. :func:`poll_once` (and the
budgeted :class:`SourcePoller` beat runs) compare each revision with the last one seen,
claim a new one with a compare-and-set in Redis and start exactly one execution for it.

Exactly one execution per revision, without a claim protocol: the execution a trigger starts
for a revision carries a ``clientRequestToken`` derived from that revision
(:func:`engine.ids.trigger_token`), and a start with a token already used returns the
execution it started (the transition function judges that, atomically). So two beat
processes polling the same source at once, or a beat that died between starting the
execution and recording the revision, start it "again" and get the same execution. The
ledger entry of a source, a JSON string replaced only by compare-and-set (its ``seq`` grows
on every write), is written only after the start succeeded; a start that failed leaves it
unchanged, so the next poll retries.

The first revision seen of a source (or of a source whose location or pipeline changed
identity) is only recorded as the baseline: a pipeline is started explicitly when it is
created, never by the first poll.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from engine import keys
from engine.definition import ActionDeclaration, PipelineDeclaration
from engine.errors import ConveyorError, NotFoundError
from engine.execution import TriggerType
from engine.ids import trigger_token
from engine.settings import Settings
from providers.base import Category, S3Access

log = logging.getLogger("conveyor.triggers")

POLL_TRIGGER = TriggerType.POLL_FOR_SOURCE_CHANGES
# Values of CodePipeline's SourceRevisionType. An unversioned bucket has no version id, so
# its object's ETag is the revision; CodePipeline has no name for that, Conveyor adds one.
S3_OBJECT_VERSION_ID = "S3_OBJECT_VERSION_ID"
S3_OBJECT_ETAG = "S3_OBJECT_ETAG"
# CodePipeline reads an S3 source revision's summary from this user metadata key.
REVISION_SUMMARY_METADATA = "codepipeline-artifact-revision-summary"


@dataclass(frozen=True)
class DetectedChange:
    """The revision one source action is at now (a *change* once it differs from the last).

    ``source`` names where the revision comes from (``s3://bucket/key``): when it differs
    from what the ledger recorded, the revision becomes a new baseline instead of a change.
    """

    stage: str
    action: str
    revision_id: str
    revision_type: str
    summary: str | None = None
    source: str = ""

    def source_revision(self) -> dict[str, str]:
        """The execution's ``sourceRevisions`` entry."""
        rev = {
            "actionName": self.action,
            "revisionId": self.revision_id,
            "revisionType": self.revision_type,
        }
        if self.summary:
            rev["revisionSummary"] = self.summary
        return rev


class ChangeDetector(ABC):
    """Reports the current revision of the source actions of one kind in a pipeline.

    Must not raise for one unreachable source: log it and leave it out, so the others in the
    pipeline are still seen. An exception is treated as "this pipeline, this pass: nothing".
    """

    @abstractmethod
    def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]: ...


def polling_enabled(action: ActionDeclaration) -> bool:
    """CodePipeline polls a source unless its configuration says ``PollForSourceChanges``
    is false (any case: definitions written by hand say ``False`` too)."""
    value = action.configuration.get("PollForSourceChanges")
    return value is None or str(value).strip().lower() != "false"


def source_actions(
    pipeline: PipelineDeclaration, owner: str, provider: str
) -> Iterable[tuple[str, ActionDeclaration]]:
    """(stage name, action) for each polled Source action of one provider."""
    for stage in pipeline.stages:
        for action in stage.actions:
            t = action.action_type_id
            if (
                t.category is Category.SOURCE
                and t.owner == owner
                and t.provider == provider
                and polling_enabled(action)
            ):
                yield stage.name, action


class S3ObjectPoller(ChangeDetector):
    """Source/AWS/S3: the object's version id in a versioned bucket, else its ETag."""

    def __init__(self, access: S3Access, *, client: Any = None) -> None:
        self.access = access
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectPoller:
        return cls(
            S3Access(
                settings.s3_endpoint_url,
                settings.s3_access_key_id,
                settings.s3_secret_access_key,
                settings.s3_region,
            )
        )

    @property
    def client(self) -> Any:
        # Short timeouts and one retry: a slow endpoint must not hold up beat's sweep.
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.access.endpoint_url,
                aws_access_key_id=self.access.access_key_id,
                aws_secret_access_key=self.access.secret_access_key,
                region_name=self.access.region,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=3,
                    read_timeout=10,
                ),
            )
        return self._client

    def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]:
        found = []
        for stage, action in source_actions(pipeline, "AWS", "S3"):
            bucket = action.configuration.get("S3Bucket", "")
            key = action.configuration.get("S3ObjectKey", "")
            where = f"s3://{bucket}/{key}"
            if not bucket or not key or "#{" in where:
                continue  # variables resolve only inside an execution: nothing to poll
            try:
                head = self.client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                log.warning(
                    "pipeline %s: cannot read source %s of %s.%s (%s); retrying next poll",
                    pipeline.name,
                    where,
                    stage,
                    action.name,
                    code or exc,
                )
                continue
            except BotoCoreError as exc:
                log.warning(
                    "pipeline %s: S3 endpoint %s unreachable polling %s: %s",
                    pipeline.name,
                    self.access.endpoint_url,
                    where,
                    exc,
                )
                continue
            change = self._revision(head, stage, action.name, where)
            if change is not None:
                found.append(change)
        return found

    @staticmethod
    def _revision(
        head: dict[str, Any], stage: str, action: str, where: str
    ) -> DetectedChange | None:
        version = head.get("VersionId")
        summary = (head.get("Metadata") or {}).get(REVISION_SUMMARY_METADATA)
        # "null" is the version id of an object written before versioning was turned on.
        if version and version != "null":
            return DetectedChange(stage, action, str(version), S3_OBJECT_VERSION_ID, summary, where)
        etag = str(head.get("ETag", "")).strip('"')
        if not etag:
            return None
        return DetectedChange(stage, action, etag, S3_OBJECT_ETAG, summary, where)


# ---------------------------------------------------------------------------- the ledger


class RevisionLedger(Protocol):
    """Last-seen revision per source, as opaque strings replaced only by compare-and-set."""

    def get(self, pipeline: str, source: str) -> str | None: ...

    def compare_and_set(
        self, pipeline: str, source: str, expected: str | None, new: str | None
    ) -> bool:
        """Write ``new`` (None deletes) only if the entry is still ``expected``."""
        ...


# KEYS[2]: the pipeline's own hash: a ledger entry is never written for a pipeline deleted
# meanwhile (it would outlive the pipeline).
_CAS = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur then return 0 end
elseif cur ~= ARGV[3] then
  return 0
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
end
return 1
"""


class RedisRevisionLedger:
    """The ledger in one Redis hash per pipeline (:func:`keys.source_revisions`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._cas = client.register_script(_CAS)

    def get(self, pipeline: str, source: str) -> str | None:
        raw = self.r.hget(keys.source_revisions(pipeline), source)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def compare_and_set(
        self, pipeline: str, source: str, expected: str | None, new: str | None
    ) -> bool:
        args = [
            source,
            "1" if expected is None else "0",
            expected or "",
            "1" if new is None else "0",
            new or "",
        ]
        return bool(
            self._cas(keys=[keys.source_revisions(pipeline), keys.pipeline(pipeline)], args=args)
        )


@dataclass(frozen=True)
class _Entry:
    source: str
    revision_id: str
    revision_type: str
    seq: int
    at: float
    execution_id: str | None = None

    def dump(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "revisionId": self.revision_id,
                "revisionType": self.revision_type,
                "seq": self.seq,
                "at": self.at,
                "executionId": self.execution_id,
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, raw: str | None) -> _Entry | None:
        if raw is None:
            return None
        try:
            d = json.loads(raw)
            return cls(
                str(d["source"]),
                str(d["revisionId"]),
                str(d["revisionType"]),
                int(d["seq"]),
                float(d["at"]),
                d.get("executionId"),
            )
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: overwritten by a new baseline


# ---------------------------------------------------------------------------- starting


class PipelineLike(Protocol):
    @property
    def declaration(self) -> PipelineDeclaration: ...
    @property
    def version(self) -> int: ...
    @property
    def created(self) -> float: ...


class ExecutionLike(Protocol):
    @property
    def execution_id(self) -> str: ...


class TriggerService(Protocol):
    """The part of :class:`engine.service.Service` that triggers use."""

    def list_pipelines(self) -> Sequence[PipelineLike]: ...

    def get_pipeline(self, name: str) -> PipelineLike: ...

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        trigger_type: TriggerType = ...,
        trigger_detail: str | None = ...,
        source_revisions: list[dict[str, str]] | None = ...,
        client_request_token: str | None = ...,
    ) -> ExecutionLike: ...


def _ledger(r: redis.Redis | RevisionLedger) -> RevisionLedger:
    return RedisRevisionLedger(r) if isinstance(r, redis.Redis) else r


def poll_once(
    r: redis.Redis | RevisionLedger,
    service: TriggerService,
    detectors: Sequence[ChangeDetector],
    now: float,
) -> list[str]:
    """Poll every pipeline's current version once; returns the ids of executions started."""
    ledger = _ledger(r)
    started: list[str] = []
    for record in service.list_pipelines():
        started += poll_pipeline(ledger, service, record, detectors, now)
    return started


def poll_pipeline(
    ledger: RevisionLedger,
    service: TriggerService,
    record: PipelineLike,
    detectors: Sequence[ChangeDetector],
    now: float,
) -> list[str]:
    decl = record.declaration
    started: list[str] = []
    for detector in detectors:
        try:
            changes = detector.detect(decl, record.version)
        except Exception:
            log.exception("pipeline %s: %s failed", decl.name, type(detector).__name__)
            continue
        for change in changes:
            eid = _settle(ledger, service, record, change, now)
            if eid is not None:
                started.append(eid)
    return started


def _settle(
    ledger: RevisionLedger,
    service: TriggerService,
    record: PipelineLike,
    change: DetectedChange,
    now: float,
) -> str | None:
    """Compare one observed revision with the ledger; start its execution if it is new."""
    name = record.declaration.name
    field = f"{change.stage}/{change.action}"  # "/" cannot occur in stage or action names
    # A pipeline deleted and created again under its name starts from a new baseline.
    source = f"{record.created!r}|{change.source}"
    raw = ledger.get(name, field)
    prev = _Entry.load(raw)
    seq = prev.seq + 1 if prev else 1

    if prev is None or prev.source != source:
        baseline = _Entry(source, change.revision_id, change.revision_type, seq, now)
        if ledger.compare_and_set(name, field, raw, baseline.dump()):
            log.info(
                "pipeline %s: %s.%s baseline revision %s",
                name,
                change.stage,
                change.action,
                change.revision_id,
            )
        return None
    if prev.revision_id == change.revision_id:
        return None
    try:
        execution = service.start_execution(
            name,
            trigger_type=TriggerType.POLL_FOR_SOURCE_CHANGES,
            trigger_detail=change.action,
            source_revisions=[change.source_revision()],
            client_request_token=trigger_token(record.created, field, change.revision_id),
        )
    except Exception as exc:
        level = logging.WARNING if isinstance(exc, ConveyorError) else logging.ERROR
        log.log(
            level,
            "pipeline %s: could not start an execution for %s revision %s (%s); retrying next poll",
            name,
            field,
            change.revision_id,
            exc,
            exc_info=not isinstance(exc, ConveyorError),
        )
        return None
    done = _Entry(
        source,
        change.revision_id,
        change.revision_type,
        seq,
        now,
        execution_id=execution.execution_id,
    )
    if not ledger.compare_and_set(name, field, raw, done.dump()):
        # Another poller recorded it (or something newer) first: same execution either way.
        log.debug("pipeline %s: %s was recorded by another poller", name, field)
    log.info(
        "pipeline %s: %s.%s revision %s started execution %s",
        name,
        change.stage,
        change.action,
        change.revision_id,
        execution.execution_id,
    )
    return execution.execution_id


# ---------------------------------------------------------------------------- in beat


class SourcePoller:
    """What beat runs between sweeps: a polling round every ``interval`` seconds, spread
    over as many calls of :meth:`tick` as it takes to stay within ``budget`` seconds each,
    so many pipelines or a slow S3 endpoint never hold up the sweep for long."""

    def __init__(
        self,
        r: redis.Redis | RevisionLedger,
        service: TriggerService,
        detectors: Sequence[ChangeDetector],
        *,
        interval: float,
        budget: float,
    ) -> None:
        self.ledger = _ledger(r)
        self.service = service
        self.detectors = list(detectors)
        self.interval = interval
        self.budget = budget
        self._pending: deque[str] = deque()
        self._next_round: float | None = None

    def tick(self, now: float) -> list[str]:
        """Poll what is due; returns the ids of executions started."""
        if self.interval <= 0 or not self.detectors:
            return []
        if not self._pending:
            if self._next_round is not None and now < self._next_round:
                return []
            self._next_round = now + self.interval
            self._pending.extend(p.declaration.name for p in self.service.list_pipelines())
        deadline = time.monotonic() + self.budget
        started: list[str] = []
        while self._pending and time.monotonic() < deadline:
            name = self._pending.popleft()
            try:
                record = self.service.get_pipeline(name)
            except NotFoundError:
                continue  # deleted since the round began
            started += poll_pipeline(
                self.ledger,
                self.service,
                record,
                self.detectors,
                now,
            )
        return started
