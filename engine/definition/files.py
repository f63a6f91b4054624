"""Definitions read from files: the one part of :mod:`engine.definition` that does I/O
(everything else is pure, and tested to be)."""

from __future__ import annotations

from pathlib import Path

from engine.definition.checks import validate
from engine.definition.loading import parse_document
from engine.definition.model import PipelineDeclaration
from engine.errors import DefinitionError, Problem
from providers.registry import Registry


def load_file(path: str | Path, registry: Registry) -> PipelineDeclaration:
    """Read, parse and validate a definition file (JSON, YAML or CloudFormation)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DefinitionError([Problem("", f"cannot read {p}: {exc.strerror}")]) from exc
    return validate(parse_document(text, source=str(p)), registry)
