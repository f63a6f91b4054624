"""botocore's ``codepipeline`` model, and checking a value against one of its shapes.

Shared by the API edge (:mod:`engine.api.validation`: every request member, AWS-worded) and
the definition checks (:mod:`engine.definition.checks`: the lengths, ranges and patterns of
every member of a ``PipelineDeclaration``, whichever way it arrived: API, CLI file,
CloudFormation). Reading the constraints from botocore keeps them exactly CodePipeline's,
with no copy to drift.

Work is bounded: :class:`Findings` keeps the first :data:`MAX_REPORTED` problems and only
counts the rest, and every echoed value is cut to :data:`MAX_SHOWN` characters, so a body
of a million wrong items yields a short answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import botocore.session

SERVICE = "codepipeline"
MAX_REPORTED = 25
MAX_SHOWN = 80

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


def shape(name: str) -> Any:
    return service_model().shape_for(name)


@dataclass(frozen=True)
class Finding:
    """One constraint a value breaks, at a path like ``stages[0].actions[1].name``."""

    path: str
    rule: str
    value: Any = None

    def aws(self) -> str:
        """AWS's wording: ``Value 'x' at 'path' failed to satisfy constraint: ...``."""
        return (
            f"Value {shown(self.value)} at '{self.path}' failed to satisfy constraint: {self.rule}"
        )


@dataclass
class Findings:
    """The first ``keep`` findings, and how many there were in all."""

    keep: int = MAX_REPORTED
    items: list[Finding] = field(default_factory=list)
    total: int = 0

    def add(self, path: str, rule: str, value: Any = None) -> None:
        self.total += 1
        if len(self.items) < self.keep:
            self.items.append(Finding(path, rule, value))

    @property
    def full(self) -> bool:
        """Enough are kept: a walk may stop looking (``total`` is then a lower bound)."""
        return self.total >= self.keep * 40

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    def message(self) -> str:
        """``N validation errors detected: ...; ...`` as AWS words it, bounded."""
        n = self.total
        head = f"{n}{'+' if self.full else ''} validation error{'s' if n != 1 else ''} detected"
        lines = [f.aws() for f in self.items]
        if n > len(self.items):
            lines.append(f"... and {n - len(self.items)}{'+' if self.full else ''} more")
        return f"{head}: " + "; ".join(lines)


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """A value as a message echoes it: ``null``, or its repr cut to ``limit`` characters."""
    if value is None:
        return "null"
    if isinstance(value, list | dict) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Mode:
    """What a walk judges. The API edge judges everything; the definition checks leave
    types, required members and enums to the pydantic models (which may accept more than
    AWS does) and judge only the model's lengths, counts, ranges and patterns."""

    types: bool = True
    required: bool = True
    enums: bool = True
    # Shapes checked by someone else: the walk stops there.
    skipped: frozenset[str] = frozenset()
    # String shapes whose pattern is not judged (their lengths still are).
    no_pattern: frozenset[str] = frozenset()


REQUEST = Mode(skipped=frozenset({"PipelineDeclaration"}))
# A definition's roleArn may be a CloudFormation ``!GetAtt Role.Arn`` resolved to its name;
# Conveyor assumes no pipeline role, so only its length is held to AWS's limit.
LIMITS_ONLY = Mode(types=False, required=False, enums=False, no_pattern=frozenset({"RoleArn"}))

# Tags per resource (CodePipeline's quota; more is TooManyTagsException, not a validation
# error, so the operations judge it).
MAX_TAGS = 50
# Counts the model leaves open but CodePipeline's quotas (or Conveyor) bound: stages per
# pipeline, actions per stage; artifacts per action and configuration keys per action are
# Conveyor's bounds, far above what any action type takes.
COUNT_LIMITS: dict[str, int] = {
    "PipelineStageDeclarationList": 50,
    "StageActionDeclarationList": 50,
    "InputArtifactList": 100,
    "OutputArtifactList": 100,
    "ActionConfigurationMap": 100,
}


def check(shape: Any, value: Any, path: str, found: Findings, mode: Mode = REQUEST) -> None:
    """Every problem with ``value`` as ``shape``, into ``found`` (stops early once full)."""
    if found.full:
        return
    if shape.name in mode.skipped:
        if not isinstance(value, dict):
            found.add(path, "Member must be an object", value)
        return
    allowed = _JSON_TYPES.get(shape.type_name)
    bad_bool = isinstance(value, bool) and shape.type_name in ("integer", "long", "float", "double")
    if (allowed and not isinstance(value, allowed)) or bad_bool:
        if mode.types:
            found.add(path, f"Member must be of type {shape.type_name}", value)
        return
    kind = shape.type_name
    if kind == "structure":
        _check_structure(shape, value, path, found, mode)
    elif kind == "list":
        _check_length(_limits(shape), value, path, found)
        for i, item in enumerate(value):
            if found.full:
                return
            check(shape.member, item, f"{path}[{i}]", found, mode)
    elif kind == "map":
        _check_length(_limits(shape), value, path, found)
        for key, item in value.items():
            if found.full:
                return
            sub = f"{path}.{key}"
            check(shape.key, key, sub, found, mode)
            check(shape.value, item, sub, found, mode)
    elif kind == "string" and getattr(shape, "enum", None):
        if mode.enums and value not in shape.enum:
            allowed_values = ", ".join(shape.enum)
            found.add(path, f"Member must satisfy enum value set: [{allowed_values}]", value)
    elif kind == "string":
        _check_length(shape.metadata, value, path, found)
        pattern = shape.metadata.get("pattern")
        if pattern and shape.name not in mode.no_pattern and not _matches(pattern, value):
            found.add(path, f"Member must satisfy pattern: {pattern}", value)
    elif kind in ("integer", "long"):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            found.add(path, f"Member must have value >= {low}", value)
        if high is not None and value > high:
            found.add(path, f"Member must have value <= {high}", value)


def _check_structure(shape: Any, value: Any, path: str, found: Findings, mode: Mode) -> None:
    for name, member in shape.members.items():
        if name not in value:
            if mode.required and name in shape.required_members:
                found.add(_join(path, name), "Member must not be null")
            continue
        item = value[name]
        if item is None:
            # JSON null where the model wants a value: absent if optional and a scalar, but a
            # structure, list or map that is null is refused (as a missing required member is).
            if (mode.required and name in shape.required_members) or (
                mode.types and member.type_name in ("structure", "list", "map")
            ):
                found.add(_join(path, name), "Member must not be null")
            continue
        check(member, item, _join(path, name), found, mode)


def _check_length(
    meta: dict[str, Any], value: str | list[Any] | dict[str, Any], path: str, found: Findings
) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and len(value) < low:
        found.add(path, f"Member must have length >= {low}", value)
    if high is not None and len(value) > high:
        found.add(path, f"Member must have length <= {high}", value)


def _limits(shape: Any) -> dict[str, Any]:
    cap = COUNT_LIMITS.get(shape.name)
    meta: dict[str, Any] = shape.metadata
    return meta if cap is None or "max" in meta else {**meta, "max": cap}


def _matches(pattern: str, value: str) -> bool:
    """botocore's patterns are Java regexes matched against the whole value."""
    return _pattern(pattern).fullmatch(value) is not None


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
