"""Smithy RPC v2 CBOR bodies: decoded into the same dict a JSON 1.1 body gives, and back.

botocore's model lists ``smithy-rpc-v2-cbor`` for CodePipeline beside ``json``, so SDKs that
prefer it (or a botocore told to) speak CBOR to the same endpoint. Decoding is cbor2's, with
its own bounds switched on: container depth (``max_depth``), map keys that are text only
(``strict_hashable_types``), and no duplicate keys. cbor2 never allocates on a declared
length: a huge byte string, array or map header is read in chunks and fails at the end of
the (size-limited) body, and indefinite-length items grow only as their bytes arrive, so the
body limit bounds memory as it does for JSON.

Semantic tags are where CBOR can do more than JSON: cbor2 would build regular expressions,
shared (even cyclic) references, string references and bignums from them. Only the tags the
protocol uses are honoured: tag 1 (epoch timestamps, which become the epoch-seconds number
JSON clients send) and tag 55799 (self-described CBOR); every other tag is refused.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping
from typing import Any

import cbor2

from engine.api.parsing import BodyLimits, ProtocolError

SMITHY_PROTOCOL = "rpc-v2-cbor"
MEDIA_TYPE = "application/cbor"
EPOCH_TAG = 1
SELF_DESCRIBED_TAG = 55799


def _epoch(value: Any, _immutable: bool) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a tag-1 timestamp must hold a number of epoch seconds")
    return value


def _self_described(value: Any, _immutable: bool) -> Any:
    return value


def _refuse(tag: int) -> Any:
    def refuse(_value: Any, _immutable: bool) -> Any:
        raise ValueError(f"CBOR tag {tag} is not part of the RPC v2 CBOR protocol")

    return refuse


class _Tags(Mapping[int, Any]):
    """cbor2's ``semantic_decoders``: a decoder for every tag number, so none of cbor2's
    built-in tag decoders runs on untrusted input."""

    def __getitem__(self, tag: int) -> Any:
        if tag == EPOCH_TAG:
            return _epoch
        if tag == SELF_DESCRIBED_TAG:
            return _self_described
        return _refuse(tag)

    def __iter__(self) -> Iterator[int]:
        return iter((EPOCH_TAG, SELF_DESCRIBED_TAG))

    def __len__(self) -> int:
        return 2


_TAGS = _Tags()


def decode_body(raw: bytes, limits: BodyLimits) -> dict[str, Any]:
    """The input structure in ``raw`` as a JSON-shaped dict, or ProtocolError."""
    if not raw:
        return {}  # an operation's empty input may come as no body at all
    try:
        data = cbor2.loads(
            raw,
            semantic_decoders=_TAGS,
            max_depth=limits.max_depth,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(
            "SerializationException", f"request body is not valid CBOR: {_why(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError("SerializationException", "request body must be a CBOR map")
    # Text is strict UTF-8, so no lone surrogate can get in (unlike JSON's \ud800 escapes).
    return _to_json(data)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text[:200]


def _to_json(data: dict[str, Any]) -> dict[str, Any]:
    """Map CBOR's extra kinds of value onto JSON's, in place (iteratively): byte strings
    become base64 text (a blob's JSON form), ``undefined`` becomes null (as the protocol
    says); map keys must be text and floats finite. One pass, touching only what needs it:
    a body of a million tiny items is walked in well under a second."""
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for key, value in node.items():
                if type(key) is not str:
                    raise ProtocolError(
                        "SerializationException", f"map key {key!r:.40} is not a text string"
                    )
                if type(value) in _CONTAINERS:
                    stack.append(value)
                elif type(value) not in _PLAIN:
                    node[key] = _scalar(value)
        else:
            for i, value in enumerate(node):
                if type(value) in _CONTAINERS:
                    stack.append(value)
                elif type(value) not in _PLAIN:
                    node[i] = _scalar(value)
    return data


_CONTAINERS = frozenset({dict, list})
_PLAIN = frozenset({str, int, bool, type(None)})


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError("SerializationException", f"number {value} is not finite")
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if value is cbor2.undefined:
        return None
    raise ProtocolError(
        "SerializationException", f"CBOR value of type {type(value).__name__} is not supported"
    )


def encode_body(shape: Any, body: dict[str, Any]) -> bytes:
    """``body`` (JSON-shaped, timestamps as epoch seconds) as CBOR, with every member the
    model's ``shape`` declares a timestamp wrapped in tag 1, as the protocol requires."""
    return cbor2.dumps(_tag_timestamps(shape, body) if shape is not None else body)


def _tag_timestamps(shape: Any, value: Any) -> Any:
    kind = shape.type_name
    if kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return cbor2.CBORTag(EPOCH_TAG, value)
    if kind == "structure" and isinstance(value, dict):
        members = shape.members
        return {k: _tag_timestamps(members[k], v) if k in members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_tag_timestamps(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _tag_timestamps(shape.value, v) for k, v in value.items()}
    return value
