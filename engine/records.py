"""The base classes of Conveyor's pydantic models, written once.

* :class:`Record`: what Conveyor persists and passes around (executions, run records,
  events, effects). Records round-trip through JSON in Redis; an unknown key in a stored
  record means a bug, so it is an error rather than silently dropped.
* :class:`Declaration`: what users write (pipeline and condition declarations): camelCase
  aliases, snake_case attributes, and a typo such as ``runorder`` is an error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
