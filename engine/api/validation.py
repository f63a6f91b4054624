"""Request checking against botocore's own ``codepipeline`` model.

boto3 validates parameters before sending, but curl, other SDKs and older CLIs do not (and
boto3 checks only minimum lengths); the server checks required members, JSON types, enums,
lengths, ranges and patterns itself, as CodePipeline does, so a bad request becomes a
``ValidationException`` naming the field instead of a crash deep in the service. Reading the
shapes from botocore keeps field names exactly CodePipeline's, with no copy to drift.

The pipeline declaration is deliberately not checked here: ``engine.definition.checks``
validates it and reports *every* problem with its path, as ``InvalidStructureException``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import botocore.session

SERVICE = "codepipeline"
TARGET_PREFIX = "CodePipeline_20150709"
SKIPPED_SHAPES = frozenset({"PipelineDeclaration"})

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "float": (int, float),
    "double": (int, float),
    "timestamp": (int, float, str),
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
    "blob": (str,),
}


@lru_cache(maxsize=1)
def service_model() -> Any:
    """botocore's model; loaded once, on first use (it parses a large JSON file)."""
    return botocore.session.get_session().get_service_model(SERVICE)


def known_operations() -> frozenset[str]:
    return frozenset(service_model().operation_names)


def check_input(operation: str, body: dict[str, Any]) -> list[str]:
    """Every problem with ``body`` as the input of ``operation``, AWS-worded, with its path."""
    shape = service_model().operation_model(operation).input_shape
    if shape is None:
        return []
    problems: list[str] = []
    _check(shape, body, "", problems)
    return problems


def _check(shape: Any, value: Any, path: str, problems: list[str]) -> None:
    if shape.name in SKIPPED_SHAPES:
        if not isinstance(value, dict):
            problems.append(_constraint(value, path, "Member must be an object"))
        return
    allowed = _JSON_TYPES.get(shape.type_name)
    bad_bool = isinstance(value, bool) and shape.type_name in ("integer", "long", "float", "double")
    if (allowed and not isinstance(value, allowed)) or bad_bool:
        problems.append(_constraint(value, path, f"Member must be of type {shape.type_name}"))
        return
    if shape.type_name == "structure":
        for name in shape.required_members:
            if value.get(name) is None:
                problems.append(_constraint(None, _join(path, name), "Member must not be null"))
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _check(member, value[name], _join(path, name), problems)
    elif shape.type_name == "list":
        _check_length(shape.metadata, value, path, problems)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", problems)
    elif shape.type_name == "map":
        _check_length(shape.metadata, value, path, problems)
        for key, item in value.items():
            _check(shape.value, item, f"{path}.{key}", problems)
    elif shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        allowed_values = ", ".join(shape.enum)
        problems.append(
            _constraint(value, path, f"Member must satisfy enum value set: [{allowed_values}]")
        )
    elif shape.type_name == "string":
        _check_string(shape.metadata, value, path, problems)
    elif shape.type_name in ("integer", "long"):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            problems.append(_constraint(value, path, f"Member must have value >= {low}"))
        if high is not None and value > high:
            problems.append(_constraint(value, path, f"Member must have value <= {high}"))


def _check_length(
    meta: dict[str, Any], value: str | list[Any] | dict[str, Any], path: str, problems: list[str]
) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and len(value) < low:
        problems.append(_constraint(value, path, f"Member must have length >= {low}"))
    if high is not None and len(value) > high:
        problems.append(_constraint(value, path, f"Member must have length <= {high}"))


def _check_string(meta: dict[str, Any], value: str, path: str, problems: list[str]) -> None:
    """Length and pattern, as CodePipeline checks them (boto3 checks only the minimum)."""
    _check_length(meta, value, path, problems)
    pattern = meta.get("pattern")
    if pattern and _pattern(pattern).fullmatch(value) is None:
        problems.append(_constraint(value, path, f"Member must satisfy pattern: {pattern}"))


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    """botocore's patterns are Java regexes matched against the whole value."""
    return re.compile(pattern, re.DOTALL)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _constraint(value: Any, path: str, rule: str) -> str:
    shown = "null" if value is None else repr(value)
    return f"Value {shown} at '{path}' failed to satisfy constraint: {rule}"
