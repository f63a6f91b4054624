"""Bounded work per request, over real HTTP: what used to be a 500, a hang or gigabytes is a
4xx with an AWS error shape, quickly, and the server stays responsive and small."""

from __future__ import annotations

import http.client
import json
import resource
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.parsing import MAX_BODY_BYTES
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import code_of, message_of, raw
from tests.e2e.test_api_cbor import post_cbor

MB = 1024 * 1024


def post(api: ApiServer, operation: str, body: bytes | str) -> tuple[int, dict[str, Any], int]:
    """Status, parsed error body, and size of the reply."""
    status, _, reply = raw(api, operation, body)
    return status, reply, len(json.dumps(reply))


def post_declared(
    api: ApiServer, length: int, body: Iterator[bytes] | None = None, head: bytes = b""
) -> int:
    """POST with a declared length (sending only ``head`` of the body: the answer must not
    wait for the rest) or, with ``body``, a chunked one; the status."""
    parts = urllib.parse.urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "CodePipeline_20150709.CreatePipeline",
        }
        if body is None:
            conn.putrequest("POST", "/")
            for k, v in {**headers, "Content-Length": str(length)}.items():
                conn.putheader(k, v)
            conn.endheaders(head or None)
        else:
            conn.request("POST", "/", body=body, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        assert json.loads(resp.read())["__type"] == "RequestEntityTooLargeException"
        return resp.status
    finally:
        conn.close()


def health_within(api: ApiServer, seconds: float) -> None:
    started = time.monotonic()
    with urllib.request.urlopen(f"{api.url}/health", timeout=seconds) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    assert time.monotonic() - started < seconds


def test_oversized_bodies_are_refused_before_they_are_read(api: ApiServer) -> None:
    assert post_declared(api, 5 * MB) == 413
    chunks = (b"x" * 64 * 1024 for _ in range(MAX_BODY_BYTES // (64 * 1024) + 2))
    assert post_declared(api, 0, chunks) == 413
    health_within(api, 2)


def test_amplification_cases_get_4xx_quickly_and_the_server_stays_small(api: ApiServer) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pipeline = definition("amp")
    huge = {
        "stages": json.dumps({"pipeline": {**pipeline, "stages": list(range(1_000_000))}}),
        "config": json.dumps({"pipeline": {**pipeline, "stages": "s" * 5 * MB}}),
    }
    for text in huge.values():  # 5 MB: refused on the declared length, the rest never read
        assert len(text) > 5 * 10**6
        assert post_declared(api, len(text), head=text[:65536].encode()) == 413
    cases: list[tuple[str, str | bytes, int, str]] = [
        ("ListPipelines", '{"a": ' + "[" * 990 + "]" * 990 + "}", 400, "SerializationException"),
        ("ListPipelines", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, ""),
        ("ListPipelines", '{"maxResults": ' + "9" * 4301 + "}", 400, "SerializationException"),
        (
            "CreatePipeline",
            json.dumps({"pipeline": {**pipeline, "stages": [1] * 500_000}}, separators=(",", ":")),
            400,
            "InvalidStructureException",
        ),
        (
            "CreatePipeline",
            json.dumps({"pipeline": {**pipeline, "variables": [{"name": "x" * 900_000}]}}),
            400,
            "InvalidStructureException",
        ),
        ("ListPipelines", b'{"nextToken": "\xff\xfe\xfd"}', 400, "SerializationException"),
    ]
    for operation, body, status, code in cases:
        started = time.monotonic()
        got, reply, size = post(api, operation, body)
        assert (got, operation) == (status, operation), reply
        if code:
            assert reply["__type"] == code
        assert size < 8 * 1024, f"{size} bytes of reply"
        assert time.monotonic() - started < 5
        health_within(api, 2)
    # CBOR's densest cases: a one-byte empty map per stage, and a nesting of one-byte arrays.
    almost_mb = MAX_BODY_BYTES - 4096
    cbor_cases = [
        ("CreatePipeline", cbor2.dumps({"pipeline": {**pipeline, "stages": [{}] * almost_mb}})),
        ("ListPipelines", b"\xa1\x61a" + b"\x81" * almost_mb + b"\x01"),
    ]
    for operation, data in cbor_cases:
        started = time.monotonic()
        got, _, reply = post_cbor(api, operation, data)
        assert 400 <= got < 500, reply
        assert len(cbor2.dumps(reply)) < 8 * 1024
        assert time.monotonic() - started < 5
        health_within(api, 2)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"


def test_declaration_limits_are_enforced_over_http(cp: Any, api: ApiServer) -> None:
    pipeline = definition("limits")
    pipeline["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] = "k" * 900_000
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=pipeline)
    assert code_of(exc) == "InvalidActionDeclarationException"  # inside an action
    assert "configuration.S3ObjectKey: must have length <= 1000" in message_of(exc)
    assert len(message_of(exc)) < 2000

    tags = [{"key": f"k{i}", "value": "v"} for i in range(51)]
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=definition("tags"), tags=tags)
    assert code_of(exc) == "TooManyTagsException"
    assert "at most 50 tags" in message_of(exc)
    with pytest.raises(ClientError) as exc:
        cp.create_pipeline(pipeline=definition("tags"), tags=[{"key": "k" * 129, "value": ""}])
    assert code_of(exc) == "ValidationException"
    assert "'tags[0].key' failed to satisfy constraint: Member must have length <= 128" in (
        message_of(exc)
    )
    assert cp.list_pipelines()["pipelines"] == []


def test_lone_surrogates_are_refused_and_never_stored(api: ApiServer, cp: Any) -> None:
    pipeline = definition("sur")
    body = json.dumps({"pipeline": pipeline}).replace('"app.zip"', '"app\\ud800.zip"')
    status, reply, _ = post(api, "CreatePipeline", body)
    assert (status, reply["__type"]) == (400, "ValidationException")
    assert "'pipeline.stages[0].actions[0].configuration.S3ObjectKey'" in reply["message"]
    with pytest.raises(ClientError) as exc:
        cp.start_pipeline_execution(name="sur")
    assert code_of(exc) == "PipelineNotFoundException"


def test_nulls_for_structures_and_lists_are_validation_errors(api: ApiServer, cp: Any) -> None:
    cp.create_pipeline(pipeline=definition("nulls"))
    status, reply, _ = post(
        api, "StartPipelineExecution", json.dumps({"name": "nulls", "variables": None})
    )
    assert (status, reply["__type"]) == (400, "ValidationException")
    assert "'variables' failed to satisfy constraint: Member must not be null" in reply["message"]
    body = {"pipelineName": "nulls", "filter": {"succeededInStage": None}}
    status, reply, _ = post(api, "ListPipelineExecutions", json.dumps(body))
    assert (status, reply["__type"]) == (400, "ValidationException")
    assert "'filter.succeededInStage'" in reply["message"]
    # An optional scalar that is null means "absent", as it does on AWS.
    status, reply, _ = post(
        api, "ListPipelineExecutions", json.dumps({"pipelineName": "nulls", "nextToken": None})
    )
    assert (status, reply) == (200, {"pipelineExecutionSummaries": []})


def test_next_tokens_are_opaque_and_tamper_checked(api: ApiServer, cp: Any) -> None:
    for name in ("p1", "p2", "p3"):
        cp.create_pipeline(pipeline=definition(name))
    first = cp.list_pipelines(maxResults=1)
    token = first["nextToken"]
    assert token not in ("1", "-5") and not token.isdigit()
    assert [p["name"] for p in cp.list_pipelines(maxResults=1, nextToken=token)["pipelines"]] == [
        "p2"
    ]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in ("-5", "1", forged):
        with pytest.raises(ClientError) as exc:
            cp.list_pipelines(nextToken=bad)
        assert code_of(exc) == "InvalidNextTokenException"
    with pytest.raises(ClientError) as exc:  # a token is good only for the operation it came from
        cp.list_pipeline_executions(pipelineName="p1", nextToken=token)
    assert code_of(exc) == "InvalidNextTokenException"


def test_old_pipeline_versions_are_pruned(
    api: ApiServer, cp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.service.store.definitions, "max_versions", 2)
    cp.create_pipeline(pipeline=definition("v"))
    running = cp.start_pipeline_execution(name="v")["pipelineExecutionId"]  # runs version 1
    for _ in range(4):
        cp.update_pipeline(pipeline=definition("v"))
    assert cp.get_pipeline(name="v")["pipeline"]["version"] == 5
    for gone in (2, 3):
        with pytest.raises(ClientError) as exc:
            cp.get_pipeline(name="v", version=gone)
        assert code_of(exc) == "PipelineVersionNotFoundException"
    kept = [cp.get_pipeline(name="v", version=v)["pipeline"]["version"] for v in (1, 4, 5)]
    assert kept == [1, 4, 5]  # version 1 stays while an execution runs it
    execution = cp.get_pipeline_execution(pipelineName="v", pipelineExecutionId=running)
    assert execution["pipelineExecution"]["pipelineVersion"] == 1

    cp.stop_pipeline_execution(pipelineName="v", pipelineExecutionId=running, abandon=True)
    cp.update_pipeline(pipeline=definition("v"))
    with pytest.raises(ClientError) as exc:
        cp.get_pipeline(name="v", version=1)
    assert code_of(exc) == "PipelineVersionNotFoundException"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
MEMBERS = [
    "name",
    "pipeline",
    "variables",
    "filter",
    "pipelineName",
    "result",
    "nextToken",
    "maxResults",
    "pipelineExecutionId",
    "succeededInStage",
]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operation=st.sampled_from(
        [
            "CreatePipeline",
            "StartPipelineExecution",
            "ListPipelineExecutions",
            "ListPipelines",
            "PutApprovalResult",
            "GetPipeline",
        ]
    ),
    protocol=st.sampled_from(["json", "cbor"]),
    data=st.data(),
)
def test_fuzzed_bodies_never_get_5xx(
    api_server: ApiServer, operation: str, protocol: str, data: st.DataObject
) -> None:
    """JSON bodies to ``POST /``, CBOR bodies (valid CBOR of random values, some with random
    tags, and random bytes) to the RPC v2 CBOR path: a 4xx AWS error or a 200, never 5xx."""
    members = st.dictionaries(
        st.sampled_from(MEMBERS) | st.text(max_size=4), json_values, max_size=4
    )
    if protocol == "json":
        body = data.draw(members.map(json.dumps).map(str.encode) | st.binary(max_size=64))
        status, _, reply = raw(api_server, operation, body)
    else:
        tagged = st.builds(cbor2.CBORTag, st.integers(0, 2**64 - 1), json_values)
        values = st.dictionaries(st.sampled_from(MEMBERS), json_values | tagged, max_size=4)
        body = data.draw(values.map(cbor2.dumps) | st.binary(max_size=64))
        status, _, reply = post_cbor(api_server, operation, body)
    assert status < 500, reply
    if status >= 400:
        assert set(reply) == {"__type", "message"}
