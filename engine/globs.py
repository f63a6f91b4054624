"""The glob language of CodePipeline's trigger filters, compiled to regular expressions.

AWS documents the filters' globs in the words of Java's ``FileSystem.getPathMatcher``
("glob:" syntax), so that is the language implemented here, for branch and tag names as
well as file paths:

- ``*`` matches any run of characters within one path component (never ``/``);
- ``**`` matches any run of characters, ``/`` included; ``**/`` matches any number of
  directories, none included (Java's matcher wants at least one, but AWS's guide says "any
  number of subdirectories", and its own example excludes ``**/README.md`` meaning the
  README at the root too);
- ``?`` matches one character other than ``/``;
- ``[abc]``, ``[a-z]``, ``[!a-c]`` match one character (never ``/``) of, or not of, a set;
  inside brackets ``*``, ``?`` and ``\\`` stand for themselves;
- ``{a,b}`` matches either alternative; groups do not nest;
- ``\\`` makes the next character literal.

A pattern matches the whole name, never a part of it. Bad patterns (an unclosed ``[`` or
``{``, a nested group, a trailing ``\\``) raise :class:`GlobError` when compiled, so a
definition that holds one is refused before it is stored.
"""

from __future__ import annotations

import re
from functools import lru_cache

SPECIAL = frozenset("*?[]{}\\,")


class GlobError(ValueError):
    """A pattern the glob language cannot read; the message says where and why."""


def escape(text: str) -> str:
    """A pattern matching exactly ``text``."""
    return "".join(f"\\{c}" if c in SPECIAL else c for c in text)


def matches(pattern: str, name: str) -> bool:
    """Whether ``name`` as a whole matches ``pattern``."""
    return compile_glob(pattern).fullmatch(name) is not None


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The pattern as a regular expression for ``fullmatch``; raises :class:`GlobError`."""
    return re.compile(_translate(pattern), re.DOTALL)


def _translate(pattern: str) -> str:
    out: list[str] = []
    in_group = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise GlobError(f"pattern {pattern!r} ends with an escape character '\\'")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            if pattern.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
            elif i + 1 < n and pattern[i + 1] == "*":
                out.append(".*")
                i += 2
            else:
                out.append("[^/]*")
                i += 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            i = _bracket(pattern, i, out)
            continue
        elif c == "{":
            if in_group:
                raise GlobError(f"pattern {pattern!r}: groups '{{...}}' cannot be nested")
            in_group = True
            out.append("(?:")
        elif c == "}" and in_group:
            in_group = False
            out.append(")")
        elif c == "," and in_group:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if in_group:
        raise GlobError(f"pattern {pattern!r}: '{{' is never closed by '}}'")
    return "".join(out)


def _bracket(pattern: str, start: int, out: list[str]) -> int:
    """Translate the bracket expression opening at ``start``; return the index after it."""
    i = start + 1
    n = len(pattern)
    negate = i < n and pattern[i] == "!"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while i < n and (pattern[i] != "]" or first):
        c = pattern[i]
        if c == "/":
            raise GlobError(f"pattern {pattern!r}: '/' cannot appear inside '[...]'")
        if c == "-" and not first and i + 1 < n and pattern[i + 1] != "]" and members:
            low = members.pop()
            high = pattern[i + 1]
            if high < low.lstrip("\\"):
                raise GlobError(f"pattern {pattern!r}: range '{low}-{high}' is backwards")
            members.append(f"{low}-{re.escape(high)}")
            i += 2
            first = False
            continue
        members.append(re.escape(c))
        first = False
        i += 1
    if i >= n:
        raise GlobError(f"pattern {pattern!r}: '[' is never closed by ']'")
    # Like Java's matcher, a bracket never matches the separator, negated or not.
    body = "".join(members)
    out.append(f"[^/{body}]" if negate else f"[{body}]")
    return i + 1
