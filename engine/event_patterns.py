"""EventBridge event patterns: validation (``compile_pattern``) and matching (``Pattern``).

Pure: no I/O. Follows "Content filtering in Amazon EventBridge event patterns" and
"Comparison operators for use in event patterns" in the EventBridge user guide:

- a pattern is a JSON object; a key maps to a nested object or to a non-empty array of
  matchers, and the array is an OR; keys are ANDed; ``$or`` takes an array of at least
  two patterns, any of which may match;
- a matcher is a string, number, boolean or null (exact; numbers compare numerically, so
  5 matches 5.0) or an object with one operator: ``prefix``, ``suffix`` (a string or
  ``{"equals-ignore-case": string}``), ``equals-ignore-case``, ``wildcard`` (``*`` any run,
  ``\\*`` a literal star), ``anything-but`` (a value, a list of strings or of numbers, or
  ``{"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}``), ``numeric`` (``=`` alone, or
  one lower and/or one upper bound), ``exists`` (a boolean) and ``cidr``;
- an event field holding an array matches when any of its elements does;
- a missing field matches nothing except ``exists: false``.

Where the guide is silent, the choices are: string operators (prefix, suffix,
equals-ignore-case, wildcard, cidr and the anything-but forms taking an operator) match
string values only; ``anything-but`` with values matches any present value not listed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.errors import InvalidEventPatternError

# PutRule's EventPattern is at most 4096 characters ("PutRule", EventBridge API reference).
MAX_PATTERN_CHARS = 4096
# Numeric matching works on values from -5.0e9 to 5.0e9 inclusive ("Numeric matching").
NUMERIC_LIMIT = Decimal("5.0e9")
# Nesting deeper than this is refused so a hostile pattern cannot exhaust the stack.
MAX_DEPTH = 64

_LOWER = (">", ">=")
_UPPER = ("<", "<=")
_MISSING = object()

Leaf = Callable[[Any], bool]


def _num(value: Any) -> Decimal | None:
    """The number a JSON value holds, or None for anything else (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None


def _same(expected: Any, value: Any) -> bool:
    """Exact match of one JSON scalar: numbers numerically, the rest by type and value."""
    if expected is None or isinstance(expected, bool):
        return value is expected
    if isinstance(expected, str):
        return isinstance(value, str) and value == expected
    want, got = _num(expected), _num(value)
    return want is not None and got is not None and want == got


def _wildcard_regex(text: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class _Field:
    """A key's matchers: either leaf matchers (an OR) or a nested pattern."""

    key: str
    leaves: tuple[Leaf, ...] | None
    exists: bool | None
    nested: _Node | None


@dataclass(frozen=True)
class _Node:
    fields: tuple[_Field, ...]
    ors: tuple[tuple[_Node, ...], ...]

    def matches(self, obj: Any) -> bool:
        if not isinstance(obj, Mapping):
            return False
        for f in self.fields:
            if not _field_matches(f, obj.get(f.key, _MISSING)):
                return False
        return all(any(alt.matches(obj) for alt in group) for group in self.ors)


def _leaf_values(value: Any) -> list[Any]:
    """The scalar values at a field: an array contributes each element (flattened)."""
    if value is _MISSING:
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            out.extend(_leaf_values(v))
        return out
    if isinstance(value, Mapping):
        return []
    return [value]


def _field_matches(f: _Field, value: Any) -> bool:
    if f.nested is not None:
        # EventBridge flattens events to leaf paths: under a missing or scalar field no
        # nested path exists, so only ``exists: false`` can match there.
        items = value if isinstance(value, list) else [value]
        objects = [v for v in items if isinstance(v, Mapping)] or [{}]
        return any(f.nested.matches(v) for v in objects)
    values = _leaf_values(value)
    if f.exists is not None and not values:
        return not f.exists
    assert f.leaves is not None
    return any(leaf(v) for leaf in f.leaves for v in values)


class Pattern:
    """A validated event pattern; ``matches(event)`` says whether an event fits it."""

    def __init__(self, source: dict[str, Any], root: _Node) -> None:
        self.source = source
        self._root = root

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self._root.matches(event)

    def __repr__(self) -> str:
        return f"Pattern({json.dumps(self.source, sort_keys=True)})"


def compile_pattern(pattern: dict[str, Any] | str) -> Pattern:
    """Validate ``pattern`` as EventBridge does; raise InvalidEventPatternError naming the
    problem and its path (``detail.state[0]``)."""
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise _bad("", f"is {len(pattern)} characters; at most {MAX_PATTERN_CHARS} allowed")
        try:
            parsed = json.loads(pattern)
        except json.JSONDecodeError as e:
            raise _bad("", f"is not valid JSON: {e}") from None
    else:
        parsed = pattern
        size = len(json.dumps(parsed))
        if size > MAX_PATTERN_CHARS:
            raise _bad("", f"is {size} characters; at most {MAX_PATTERN_CHARS} allowed")
    if not isinstance(parsed, dict):
        raise _bad("", "must be a JSON object")
    if not parsed:
        raise _bad("", "must not be empty")
    return Pattern(parsed, _node(parsed, "", 0))


def _bad(path: str, problem: str) -> InvalidEventPatternError:
    where = path or "pattern"
    return InvalidEventPatternError(f"Event pattern is not valid: {where} {problem}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _node(obj: dict[str, Any], path: str, depth: int) -> _Node:
    if depth > MAX_DEPTH:
        raise _bad(path, f"is nested deeper than {MAX_DEPTH} levels")
    fields: list[_Field] = []
    ors: list[tuple[_Node, ...]] = []
    for key, value in obj.items():
        here = _join(path, key)
        if key == "$or":
            ors.append(_or(value, here, depth))
        elif isinstance(value, dict):
            if not value:
                raise _bad(here, "must not be an empty object")
            fields.append(_Field(key, None, None, _node(value, here, depth + 1)))
        elif isinstance(value, list):
            fields.append(_leaf_field(key, value, here))
        else:
            raise _bad(here, f"must be an array or an object, not {json.dumps(value)}")
    return _Node(tuple(fields), tuple(ors))


def _or(value: Any, path: str, depth: int) -> tuple[_Node, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise _bad(path, "must be an array of at least two patterns")
    alts: list[_Node] = []
    for i, alt in enumerate(value):
        if not isinstance(alt, dict) or not alt:
            raise _bad(f"{path}[{i}]", "must be a non-empty object")
        alts.append(_node(alt, f"{path}[{i}]", depth + 1))
    return tuple(alts)


def _leaf_field(key: str, items: list[Any], path: str) -> _Field:
    if not items:
        raise _bad(path, "must not be an empty array")
    leaves: list[Leaf] = []
    exists: bool | None = None
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if isinstance(item, dict):
            if len(item) == 1 and "exists" in item:
                if not isinstance(item["exists"], bool):
                    raise _bad(f"{here}.exists", "must be true or false")
                exists = item["exists"]
                leaves.append(_exists_leaf(item["exists"]))
            else:
                leaves.append(_operator(item, here))
        elif isinstance(item, list):
            raise _bad(here, "must be a value or an operator object, not an array")
        else:
            leaves.append(_exact(item))
    return _Field(key, tuple(leaves), exists, None)


def _exists_leaf(want: bool) -> Leaf:
    # Called only for present values (a missing field is handled in _field_matches).
    return lambda _v: want


def _exact(expected: Any) -> Leaf:
    return lambda v: _same(expected, v)


def _string(op: str, operand: Any, path: str) -> str:
    if not isinstance(operand, str):
        raise _bad(path, f"{op} needs a string, not {json.dumps(operand)}")
    return operand


def _operator(item: dict[str, Any], path: str) -> Leaf:
    if len(item) != 1:
        raise _bad(path, f"must hold exactly one operator, not {sorted(item)}")
    op, operand = next(iter(item.items()))
    here = f"{path}.{op}"
    if op in ("prefix", "suffix"):
        return _affix(op, operand, here)
    if op == "equals-ignore-case":
        text = _string(op, operand, here).casefold()
        return lambda v: isinstance(v, str) and v.casefold() == text
    if op == "wildcard":
        rx = _wildcard(operand, here)
        return lambda v: isinstance(v, str) and rx.fullmatch(v) is not None
    if op == "numeric":
        return _numeric(operand, here)
    if op == "cidr":
        return _cidr(operand, here)
    if op == "anything-but":
        return _anything_but(operand, here)
    raise _bad(path, f"uses unknown operator {json.dumps(op)}")


def _affix(op: str, operand: Any, path: str) -> Leaf:
    fold = False
    if isinstance(operand, dict):
        if list(operand) != ["equals-ignore-case"]:
            raise _bad(path, f'{op} takes a string or {{"equals-ignore-case": string}}')
        operand = operand["equals-ignore-case"]
        path = f"{path}.equals-ignore-case"
        fold = True
    text = _string(op, operand, path)
    if fold:
        text = text.casefold()
    test = str.startswith if op == "prefix" else str.endswith
    return lambda v: isinstance(v, str) and test(v.casefold() if fold else v, text)


def _wildcard(operand: Any, path: str) -> re.Pattern[str]:
    text = _string("wildcard", operand, path)
    if "**" in text.replace("\\\\", "").replace("\\*", ""):
        raise _bad(path, "has consecutive wildcard characters")
    return _wildcard_regex(text)


def _bound(value: Any, path: str) -> Decimal:
    n = _num(value)
    if n is None:
        raise _bad(path, f"needs a number, not {json.dumps(value)}")
    if abs(n) > NUMERIC_LIMIT:
        raise _bad(path, "is outside -5.0e9..5.0e9, the range numeric matching supports")
    return n


def _numeric(operand: Any, path: str) -> Leaf:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        raise _bad(path, 'needs ["op", number] or ["op", number, "op", number]')
    checks: list[tuple[str, Decimal]] = []
    for i in range(0, len(operand), 2):
        op = operand[i]
        if op not in ("=", *_LOWER, *_UPPER):
            raise _bad(f"{path}[{i}]", f"is not a comparison operator: {json.dumps(op)}")
        checks.append((op, _bound(operand[i + 1], f"{path}[{i + 1}]")))
    if len(checks) == 2:
        (op1, n1), (op2, n2) = checks
        if not (op1 in _LOWER and op2 in _UPPER):
            raise _bad(path, "needs a lower bound (> or >=) then an upper bound (< or <=)")
        if n1 >= n2:
            raise _bad(path, "has a lower bound not below its upper bound")

    def match(v: Any) -> bool:
        n = _num(v)
        if n is None:
            return False
        for op, b in checks:
            ok = {
                "=": n == b,
                ">": n > b,
                ">=": n >= b,
                "<": n < b,
                "<=": n <= b,
            }[op]
            if not ok:
                return False
        return True

    return match


def _cidr(operand: Any, path: str) -> Leaf:
    text = _string("cidr", operand, path)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _bad(path, f"is not a CIDR block: {json.dumps(text)}") from None

    def match(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v) in net
        except ValueError:
            return False

    return match


def _anything_but(operand: Any, path: str) -> Leaf:
    if isinstance(operand, dict):
        if len(operand) != 1:
            raise _bad(path, "takes one of prefix, suffix, equals-ignore-case, wildcard")
        op, inner = next(iter(operand.items()))
        here = f"{path}.{op}"
        if op in ("prefix", "suffix"):
            text = _string(op, inner, here)
            if op == "prefix" and not text:
                raise _bad(here, "must not be empty")
            test = str.startswith if op == "prefix" else str.endswith
            return lambda v: isinstance(v, str) and not test(v, text)
        if op == "equals-ignore-case":
            words = _strings(op, inner, here)
            folded = {w.casefold() for w in words}
            return lambda v: isinstance(v, str) and v.casefold() not in folded
        if op == "wildcard":
            inner_list = inner if isinstance(inner, list) else [inner]
            if not inner_list:
                raise _bad(here, "must not be an empty array")
            rxs = [
                _wildcard(w, f"{here}[{i}]" if isinstance(inner, list) else here)
                for i, w in enumerate(inner_list)
            ]
            return lambda v: isinstance(v, str) and not any(r.fullmatch(v) for r in rxs)
        raise _bad(path, f"does not take operator {json.dumps(op)}")
    values = operand if isinstance(operand, list) else [operand]
    if not values:
        raise _bad(path, "must not be an empty array")
    for i, x in enumerate(values):
        if not isinstance(x, str) and _num(x) is None:
            where = f"{path}[{i}]" if isinstance(operand, list) else path
            raise _bad(where, f"takes strings or numbers, not {json.dumps(x)}")
    kinds = {isinstance(x, str) for x in values}
    if len(kinds) > 1:
        raise _bad(path, "must list only strings or only numbers")
    return lambda v: not any(_same(x, v) for x in values)


def _strings(op: str, inner: Any, path: str) -> list[str]:
    items = inner if isinstance(inner, list) else [inner]
    if not items:
        raise _bad(path, "must not be an empty array")
    return [
        _string(op, x, f"{path}[{i}]" if isinstance(inner, list) else path)
        for i, x in enumerate(items)
    ]
