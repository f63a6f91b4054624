"""Smithy RPC v2 CBOR on the API's endpoint: boto3 forced to speak it, and hand-built bodies.

botocore prefers JSON when a model lists both protocols, so the client here loads a copy of
botocore's own codepipeline model whose ``protocols`` lists CBOR alone: everything else (the
serializer, the parser, the operations) is botocore's, unchanged.
"""

from __future__ import annotations

import gzip
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore
import botocore.session
import cbor2
import pytest
from botocore.exceptions import ClientError

from tests.auth_support import ADMIN, sign
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import MISSING, code_of

SERVICE_PATH = "/service/CodePipeline_20150709/operation/"
CBOR_HEADERS = {
    "Smithy-Protocol": "rpc-v2-cbor",
    "Content-Type": "application/cbor",
    "Accept": "application/cbor",
}


@pytest.fixture(scope="session")
def cbor_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data path holding botocore's codepipeline model with CBOR as its only protocol."""
    source = Path(botocore.__file__).parent / "data/codepipeline/2015-07-09"
    root = tmp_path_factory.mktemp("botocore-data")
    target = root / "codepipeline/2015-07-09"
    target.mkdir(parents=True)
    model = json.loads(gzip.decompress((source / "service-2.json.gz").read_bytes()))
    assert "smithy-rpc-v2-cbor" in model["metadata"]["protocols"]
    model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    model["metadata"]["protocol"] = "smithy-rpc-v2-cbor"
    (target / "service-2.json").write_text(json.dumps(model))
    for extra in source.iterdir():
        if extra.name != "service-2.json.gz":
            (target / extra.name).write_bytes(extra.read_bytes())
    return root


@pytest.fixture
def cbor_cp(api: ApiServer, cbor_models: Path) -> Any:
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(cbor_models))
    client = session.create_client(
        "codepipeline",
        endpoint_url=api.url,
        region_name="us-east-1",
        aws_access_key_id=ADMIN.access_key_id,
        aws_secret_access_key=ADMIN.secret_access_key,
    )
    assert client.meta.service_model.resolved_protocol == "smithy-rpc-v2-cbor"
    return client


def post_cbor(
    api: ApiServer,
    operation: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    service: str = "CodePipeline_20150709",
) -> tuple[int, dict[str, str], Any]:
    """POST an RPC v2 CBOR request as written, signed as the admin; the status, headers and
    decoded reply."""
    url = f"{api.url}/service/{service}/operation/{operation}"
    sent = sign("POST", url, body, CBOR_HEADERS if headers is None else headers)
    req = urllib.request.Request(url, data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), cbor2.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), cbor2.loads(err.read())


def test_boto3_speaking_cbor_drives_pipelines(cbor_cp: Any) -> None:
    created = cbor_cp.create_pipeline(
        pipeline=definition("cbor"), tags=[{"key": "k", "value": "v"}]
    )
    assert created["pipeline"]["name"] == "cbor"
    got = cbor_cp.get_pipeline(name="cbor")
    assert isinstance(got["metadata"]["created"], datetime)  # tag 1 timestamps, parsed
    assert got["pipeline"]["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] == "app.zip"

    eid = cbor_cp.start_pipeline_execution(name="cbor")["pipelineExecutionId"]
    execution = cbor_cp.get_pipeline_execution(pipelineName="cbor", pipelineExecutionId=eid)
    assert execution["pipelineExecution"]["status"] == "InProgress"
    summaries = cbor_cp.list_pipeline_executions(pipelineName="cbor")["pipelineExecutionSummaries"]
    (summary,) = [s for s in summaries if s["pipelineExecutionId"] == eid]
    assert isinstance(summary["startTime"], datetime)
    state = cbor_cp.get_pipeline_state(name="cbor")
    assert state["stageStates"][0]["stageName"] == "Source"

    pages = cbor_cp.get_paginator("list_pipelines").paginate(PaginationConfig={"PageSize": 1})
    cbor_cp.create_pipeline(pipeline=definition("cbor2"))
    assert [p["name"] for page in pages for p in page["pipelines"]] == ["cbor", "cbor2"]

    with pytest.raises(ClientError) as exc:
        cbor_cp.get_pipeline(name="nope")
    assert code_of(exc) == "PipelineNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        cbor_cp.get_pipeline_execution(pipelineName="cbor", pipelineExecutionId=MISSING)
    assert code_of(exc) == "PipelineExecutionNotFoundException"


def test_cbor_replies_follow_the_protocol(api: ApiServer) -> None:
    status, headers, body = post_cbor(api, "ListPipelines", cbor2.dumps({}))
    assert (status, body) == (200, {"pipelines": []})
    assert headers["smithy-protocol"] == "rpc-v2-cbor"
    assert headers["content-type"] == "application/cbor"

    # No body, and an indefinite-length empty map: both are the empty input (smithy's tests).
    assert post_cbor(api, "ListPipelines", b"")[0] == 200
    assert post_cbor(api, "ListPipelines", b"\xbf\xff")[0] == 200
    # The service may be named by its absolute shape id, '#' written as '.'.
    long_name = "com.amazonaws.codepipeline.CodePipeline_20150709"
    assert post_cbor(api, "ListPipelines", b"", service=long_name)[0] == 200

    status, headers, body = post_cbor(api, "GetPipeline", cbor2.dumps({"name": "nope"}))
    assert status == 400
    assert body["__type"] == "com.amazonaws.codepipeline#PipelineNotFoundException"
    assert set(body) == {"__type", "message"}
    assert headers["smithy-protocol"] == "rpc-v2-cbor"

    status, _, body = post_cbor(api, "GetPipeline", cbor2.dumps({}))
    assert (status, body["__type"]) == (400, "com.amazonaws.codepipeline#ValidationException")
    assert "'name'" in body["message"]


@pytest.mark.parametrize(
    ("case", "body", "code"),
    [
        ("not cbor", b"\xff\xff\xff", "SerializationException"),
        ("truncated", b"\xa1\x64name\x63ab", "SerializationException"),
        ("not a map", cbor2.dumps([1, 2]), "SerializationException"),
        ("huge declared string", b"\xa1\x64name\x7b" + (2**62).to_bytes(8, "big"), "Serializ"),
        ("huge declared array", b"\xa1\x64name\x9b" + (2**40).to_bytes(8, "big"), "Serializ"),
        ("deep", b"\xa1\x64name" + b"\x81" * 5000 + b"\x01", "SerializationException"),
        ("regex tag", cbor2.dumps({"name": cbor2.CBORTag(35, "(a+)+$")}), "Serializ"),
        ("bignum tag", cbor2.dumps({"name": cbor2.CBORTag(2, b"\xff" * 4000)}), "Serializ"),
        ("shared reference cycle", bytes.fromhex("a1646e616d65d81c81d81d00"), "Serializ"),
        ("list as map key", bytes.fromhex("a1820102") + b"\x01", "SerializationException"),
        ("bytes as map key", cbor2.dumps({b"name": "x"}), "SerializationException"),
        ("duplicate keys", b"\xa2\x64name\x61a\x64name\x61b", "SerializationException"),
        ("infinity", cbor2.dumps({"name": float("inf")}), "SerializationException"),
        ("bad utf-8", b"\xa1\x64name\x62\xed\xa0", "SerializationException"),
        ("wrong type", cbor2.dumps({"name": 5}), "ValidationException"),
    ],
)
def test_malformed_cbor_is_a_4xx_aws_error(
    api: ApiServer, case: str, body: bytes, code: str
) -> None:
    status, _, reply = post_cbor(api, "GetPipeline", body)
    assert 400 <= status < 500, case
    assert set(reply) == {"__type", "message"}, case
    assert reply["__type"].split("#")[1].startswith(code), (case, reply)


def test_requests_that_break_the_protocol_are_refused(api: ApiServer) -> None:
    def type_of(reply: Any) -> str:
        return str(reply["__type"]).split("#")[1]

    no_protocol = {k: v for k, v in CBOR_HEADERS.items() if k != "Smithy-Protocol"}
    status, _, reply = post_cbor(api, "ListPipelines", b"", no_protocol)
    assert (status, type_of(reply)) == (400, "UnknownOperationException")

    with_target = {**CBOR_HEADERS, "X-Amz-Target": "CodePipeline_20150709.ListPipelines"}
    status, _, reply = post_cbor(api, "ListPipelines", b"", with_target)
    assert (status, type_of(reply)) == (400, "SerializationException")

    json_typed = {**CBOR_HEADERS, "Content-Type": "application/json"}
    status, _, reply = post_cbor(api, "ListPipelines", b"{}", json_typed)
    assert (status, type_of(reply)) == (400, "UnknownOperationException")

    status, _, reply = post_cbor(api, "ListPipelines", b"", service="Other_20200101")
    assert (status, type_of(reply)) == (400, "UnknownOperationException")
    status, _, reply = post_cbor(api, "LaunchRockets", b"")
    assert (status, type_of(reply)) == (400, "UnknownOperationException")
    assert "does not exist" in reply["message"]

    # Over the body limit: refused on the declared length, before the body is read.
    parts = urllib.parse.urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.putrequest("POST", f"{SERVICE_PATH}CreatePipeline")
        for key, value in {**CBOR_HEADERS, "Content-Length": str(2 * 1024 * 1024)}.items():
            conn.putheader(key, value)
        conn.endheaders(b"\xa0")
        resp = conn.getresponse()
        reply = cbor2.loads(resp.read())
        assert (resp.status, type_of(reply)) == (413, "RequestEntityTooLargeException")
        assert resp.headers["smithy-protocol"] == "rpc-v2-cbor"
    finally:
        conn.close()


def test_tag_1_timestamps_arrive_as_epoch_seconds(api: ApiServer, cbor_cp: Any) -> None:
    """PutActionRevision's ``created`` is the one kind of timestamp a request carries."""
    cbor_cp.create_pipeline(pipeline=definition("rev"))
    body = {
        "pipelineName": "rev",
        "stageName": "Source",
        "actionName": "Fetch",
        "actionRevision": {
            "revisionId": "v-2",
            "revisionChangeId": "c-2",
            "created": cbor2.CBORTag(1, 1_700_000_000.5),
        },
    }
    status, _, reply = post_cbor(api, "PutActionRevision", cbor2.dumps(body))
    assert status == 200, reply
    assert reply["newRevision"] is True
    body["actionRevision"]["created"] = cbor2.CBORTag(1, "yesterday")  # type: ignore[index]
    status, _, reply = post_cbor(api, "PutActionRevision", cbor2.dumps(body))
    assert status == 400
    assert reply["__type"].endswith("#SerializationException")
