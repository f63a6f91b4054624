"""Pipeline definitions: CodePipeline's ``PipelineDeclaration``, loaded and checked.

- :mod:`engine.definition.model`: the declaration as pydantic models;
- :mod:`engine.definition.loading`: JSON, YAML and CloudFormation to the declaration dict;
- :mod:`engine.definition.checks`: validation, reporting every problem with its path;
- :mod:`engine.definition.files`: reading a definition file (the package's only I/O).

The names callers use are re-exported here, so ``from engine.definition import ...`` is
all most code needs.
"""

from engine.definition.checks import check, check_shape, validate
from engine.definition.files import load_file, read_text
from engine.definition.loading import (
    CFN_PROPERTIES,
    Template,
    normalize,
    parse_document,
    split_template,
)
from engine.definition.model import (
    ActionDeclaration,
    ArtifactRefDecl,
    ArtifactStore,
    PipelineDeclaration,
    PipelineVariable,
    StageDeclaration,
)

__all__ = [
    "CFN_PROPERTIES",
    "ActionDeclaration",
    "ArtifactRefDecl",
    "ArtifactStore",
    "PipelineDeclaration",
    "PipelineVariable",
    "StageDeclaration",
    "Template",
    "check",
    "check_shape",
    "load_file",
    "normalize",
    "parse_document",
    "read_text",
    "split_template",
    "validate",
]
