"""Source change detection without services: fakes for the detector, ledger and service."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from engine.definition import PipelineDeclaration
from engine.errors import PipelineNotFoundError, ValidationError
from providers.base import S3Access
from workers.triggers import (
    POLL_TRIGGER,
    S3_OBJECT_ETAG,
    S3_OBJECT_VERSION_ID,
    ChangeDetector,
    DetectedChange,
    S3ObjectPoller,
    SourcePoller,
    poll_once,
)


def _source(name: str, bucket: str = "src", key: str = "app.zip", **config: str) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "configuration": {"S3Bucket": bucket, "S3ObjectKey": key, **config},
        "outputArtifacts": [{"name": f"{name}Out"}],
    }


def _decl(name: str = "p", *actions: dict[str, Any]) -> PipelineDeclaration:
    build = {
        "name": "Build",
        "actionTypeId": {
            "category": "Build",
            "owner": "AWS",
            "provider": "CodeBuild",
            "version": "1",
        },
        "configuration": {"ProjectName": "x"},
        "inputArtifacts": [{"name": "FetchOut"}],
    }
    return PipelineDeclaration.model_validate(
        {
            "name": name,
            "stages": [
                {"name": "Source", "actions": list(actions) or [_source("Fetch")]},
                {"name": "Build", "actions": [build]},
            ],
        }
    )


@dataclass
class Record:
    declaration: PipelineDeclaration
    version: int = 1
    created: float = 1000.0


@dataclass
class Execution:
    execution_id: str
    trigger_type: str
    trigger_detail: str | None
    source_revisions: list[dict[str, Any]]
    token: str | None


@dataclass
class FakeService:
    """Starts executions as the real service does: a repeated clientRequestToken returns the
    execution it started the first time."""

    pipelines: dict[str, Record] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    fail: Exception | None = None
    fail_after_commit: bool = False

    def list_pipelines(self) -> list[Record]:
        return list(self.pipelines.values())

    def get_pipeline(self, name: str) -> Record:
        if name not in self.pipelines:
            raise PipelineNotFoundError(name)
        return self.pipelines[name]

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        trigger_type: str = "StartPipelineExecution",
        trigger_detail: str | None = None,
        source_revisions: list[dict[str, str]] | None = None,
        client_request_token: str | None = None,
    ) -> Execution:
        if self.fail is not None and not self.fail_after_commit:
            raise self.fail
        known = [
            e for e in self.executions if client_request_token and e.token == client_request_token
        ]
        if known:
            return known[0]
        ex = Execution(
            f"e{len(self.executions) + 1}",
            trigger_type,
            trigger_detail,
            source_revisions or [],
            client_request_token,
        )
        self.executions.append(ex)
        if self.fail is not None:
            raise self.fail
        return ex


class DictLedger:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get(self, pipeline: str, source: str) -> str | None:
        return self.data.get((pipeline, source))

    def compare_and_set(
        self, pipeline: str, source: str, expected: str | None, new: str | None
    ) -> bool:
        if self.data.get((pipeline, source)) != expected:
            return False
        if new is None:
            self.data.pop((pipeline, source), None)
        else:
            self.data[(pipeline, source)] = new
        return True


class FakeDetector(ChangeDetector):
    """Every Source action of every pipeline is at ``revisions[action]``."""

    def __init__(self) -> None:
        self.revisions: dict[str, str] = {}
        self.calls = 0

    def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]:
        self.calls += 1
        return [
            DetectedChange(s.name, a.name, self.revisions[a.name], S3_OBJECT_VERSION_ID, None, "x")
            for s in pipeline.stages
            for a in s.actions
            if a.name in self.revisions
        ]


@pytest.fixture
def world() -> tuple[DictLedger, FakeService, FakeDetector]:
    return DictLedger(), FakeService({"p": Record(_decl())}), FakeDetector()


def test_first_revision_is_a_baseline_and_starts_nothing(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    assert poll_once(ledger, service, [det], now=1.0) == []
    assert poll_once(ledger, service, [det], now=2.0) == []
    assert service.executions == []
    assert json.loads(ledger.data[("p", "Source/Fetch")])["revisionId"] == "v1"


def test_a_new_revision_starts_exactly_one_execution(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    det.revisions["Fetch"] = "v2"
    assert poll_once(ledger, service, [det], now=2.0) == ["e1"]
    assert poll_once(ledger, service, [det], now=3.0) == []
    (ex,) = service.executions
    assert ex.trigger_type == POLL_TRIGGER
    assert ex.trigger_detail == "Fetch"
    assert ex.source_revisions == [
        {"actionName": "Fetch", "revisionId": "v2", "revisionType": S3_OBJECT_VERSION_ID}
    ]
    assert ex.token and ex.token.startswith("trigger-")
    entry = json.loads(ledger.data[("p", "Source/Fetch")])
    assert entry["executionId"] == "e1"


def test_a_revision_that_comes_back_is_a_change_again(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    for i, rev in enumerate(["a", "b", "a"]):
        det.revisions["Fetch"] = rev
        poll_once(ledger, service, [det], now=float(i))
    assert [e.source_revisions[0]["revisionId"] for e in service.executions] == ["b", "a"]


def test_a_failed_start_leaves_the_ledger_so_the_next_poll_retries(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    before = ledger.data[("p", "Source/Fetch")]
    det.revisions["Fetch"] = "v2"
    service.fail = ValidationError("variables: x have no default and no value")
    assert poll_once(ledger, service, [det], now=2.0) == []
    assert ledger.data[("p", "Source/Fetch")] == before
    service.fail = None
    assert poll_once(ledger, service, [det], now=3.0) == ["e1"]


def test_an_error_after_the_execution_was_committed_starts_nothing_twice(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    det.revisions["Fetch"] = "v2"
    service.fail, service.fail_after_commit = ConnectionError("broker down"), True
    assert poll_once(ledger, service, [det], now=2.0) == []
    service.fail = None
    # The retry carries the same token: it gets the execution the first try started.
    assert poll_once(ledger, service, [det], now=3.0) == ["e1"]
    assert poll_once(ledger, service, [det], now=4.0) == []
    assert len(service.executions) == 1


def test_a_poller_that_died_after_starting_is_not_started_again(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    det.revisions["Fetch"] = "v2"
    ledger_before = dict(ledger.data)
    assert poll_once(ledger, service, [det], now=2.0) == ["e1"]
    ledger.data = ledger_before  # as if it died before recording the revision
    assert poll_once(ledger, service, [det], now=3.0) == ["e1"]
    assert len(service.executions) == 1


def test_two_pollers_racing_on_one_revision_start_one_execution(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    det.revisions["Fetch"] = "v2"
    other = DictLedger()
    other.data = dict(ledger.data)  # the second beat read the ledger before the first wrote
    assert poll_once(ledger, service, [det], now=2.0) == ["e1"]
    assert poll_once(other, service, [det], now=2.0) == ["e1"]
    assert len(service.executions) == 1


def test_a_pipeline_created_again_under_its_name_starts_from_a_baseline(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [det], now=1.0)
    service.pipelines["p"] = Record(_decl(), created=2000.0)
    det.revisions["Fetch"] = "v2"
    assert poll_once(ledger, service, [det], now=2.0) == []


def test_a_failing_detector_does_not_stop_the_others(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world

    class Broken(ChangeDetector):
        def detect(self, pipeline: PipelineDeclaration, version: int) -> list[DetectedChange]:
            raise RuntimeError("boom")

    det.revisions["Fetch"] = "v1"
    poll_once(ledger, service, [Broken(), det], now=1.0)
    det.revisions["Fetch"] = "v2"
    assert poll_once(ledger, service, [Broken(), det], now=2.0) == ["e1"]


def test_source_poller_polls_once_per_interval_within_its_budget(
    world: tuple[DictLedger, FakeService, FakeDetector],
) -> None:
    ledger, service, det = world
    service.pipelines["q"] = Record(_decl("q"))
    det.revisions["Fetch"] = "v1"
    poller = SourcePoller(ledger, service, [det], interval=30, budget=0)
    # A zero budget still polls nothing; the round waits for the next tick.
    assert poller.tick(0.0) == [] and det.calls == 0
    poller.budget = 5
    poller.tick(1.0)
    assert det.calls == 2
    poller.tick(10.0)
    assert det.calls == 2  # not due yet
    det.revisions["Fetch"] = "v2"
    del service.pipelines["q"]  # deleted: simply not polled any more
    assert poller.tick(31.0) == ["e1"]
    assert det.calls == 3


def test_polling_off(world: tuple[DictLedger, FakeService, FakeDetector]) -> None:
    ledger, service, det = world
    det.revisions["Fetch"] = "v1"
    assert SourcePoller(ledger, service, [det], interval=0, budget=5).tick(0.0) == []
    assert det.calls == 0


# ---------------------------------------------------------------------------- S3ObjectPoller


class FakeS3:
    def __init__(self, heads: dict[tuple[str, str], dict[str, Any] | Exception]) -> None:
        self.heads = heads
        self.calls: list[tuple[str, str]] = []

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append((Bucket, Key))
        head = self.heads[(Bucket, Key)]
        if isinstance(head, Exception):
            raise head
        return head


ACCESS = S3Access("http://s3.invalid", "k", "s", "us-east-1")


def _missing() -> ClientError:
    return ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")


def test_s3_poller_reads_version_ids_etags_and_summaries() -> None:
    decl = _decl(
        "p",
        _source("Versioned", "b", "v.zip"),
        _source("Plain", "b", "e.zip"),
        _source("Legacy", "b", "l.zip"),
    )
    s3 = FakeS3(
        {
            ("b", "v.zip"): {
                "VersionId": "ver-1",
                "ETag": '"abc"',
                "Metadata": {"codepipeline-artifact-revision-summary": "fix the build"},
            },
            ("b", "e.zip"): {"ETag": '"def"'},
            ("b", "l.zip"): {"VersionId": "null", "ETag": '"ghi"'},
        }
    )
    got = S3ObjectPoller(ACCESS, client=s3).detect(decl, 1)
    assert got == [
        DetectedChange(
            "Source", "Versioned", "ver-1", S3_OBJECT_VERSION_ID, "fix the build", "s3://b/v.zip"
        ),
        DetectedChange("Source", "Plain", "def", S3_OBJECT_ETAG, None, "s3://b/e.zip"),
        DetectedChange("Source", "Legacy", "ghi", S3_OBJECT_ETAG, None, "s3://b/l.zip"),
    ]
    assert got[0].source_revision() == {
        "actionName": "Versioned",
        "revisionId": "ver-1",
        "revisionType": S3_OBJECT_VERSION_ID,
        "revisionSummary": "fix the build",
    }


@pytest.mark.parametrize("value", ["false", "False", "FALSE"])
def test_s3_poller_skips_actions_that_do_not_poll(value: str) -> None:
    decl = _decl("p", _source("Off", "b", "off.zip", PollForSourceChanges=value))
    s3 = FakeS3({})
    assert S3ObjectPoller(ACCESS, client=s3).detect(decl, 1) == []
    assert s3.calls == []


def test_s3_poller_polls_when_poll_for_source_changes_is_true() -> None:
    decl = _decl("p", _source("On", "b", "on.zip", PollForSourceChanges="true"))
    s3 = FakeS3({("b", "on.zip"): {"ETag": '"x"'}})
    assert [c.revision_id for c in S3ObjectPoller(ACCESS, client=s3).detect(decl, 1)] == ["x"]


def test_s3_poller_leaves_out_sources_it_cannot_read(caplog: pytest.LogCaptureFixture) -> None:
    decl = _decl(
        "p",
        _source("Missing", "b", "missing.zip"),
        _source("Down", "b", "down.zip"),
        _source("Fine", "b", "fine.zip"),
    )
    s3 = FakeS3(
        {
            ("b", "missing.zip"): _missing(),
            ("b", "down.zip"): EndpointConnectionError(endpoint_url="http://s3.invalid"),
            ("b", "fine.zip"): {"ETag": '"ok"'},
        }
    )
    got = S3ObjectPoller(ACCESS, client=s3).detect(decl, 1)
    assert [c.action for c in got] == ["Fine"]
    assert "s3://b/missing.zip" in caplog.text and "unreachable" in caplog.text


def test_s3_poller_ignores_other_actions_and_unresolved_variables() -> None:
    decl = _decl("p", _source("Var", "#{variables.bucket}", "x.zip"))
    s3 = FakeS3({})
    assert S3ObjectPoller(ACCESS, client=s3).detect(decl, 1) == []
    assert s3.calls == []
