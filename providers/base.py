"""The whole contract between Conveyor and an action provider.

A provider sees plain directories and a resolved configuration. It never touches Redis,
Celery or the artifact store: the worker downloads inputs before ``run`` and uploads
outputs after it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TextIO

from pydantic import BaseModel, ConfigDict

from providers.sandbox import SandboxPolicy
from providers.ziputil import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES


class ActionFailed(Exception):
    """Raised by a provider to fail its action with a message for the pipeline's user.

    Providers may not import ``engine.errors``; the worker maps this onto
    ``engine.errors.ProviderError`` with the same ``retryable`` flag.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Category(StrEnum):
    SOURCE = "Source"
    BUILD = "Build"
    TEST = "Test"
    DEPLOY = "Deploy"
    APPROVAL = "Approval"
    INVOKE = "Invoke"


class ActionTypeId(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    category: Category
    owner: str
    provider: str
    version: str

    def key(self) -> tuple[str, str, str, str]:
        return (self.category.value, self.owner, self.provider, self.version)

    def __str__(self) -> str:
        return f"{self.category.value}/{self.owner}/{self.provider}/{self.version}"


class ProviderConfig(BaseModel):
    """Base of every provider's ``configuration`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass(frozen=True)
class S3Access:
    """How a provider reaches S3-compatible buckets outside the artifact store."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str


@dataclass
class Job:
    """One attempt of one action, as a provider sees it."""

    pipeline_name: str
    execution_id: str
    stage_name: str
    action_name: str
    attempt: int
    configuration: Any  # an instance of the provider's Config model
    variables: dict[str, str]
    # artifact name -> directory holding its extracted contents (in declaration order)
    inputs: dict[str, Path]
    # artifact name -> empty directory the provider fills; the worker zips and uploads it
    outputs: dict[str, Path]
    workdir: Path
    log: TextIO
    s3: S3Access
    deadline: float | None = None  # epoch seconds
    cancelled: threading.Event = field(default_factory=threading.Event)
    # A source action's pinned revision (the one a trigger detected), else the latest.
    revision: str | None = None
    # The artifact limits (CONVEYOR_MAX_ARTIFACT_BYTES / _FILES), for providers that unpack
    # or pack anything themselves; the worker fills them from its settings.
    max_artifact_bytes: int = DEFAULT_MAX_BYTES
    max_artifact_files: int = DEFAULT_MAX_FILES
    # Conveyor's own API (CodePipeline-compatible), for providers and the handlers they run
    # that report back or start pipelines through it; the worker fills it from its settings.
    api_endpoint: str | None = None
    # How build commands run (user, cgroup, log cap); the worker fills it from its settings.
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)

    @property
    def primary_input(self) -> Path | None:
        return next(iter(self.inputs.values()), None)


@dataclass
class Result:
    """What an attempt produced. A failure is ``succeeded=False`` with a message."""

    succeeded: bool = True
    summary: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    external_execution_id: str | None = None
    external_execution_url: str | None = None
    output_variables: dict[str, str] = field(default_factory=dict)
    # e.g. {"S3": "s3://bucket/key#version"}: a source action's revision
    revision_id: str | None = None
    revision_summary: str | None = None
    # files the worker should upload to the artifact bucket beside the artifacts (logs)
    attachments: dict[str, Path] = field(default_factory=dict)


class Provider(ABC):
    """An action provider. Subclasses set ``action_type`` and ``Config`` and implement run."""

    action_type: ClassVar[ActionTypeId]
    Config: ClassVar[type[ProviderConfig]]
    # Approval-like providers run in the engine, never on a worker.
    runs_on_worker: ClassVar[bool] = True
    # CodePipeline's artifact limits for this action type.
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int] = 0
    min_outputs: ClassVar[int] = 0
    max_outputs: ClassVar[int] = 0
    # How long an action may run when its declaration sets no ``timeoutInMinutes``: the
    # default AWS documents for the action type ("all other actions: 1 hour").
    default_timeout_minutes: ClassVar[int] = 60

    @abstractmethod
    def run(self, job: Job) -> Result:
        """Do the work. Raise ActionFailed or return Result(succeeded=False) to fail."""
