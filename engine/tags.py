"""Resource tags as CodePipeline limits them (pure: the store applies them).

AWS's rules for CodePipeline tags: at most 50 per resource; a key is 1-128 characters, a
value 0-256; both use letters, numbers, spaces and ``_ . : / = + - @``; keys starting with
``aws:`` (any case) are reserved for AWS and can be neither added nor removed. Lengths are
also in botocore's model (checked before this runs); the rest is checked here, with the
errors the model declares (``InvalidTagsException``, ``TooManyTagsException``). Keys under
``conveyor:`` configure approvals and are checked by :mod:`engine.approvals`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine.approvals import check_policy_tag, is_policy_key
from engine.errors import InvalidTagsError, TooManyTagsError

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256
RESERVED_PREFIX = "aws:"
# \w is letters, digits and _ in any script (Python's re is Unicode-aware for str).
_ALLOWED = re.compile(r"[\w\s.:/=+\-@]*")


def tags_of(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A request's ``[{key, value}]`` list as a mapping, every tag checked."""
    out: dict[str, str] = {}
    for i, tag in enumerate(items):
        key, value = str(tag.get("key", "")), str(tag.get("value", ""))
        where = f"tags[{i}]"
        check_key(key, where)
        if len(value) > MAX_VALUE:
            raise InvalidTagsError(f"{where}.value: at most {MAX_VALUE} characters")
        if is_policy_key(key):  # Conveyor's own (approvers may be comma-separated)
            check_policy_tag(key, value, where)
        elif _ALLOWED.fullmatch(value) is None:
            raise InvalidTagsError(
                f"{where}.value: only letters, numbers, spaces and _ . : / = + - @ are allowed"
            )
        if key in out:
            raise InvalidTagsError(f"{where}.key: tag key '{key}' is given more than once")
        out[key] = value
    check_count(len(out))
    return out


def check_key(key: str, where: str) -> None:
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidTagsError(f"{where}.key: must be 1-{MAX_KEY} characters")
    if key.lower().startswith(RESERVED_PREFIX):
        raise InvalidTagsError(
            f"{where}.key: '{key}': the aws: prefix is reserved for AWS and cannot be used"
        )
    if _ALLOWED.fullmatch(key) is None:
        raise InvalidTagsError(
            f"{where}.key: only letters, numbers, spaces and _ . : / = + - @ are allowed"
        )


def check_keys(keys: Iterable[str]) -> list[str]:
    """UntagResource's ``tagKeys``: reserved keys cannot be removed either."""
    out = list(dict.fromkeys(keys))
    for i, key in enumerate(out):
        check_key(key, f"tagKeys[{i}]")
    return out


def check_count(count: int) -> None:
    if count > MAX_TAGS:
        raise TooManyTagsError(
            f"a resource can have at most {MAX_TAGS} tags; this request would leave {count}"
        )


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """CodePipeline's ``[{key, value}]`` shape."""
    return [{"key": k, "value": v} for k, v in tags.items()]
