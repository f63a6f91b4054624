"""StartPipelineExecution's ``sourceRevisions``: which revision a source action must fetch.

AWS's ``SourceRevisionOverride`` is ``{actionName, revisionType, revisionValue}``. It becomes
the execution's ``sourceRevisions`` entry ``{actionName, revisionType, revisionId}``: the
same shape poll and webhook triggers record, which the worker reads to pin the source action
(a git commit, an image digest, an S3 object version). Pure: judged against the declaration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.definition.model import PipelineDeclaration
from engine.errors import ValidationError

# Which override each source provider can honour exactly.
_REVISION_TYPES: dict[str, tuple[str, ...]] = {
    "CodeCommit": ("COMMIT_ID",),
    "CodeStarSourceConnection": ("COMMIT_ID",),
    "GitHub": ("COMMIT_ID",),
    "ECR": ("IMAGE_DIGEST",),
    "S3": ("S3_OBJECT_VERSION_ID",),
}


def source_revision_entries(
    decl: PipelineDeclaration, overrides: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """The execution's pinned source revisions, or ValidationError naming the bad override."""
    sources = {
        a.name: a
        for stage in decl.stages[:1]
        for a in stage.actions
        if a.action_type_id.category.value == "Source"
    }
    entries: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, o in enumerate(overrides):
        where = f"sourceRevisions[{i}]"
        name, kind, value = o.get("actionName"), o.get("revisionType"), o.get("revisionValue")
        action = sources.get(str(name))
        if action is None:
            raise ValidationError(
                f"{where}.actionName: {name!r} is not a source action of pipeline {decl.name} "
                f"(source actions: {', '.join(sorted(sources)) or 'none'})"
            )
        if name in seen:
            raise ValidationError(f"{where}.actionName: {name!r} is overridden more than once")
        seen.add(str(name))
        allowed = _REVISION_TYPES.get(action.action_type_id.provider, ())
        if kind not in allowed:
            supported = " or ".join(allowed) if allowed else "no override"
            raise ValidationError(
                f"{where}.revisionType: {kind!r} cannot pin {action.action_type_id} source "
                f"action {name!r}; it takes {supported}"
            )
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise ValidationError(f"{where}.revisionValue: a non-empty single-line value is needed")
        entries.append({"actionName": str(name), "revisionType": str(kind), "revisionId": value})
    return entries


def revision_type(provider: str) -> str | None:
    """The revision type a source provider can be pinned by (PutActionRevision), if any."""
    allowed = _REVISION_TYPES.get(provider, ())
    return allowed[0] if allowed else None
