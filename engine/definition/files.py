"""Definitions read from files: the one part of :mod:`engine.definition` that does I/O
(everything else is pure, and tested to be)."""

from __future__ import annotations

from pathlib import Path

from engine.definition.checks import validate
from engine.definition.loading import MAX_DEFINITION_BYTES, parse_document
from engine.definition.model import PipelineDeclaration
from engine.errors import DefinitionError, Problem
from providers.registry import Registry


def load_file(path: str | Path, registry: Registry) -> PipelineDeclaration:
    """Read, parse and validate a definition file (JSON, YAML or CloudFormation)."""
    p = Path(path)
    return validate(parse_document(read_text(p), source=str(p)), registry)


def read_text(path: str | Path, limit: int = MAX_DEFINITION_BYTES) -> str:
    """A definition file's text; a file over ``limit`` bytes is refused unread."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise DefinitionError([Problem("", f"cannot read {p}: {exc.strerror}")]) from exc
    if len(data) > limit:
        raise DefinitionError([Problem("", f"{p} is larger than {limit} bytes")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem("", f"{p} is not UTF-8 (byte {exc.start})")]) from None
