"""Request checking against botocore's own ``codepipeline`` model.

boto3 validates parameters before sending, but curl, other SDKs and older CLIs do not (and
boto3 checks only minimum lengths); the server checks required members, JSON types, enums,
lengths, ranges and patterns itself, as CodePipeline does, so a bad request becomes a
``ValidationException`` naming the field instead of a crash deep in the service. The walk
itself is :mod:`engine.awsmodel` (shared with the definition checks).

A JSON ``null`` is absent for an optional scalar member, and refused ("Member must not be
null") where the model wants a structure, list or map, or the member is required; handlers
never see a null.

The pipeline declaration is not checked here: ``engine.definition.checks`` validates it
(including the model's limits on each of its members) and reports its problems with their
paths, as ``InvalidStructureException``.
"""

from __future__ import annotations

from typing import Any

from engine.awsmodel import REQUEST, SERVICE, Findings, check, service_model

__all__ = ["SERVICE", "TARGET_PREFIX", "check_input", "known_operations", "service_model"]

TARGET_PREFIX = "CodePipeline_20150709"


def known_operations() -> frozenset[str]:
    return frozenset(service_model().operation_names)


def check_input(operation: str, body: dict[str, Any]) -> Findings:
    """Every problem with ``body`` as the input of ``operation`` (the first few kept), and
    the nulls the model lets stand for "absent" removed from ``body``."""
    found = Findings()
    shape = service_model().operation_model(operation).input_shape
    if shape is not None:
        check(shape, body, "", found)
        if not found:
            _drop_nulls(shape, body)
    return found


def _drop_nulls(shape: Any, value: Any) -> None:
    """Remove null members in place, following the model (the declaration is left as sent:
    its checks say what a null there means). The parser bounds the depth."""
    if shape.name in REQUEST.skipped:
        return
    if shape.type_name == "structure" and isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for key, item in value.items():
            if key in shape.members:
                _drop_nulls(shape.members[key], item)
    elif shape.type_name == "list" and isinstance(value, list):
        for item in value:
            _drop_nulls(shape.member, item)
    elif shape.type_name == "map" and isinstance(value, dict):
        for item in value.values():
            _drop_nulls(shape.value, item)
