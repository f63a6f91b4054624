"""The whole contract between Conveyor and an action provider.

A provider sees plain directories and a resolved configuration. It never touches Redis,
Celery or the artifact store: the worker downloads inputs before ``run`` and uploads
outputs after it. (A provider whose *code* reads and writes the store itself, as a Lambda
function does on AWS, gets the artifacts' locations instead: ``uses_artifact_locations``.)
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, TextIO

from pydantic import BaseModel, ConfigDict

from providers.sandbox import SandboxPolicy
from providers.ziputil import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES

# The account id AWS's documentation uses in its examples: the default of the installation's
# (CONVEYOR_ACCOUNT_ID; engine.arns takes it from here, as providers may not import the engine).
DEFAULT_ACCOUNT_ID = "111122223333"


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
    COMPUTE = "Compute"


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


@dataclass(frozen=True)
class ArtifactObject:
    """An artifact as an object in the artifact store, for providers that hand locations to
    code that reads and writes the store itself (a Lambda function) instead of directories."""

    bucket: str
    key: str
    # The revision of the source change the artifact came from, when one is known.
    revision: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """What was reported for one job through CodePipeline's job API: PutJobSuccessResult
    (``succeeded``, with ``continuation_token`` when the work goes on) or
    PutJobFailureResult (``failure_type`` and ``message``)."""

    succeeded: bool
    continuation_token: str | None = None
    summary: str | None = None
    external_execution_id: str | None = None
    percent_complete: int | None = None
    output_variables: dict[str, str] = field(default_factory=dict)
    failure_type: str | None = None
    message: str | None = None
    # PutJobSuccessResult's currentRevision (a source action's): its revision and summary.
    revision: str | None = None
    revision_summary: str | None = None


class JobChannel(Protocol):
    """Jobs that code outside the worker answers through Conveyor's job API (GetJobDetails,
    PutJobSuccessResult, PutJobFailureResult). The worker implements it; a provider only
    creates a job, hands its id on, and waits for the answer."""

    def create(self, data: dict[str, Any]) -> str:
        """Register a job with ``data`` (CodePipeline's ``JobData`` shape); its new id."""
        ...

    def wait(
        self, job_id: str, deadline: float | None, cancelled: threading.Event
    ) -> JobOutcome | None:
        """The job's outcome once reported; None at ``deadline`` (epoch seconds) or when
        ``cancelled`` is set. Looks at least once, so a deadline in the past is a poll."""
        ...

    def close(self, job_id: str) -> None:
        """No answer is wanted any more: later results for the job are refused."""
        ...

    def credentials(
        self, reads: list[ArtifactObject], writes: list[ArtifactObject]
    ) -> dict[str, str]:
        """Temporary artifact credentials (CodePipeline's ``AWSSessionCredentials``:
        accessKeyId, secretAccessKey, sessionToken) that can read only ``reads`` and write
        only ``writes``, through Conveyor's S3 gateway, for as long as these jobs live."""
        ...


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
    # artifact name -> directory holding its extracted contents (in declaration order),
    # for providers that need the contents (``Provider.needs_contents``)
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
    # The input directories are this attempt's own and nothing reads them after ``run``:
    # a provider may move them rather than copy them (a build's source tree of thousands of
    # files: creating each file again costs more than the build). The worker sets it.
    inputs_disposable: bool = False
    # For providers with ``uses_artifact_locations``: where each input artifact is, and the
    # key each output artifact must be written to (``inputs`` and ``outputs`` stay empty).
    input_locations: dict[str, ArtifactObject] = field(default_factory=dict)
    output_locations: dict[str, ArtifactObject] = field(default_factory=dict)
    # Jobs answered through the job API by the code a ``uses_artifact_locations`` provider
    # runs (Lambda-style handlers); the worker fills it in for those providers.
    jobs: JobChannel | None = None
    action_execution_id: str | None = None
    # input artifact name -> revision id of the source action that produced it (a commit id,
    # an S3 version id); absent when not produced by a source action or not known.
    input_revisions: dict[str, str] = field(default_factory=dict)
    # The local Parameter Store / Secrets Manager stand-in (CONVEYOR_SECRETS_FILE), if any.
    secrets_file: str | None = None
    # Where builds keep ``cache.paths`` between runs on this worker (None: no cache).
    cache_root: Path | None = None
    cache_max_bytes: int = 2 * 1024**3
    # From the action declaration, for compute (Commands) actions: its ``commands``, its
    # ``outputVariables``, its ``environmentVariables`` ({name, value, type}) and each output
    # artifact's ``files``.
    commands: list[str] = field(default_factory=list)
    output_variable_names: list[str] = field(default_factory=list)
    environment_variables: list[dict[str, str]] = field(default_factory=list)
    output_files: dict[str, list[str]] = field(default_factory=dict)
    # How build commands run (user, cgroup, log cap); the worker fills it from its settings.
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    # Who the installation answers as (engine.arns): this pipeline's ARN and the account id,
    # for what a provider shows in CodePipeline's shapes (a Lambda's job event); the worker
    # fills them from its settings.
    pipeline_arn: str | None = None
    account_id: str = DEFAULT_ACCOUNT_ID
    # Conveyor's S3 gateway, where the temporary artifact credentials of jobs work (for the
    # code a ``uses_artifact_locations`` provider runs); the worker fills it from settings.
    s3_gateway_url: str | None = None

    # artifact name -> the artifact object as its producer stored it, byte for byte (a zip
    # or anything an S3 source held), for providers that do not need the contents (a
    # Deploy/S3 without Extract publishes it as it is); then ``inputs`` is empty.
    input_files: dict[str, Path] = field(default_factory=dict)

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
    # Output artifacts the provider made as finished zip archives (a git tree archived
    # straight from the object store): the worker checks them against the artifact limits
    # and uploads them byte for byte instead of zipping the output directory.
    ready_outputs: dict[str, Path] = field(default_factory=dict)
    # Output artifacts that are a file exactly as the provider got it (an S3 source's
    # object): stored byte for byte, whatever it holds. Not checked as a zip (consumers that
    # need the contents unpack it and say so if they cannot); only the size limit applies.
    verbatim_outputs: dict[str, Path] = field(default_factory=dict)


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
    # The provider's code reads and writes the artifact store itself (as a Lambda function
    # does on AWS): the worker passes ``Job.input_locations``/``output_locations`` instead of
    # downloading and zipping, and after success checks that every output object exists.
    uses_artifact_locations: ClassVar[bool] = False
    # Compute actions (Commands) take the declaration's ``commands``, ``outputVariables``,
    # ``environmentVariables`` and output ``files``; no other action may carry them.
    takes_commands: ClassVar[bool] = False

    @classmethod
    def needs_contents(cls, config: Any) -> bool:
        """Whether the action reads its input artifacts' files (``Job.inputs``, unpacked by
        the worker with the hardened extraction) rather than the artifact objects as stored
        (``Job.input_files``). Most do; a Deploy/S3 without Extract does not. An input that
        is not a zip fails an action that needs its contents, naming the artifact."""
        return True

    @abstractmethod
    def run(self, job: Job) -> Result:
        """Do the work. Raise ActionFailed or return Result(succeeded=False) to fail."""
