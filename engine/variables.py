"""CodePipeline's ``#{namespace.Variable}`` references, parsed in one place.

Definitions check them, stage-condition rules and actions resolve them; all use this one
pattern so the three never disagree on what a reference is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

# ``namespace`` as CodePipeline allows it; a variable name may also contain dots.
REFERENCE_RE = re.compile(r"#\{([A-Za-z0-9@\-_]+)\.([A-Za-z0-9@\-_.]+)\}")

# Namespaces CodePipeline reserves: execution metadata and pipeline-level variables.
CODEPIPELINE = "codepipeline"
PIPELINE_VARIABLES = "variables"
RESERVED_NAMESPACES = (CODEPIPELINE, PIPELINE_VARIABLES)

Lookup = Callable[[str, str], str | None]


def references(value: str) -> Iterator[tuple[str, str]]:
    """Every ``(namespace, variable)`` referenced in ``value``, in order."""
    for m in REFERENCE_RE.finditer(value):
        yield m.group(1), m.group(2)


def has_reference(value: str) -> bool:
    """Whether ``value`` holds a reference (so it is known only at run time)."""
    return "#{" in value and REFERENCE_RE.search(value) is not None


def substitute(value: str, lookup: Lookup) -> str:
    """Replace each reference with ``lookup(namespace, variable)``; one without a value is
    left as written."""

    def sub(m: re.Match[str]) -> str:
        found = lookup(m.group(1), m.group(2))
        return m.group(0) if found is None else found

    return REFERENCE_RE.sub(sub, value)


# CodePipeline's quota: all output variables of one action, names and values in UTF-8.
MAX_OUTPUT_VARIABLES_BYTES = 122_880


def output_variables_size(variables: dict[str, str]) -> int:
    """What counts against :data:`MAX_OUTPUT_VARIABLES_BYTES`."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
