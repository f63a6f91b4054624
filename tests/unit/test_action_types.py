"""Pure parts of custom actions: the rules on declared action types, the providers made
from them, the S3 gateway's decoding of aws-chunked bodies and what a grant allows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.action_types import builtin_record, custom_from_request, type_key
from engine.api.s3_gateway import S3Error, Target, _allowed, _aws_chunked
from engine.errors import ValidationError
from engine.store.credentials import Grant
from providers import default_registry
from providers.job_worker import provider_class

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
properties = st.lists(
    st.fixed_dictionaries(
        {
            "name": names,
            "required": st.booleans(),
            "key": st.booleans(),
            "secret": st.booleans(),
            "queryable": st.booleans(),
        }
    ),
    max_size=12,
)


def _request(props: list[dict[str, Any]], lo: int = 0, hi: int = 1) -> dict[str, Any]:
    return {
        "category": "Build",
        "provider": "Mine",
        "version": "1",
        "configurationProperties": props,
        "inputArtifactDetails": {"minimumCount": lo, "maximumCount": hi},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
    }


@given(properties, st.integers(0, 5), st.integers(0, 5))
def test_a_type_is_accepted_exactly_when_aws_would(
    props: list[dict[str, Any]], lo: int, hi: int
) -> None:
    queryable = [p for p in props if p["queryable"]]
    valid = (
        len(props) <= 10
        and len({p["name"] for p in props}) == len(props)
        and len(queryable) <= 1
        and all(p["required"] and not p["secret"] for p in queryable)
        and lo <= hi
    )
    try:
        record = custom_from_request(_request(props, lo, hi))
    except ValidationError:
        assert not valid
        return
    assert valid
    assert record.key == type_key("Custom", "Build", "Mine", "1")
    spec = record.job_worker_type()
    assert spec.queryable == (queryable[0]["name"] if queryable else None)
    provider = provider_class(spec)
    assert (provider.min_inputs, provider.max_inputs) == (lo, hi)
    # Its configuration model: required properties required, no unknown keys.
    full = {p["name"]: "v" for p in props}
    assert provider.Config.model_validate(full).model_dump(by_alias=True, exclude_none=True) == (
        full
    )
    with pytest.raises(Exception, match="Extra inputs"):
        provider.Config.model_validate({**full, "Unknown!": "x"})
    if props:  # the model's own field names are not configuration keys
        with pytest.raises(Exception, match="Extra inputs"):
            provider.Config.model_validate({**full, "p0": "x"})
    if any(p["required"] for p in props):
        with pytest.raises(Exception, match="Field required"):
            provider.Config.model_validate({})


def test_every_builtin_provider_describes_itself_as_an_action_type() -> None:
    for provider in default_registry(entry_points=False):
        record = builtin_record(provider)
        assert record.owner == provider.action_type.owner
        assert len(record.properties) <= 10
        assert record.inputs.minimumCount <= record.inputs.maximumCount


def _chunked(payload: bytes, sizes: list[int]) -> bytes:
    out, rest = b"", payload
    for size in sizes:
        piece, rest = rest[:size], rest[size:]
        if piece:
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if rest:
        out += f"{len(rest):x}\r\n".encode() + rest + b"\r\n"
    return out + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"


async def _pieces(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        yield data[start:cut]
        start = max(start, cut)
    yield data[start:]


async def _decoded(body: AsyncIterator[bytes], limit: int = 10**6) -> bytes:
    return b"".join([chunk async for chunk in _aws_chunked(body, limit)])


def _refusal(wire: bytes, limit: int = 10**6, cuts: list[int] | None = None) -> str | None:
    """The S3 error code an aws-chunked body is refused with, or None."""
    try:
        asyncio.run(_decoded(_pieces(wire, cuts or []), limit))
    except S3Error as exc:
        assert exc.status == 400
        return exc.code
    return None


@given(
    st.binary(max_size=300),
    st.lists(st.integers(1, 64), max_size=8),
    st.lists(st.integers(0, 1000), max_size=8),
)
def test_aws_chunked_bodies_decode_to_their_payload_however_they_arrive(
    payload: bytes, sizes: list[int], cuts: list[int]
) -> None:
    wire = _chunked(payload, sizes)
    assert asyncio.run(_decoded(_pieces(wire, cuts))) == payload


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=6))
def test_any_aws_chunked_body_decodes_or_is_refused_with_400(wire: bytes, cuts: list[int]) -> None:
    assert _refusal(wire, limit=100, cuts=cuts) in (None, "IncompleteBody", "EntityTooLarge")


@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(1, 64), max_size=8))
def test_a_payload_over_the_limit_is_refused_before_its_data(
    payload: bytes, sizes: list[int]
) -> None:
    wire = _chunked(payload, sizes)
    assert _refusal(wire, limit=len(payload) - 1) == "EntityTooLarge"
    assert _refusal(wire, limit=len(payload)) is None


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"FFFFFFFFFF\r\n" + b"x" * 1000, "EntityTooLarge"),  # a huge declared chunk
        (b"x" * 1000, "IncompleteBody"),  # no CRLF: no header ever ends
        (b"4;" + b"e" * 200 + b"\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),  # too long
        (b"zz\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),  # not hex
        (b"0x4\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),  # int() would take these
        (b" 4\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),
        (b"+4\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),
        (b"\r\nabcd\r\n0\r\n\r\n", "IncompleteBody"),  # no size at all
        (b"4\nabcd\r\n0\r\n\r\n", "IncompleteBody"),  # LF alone
        (b"4\r\nabcdXY0\r\n\r\n", "IncompleteBody"),  # data not closed by CRLF
        (b"4\r\nabcd\r\n", "IncompleteBody"),  # ends before the last chunk
        (b"4\r\nab", "IncompleteBody"),  # ends inside a chunk
        (b"4;chunk-signature=" + b"a" * 64 + b"\r\nabcd\r\n0\r\n\r\n", None),
    ],
)
def test_malformed_aws_chunked_framing_is_refused_with_400(wire: bytes, code: str | None) -> None:
    assert _refusal(wire) == code
    assert _refusal(wire, cuts=list(range(len(wire)))) == code  # byte by byte alike


def test_aws_chunked_data_streams_out_before_its_chunk_is_complete() -> None:
    """A declared chunk's data is passed on piece by piece, never gathered whole."""
    seen: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"100000\r\n"  # 1 MiB declared
        for _ in range(4):
            yield b"x" * 1024
            seen.append(len(out))

    out: list[bytes] = []

    async def run() -> None:
        with pytest.raises(S3Error, match="ends before"):
            async for chunk in _aws_chunked(body(), 10**7):
                out.append(chunk)

    asyncio.run(run())
    assert seen == [1, 2, 3, 4] and all(len(c) == 1024 for c in out)


GRANT = Grant(
    "ASIAX",
    "s",
    "t",
    reads=frozenset({("b", "in.zip")}),
    writes=frozenset({("b", "out.zip")}),
)


@given(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
    st.dictionaries(
        st.sampled_from(["uploads", "uploadId", "partNumber", "list-type", "acl", "versionId"]),
        st.just("1"),
    ),
    st.sampled_from(["in.zip", "out.zip", "other.zip"]),
)
def test_a_grant_allows_only_its_reads_and_writes(
    method: str, query: dict[str, str], key: str
) -> None:
    allowed = _allowed(method, query, Target("b", key, key), GRANT)
    if key == "other.zip" or "acl" in query or "list-type" in query:
        assert not allowed
    if key == "in.zip":
        assert allowed == (method in ("GET", "HEAD") and set(query) <= {"partNumber", "versionId"})
    if key == "out.zip" and allowed:
        assert (method, set(query)) in [
            ("PUT", set()),
            ("PUT", {"partNumber", "uploadId"}),
            ("POST", {"uploads"}),
            ("POST", {"uploadId"}),
            ("DELETE", {"uploadId"}),
            ("GET", {"uploadId"}),
        ]
