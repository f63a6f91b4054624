"""Reading a request body with bounded work: size, nesting, number length, valid Unicode.

Every limit is checked before the work it bounds: the declared ``Content-Length`` before a
byte is read, the running size while the body streams in, integer literals by their digits
before ``int()`` sees them, and nesting depth by an iterative scan before any recursive walk
meets the data (the parser's own recursion limit is caught). A body that breaks a limit is
refused with an AWS-shaped 4xx; none reaches the service, and none can make the server
spend seconds or gigabytes on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_INT_DIGITS = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


class ProtocolError(Exception):
    """A request that never reached an operation: bad target, bad body, bad fields."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class BodyLimits:
    """How much one request may ask of the parser (``CONVEYOR_API_MAX_BODY_BYTES``...)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_depth: int = MAX_DEPTH
    max_int_digits: int = MAX_INT_DIGITS


async def read_body(
    declared: str | None, chunks: AsyncIterator[bytes], limits: BodyLimits
) -> bytes:
    """The body, refused (413) as soon as it is known to be over the limit."""
    limit = limits.max_body_bytes
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared)} bytes", limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise _too_large("more", limit)
    return bytes(body)


def _too_large(size: str, limit: int) -> ProtocolError:
    return ProtocolError(
        "RequestEntityTooLargeException",
        f"request body of {size} exceeds the limit of {limit} bytes (CONVEYOR_API_MAX_BODY_BYTES)",
        413,
    )


def parse_body(raw: bytes, limits: BodyLimits) -> dict[str, Any]:
    """The JSON object in ``raw``, or ProtocolError saying what is wrong with it."""
    if not raw.strip():
        return {}  # boto3 sends "{}", but an empty body means the same
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            "SerializationException", f"request body is not UTF-8: byte {exc.start} is invalid"
        ) from None
    try:
        data = json.loads(
            text,
            parse_int=_int_parser(limits.max_int_digits),
            parse_constant=_no_constant,
        )
    except _NumberTooLong as exc:
        raise ProtocolError("SerializationException", str(exc)) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ProtocolError(
            "SerializationException", f"request body is not valid JSON: {why}"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError("SerializationException", "request body must be a JSON object")
    depth, bad = scan(data)
    if depth > limits.max_depth:
        raise ProtocolError(
            "SerializationException",
            f"request body nests {depth} levels deep; at most {limits.max_depth} are allowed",
        )
    if bad is not None:
        raise ProtocolError(
            "ValidationException",
            f"Value at '{bad}' failed to satisfy constraint: Member must be valid Unicode "
            "(it holds a lone surrogate, which has no UTF-8 encoding)",
        )
    return data


class _NumberTooLong(ValueError):
    pass


def _int_parser(max_digits: int) -> Any:
    def parse(literal: str) -> int:
        if len(literal.lstrip("-")) > max_digits:
            raise _NumberTooLong(
                f"request body holds an integer of {len(literal)} digits; "
                f"at most {max_digits} are allowed"
            )
        return int(literal)

    return parse


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def scan(data: Any) -> tuple[int, str | None]:
    """How deep ``data`` nests, and the path of the first key or string holding a lone
    surrogate (None if none does). Iterative, so no depth can exhaust the stack."""
    deepest = 0
    found: str | None = None
    stack: list[tuple[int, str, Any]] = [(0, "", data)]
    while stack:
        depth, path, value = stack.pop()
        if isinstance(value, str):
            if found is None and _SURROGATE.search(value):
                found = path or "<body>"
            continue
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((f"[{i}]", item) for i, item in enumerate(value))
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        for key, item in items:
            if isinstance(value, dict):
                if found is None and _SURROGATE.search(key):
                    found = f"{path}.<key>" if path else "<key>"
                sub = f"{path}.{key}" if path else key
            else:
                sub = f"{path}{key}"
            stack.append((depth, sub, item))
    return deepest, found
