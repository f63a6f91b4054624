"""The two wire protocols botocore's model lists for CodePipeline, behind one small seam.

- **JSON 1.1** (``awsJson1_1``): ``POST /``, ``X-Amz-Target: CodePipeline_20150709.<Op>``,
  ``Content-Type: application/x-amz-json-1.1``. What boto3 and the AWS CLI send.
- **Smithy RPC v2 CBOR** (``rpcv2Cbor``):
  ``POST /service/CodePipeline_20150709/operation/<Op>``, ``Smithy-Protocol: rpc-v2-cbor``,
  ``Content-Type: application/cbor``; timestamps are CBOR tag 1; errors carry the error's
  absolute shape id in ``__type``.

Each protocol only reads a request's routing headers, decodes a body into the JSON-shaped
dict the operations take, and encodes a reply; checking, running, paging and error mapping
are shared (``engine.api.app._call``).

Content types: JSON requests must say ``application/x-amz-json-1.1`` or ``-1.0`` (AWS's
JSON services take either; the AWS CLI and boto3 send 1.1, and parameters such as
``; charset=utf-8`` are ignored, as smithy's protocol tests require). Any other or a missing
Content-Type is refused with ``UnknownOperationException`` (400), which is how AWS answers
a request it cannot route: its front end picks the protocol by media type, so a body it
cannot read as JSON never reaches an operation. A CBOR request may leave Content-Type out
(its path already says which protocol it speaks), but any other value than
``application/cbor`` is refused the same way.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import cache
from typing import Any, ClassVar

import cbor2
from fastapi.responses import Response
from starlette.datastructures import Headers

from engine.api import cbor
from engine.api.parsing import BodyLimits, ProtocolError, parse_body
from engine.api.validation import TARGET_PREFIX, service_model

JSON_MEDIA_TYPE = "application/x-amz-json-1.1"
JSON_MEDIA_TYPES = frozenset({JSON_MEDIA_TYPE, "application/x-amz-json-1.0"})
# Absolute shape ids for CBOR's ``__type``: the model's own errors live in the service's
# namespace; protocol-level ones (SerializationException, UnknownOperationException,
# InternalFailure...) in the namespace AWS's front end uses for them.
SERVICE_NAMESPACE = "com.amazonaws.codepipeline"
COMMON_NAMESPACE = "com.amazon.coral.service"


def media_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return value.split(";", 1)[0].strip().lower() if value is not None else None


class Wire(ABC):
    """One protocol's body codec and reply shape."""

    name: ClassVar[str]
    media_type: ClassVar[str]

    @abstractmethod
    def parse(self, raw: bytes, limits: BodyLimits) -> dict[str, Any]: ...

    @abstractmethod
    def encode(self, operation: str, body: dict[str, Any]) -> bytes: ...

    def error_type(self, code: str) -> str:
        return code

    def headers(self) -> dict[str, str]:
        return {}

    def reply(self, operation: str, body: dict[str, Any]) -> Response:
        return self._response(self.encode(operation, body), 200)

    def error(self, code: str, message: str, status: int = 400) -> Response:
        return self._response(
            self._encode_error({"__type": self.error_type(code), "message": message}), status
        )

    @abstractmethod
    def _encode_error(self, body: dict[str, Any]) -> bytes: ...

    @abstractmethod
    def error_fields(self, content: bytes) -> tuple[str, str]:
        """The error name and message of an error reply this protocol encoded."""

    def _response(self, content: bytes, status: int) -> Response:
        return Response(
            content=content, status_code=status, media_type=self.media_type, headers=self.headers()
        )


class JsonWire(Wire):
    name = "JSON 1.1"
    media_type = JSON_MEDIA_TYPE

    def operation(self, headers: Headers) -> str:
        """The operation a JSON 1.1 request names (refused if its media type is wrong)."""
        kind = media_type(headers)
        if kind not in JSON_MEDIA_TYPES:
            raise ProtocolError(
                "UnknownOperationException",
                f"Content-Type {headers.get('content-type')!r} is not served here: JSON "
                f"requests send {JSON_MEDIA_TYPE} with X-Amz-Target; smithy RPC v2 CBOR "
                "requests POST application/cbor to /service/<service>/operation/<operation>",
            )
        target = headers.get("x-amz-target")
        prefix = f"{TARGET_PREFIX}."
        if not target or not target.startswith(prefix):
            raise ProtocolError(
                "UnknownOperationException", f"missing or foreign X-Amz-Target {target!r}"
            )
        return target[len(prefix) :]

    def parse(self, raw: bytes, limits: BodyLimits) -> dict[str, Any]:
        return parse_body(raw, limits)

    def encode(self, operation: str, body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":")).encode()

    def _encode_error(self, body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":")).encode()

    def error_fields(self, content: bytes) -> tuple[str, str]:
        try:
            parsed = json.loads(content)
        except (ValueError, RecursionError):
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        return str(parsed.get("__type") or "Error"), str(parsed.get("message", ""))


class CborWire(Wire):
    name = "RPC v2 CBOR"
    media_type = cbor.MEDIA_TYPE

    SERVICE_NAMES = frozenset({TARGET_PREFIX, f"{SERVICE_NAMESPACE}.{TARGET_PREFIX}"})

    def operation(self, headers: Headers, service_name: str, operation: str) -> str:
        """The operation an RPC v2 CBOR request names, after the protocol's own checks."""
        protocol = headers.get("smithy-protocol")
        if protocol != cbor.SMITHY_PROTOCOL:
            raise ProtocolError(
                "UnknownOperationException",
                f"Smithy-Protocol header is {protocol!r}; RPC v2 CBOR requests send "
                f"{cbor.SMITHY_PROTOCOL!r}",
            )
        if "x-amz-target" in headers or "x-amzn-target" in headers:
            raise ProtocolError(
                "SerializationException",
                "an RPC v2 CBOR request must not carry X-Amz-Target (the protocol forbids it)",
            )
        kind = media_type(headers)
        if kind is not None and kind != cbor.MEDIA_TYPE:
            raise ProtocolError(
                "UnknownOperationException",
                f"Content-Type {headers.get('content-type')!r} is not {cbor.MEDIA_TYPE}",
            )
        if service_name not in self.SERVICE_NAMES:
            raise ProtocolError(
                "UnknownOperationException",
                f"service {service_name!r} is not served here; this is {TARGET_PREFIX}",
            )
        return operation

    def parse(self, raw: bytes, limits: BodyLimits) -> dict[str, Any]:
        return cbor.decode_body(raw, limits)

    def encode(self, operation: str, body: dict[str, Any]) -> bytes:
        shape = service_model().operation_model(operation).output_shape
        return cbor.encode_body(shape, body)

    def _encode_error(self, body: dict[str, Any]) -> bytes:
        return cbor.encode_body(None, body)

    def error_fields(self, content: bytes) -> tuple[str, str]:
        body = cbor2.loads(content)
        return str(body["__type"]).rsplit("#", 1)[-1], str(body.get("message", ""))

    def error_type(self, code: str) -> str:
        ours = code in _model_errors()
        return f"{SERVICE_NAMESPACE if ours else COMMON_NAMESPACE}#{code}"

    def headers(self) -> dict[str, str]:
        return {"Smithy-Protocol": cbor.SMITHY_PROTOCOL}


@cache
def _model_errors() -> frozenset[str]:
    return frozenset(shape.name for shape in service_model().error_shapes)


JSON = JsonWire()
CBOR = CborWire()
