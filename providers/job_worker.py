"""Custom and ThirdParty action types run by job workers (CodePipeline's job-worker model).

An action type made with CreateCustomActionType (or registered with UpdateActionType) has no
code in Conveyor: a job worker outside polls for its jobs (PollForJobs), acknowledges one,
does the work with the job's artifact credentials and reports through PutJobSuccessResult or
PutJobFailureResult. On Conveyor's side the action is this provider: it hands a job to the
action type's queue through its :class:`~providers.base.JobChannel`, waits for the answer,
and does it again with the answer's continuation token until the work is done.

Each declared type becomes a subclass made by :func:`provider_class`, with a configuration
model built from its ``configurationProperties`` (required keys, no unknown keys) and its
artifact counts, so definitions are checked against it like any built-in provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, create_model

from providers.base import (
    ActionFailed,
    ActionTypeId,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.job_data import artifact, pipeline_context

# The owners whose non-built-in action types run on job workers.
JOB_WORKER_OWNERS = ("Custom", "ThirdParty")


@dataclass(frozen=True)
class PropertySpec:
    """One of the action type's ``configurationProperties``."""

    name: str
    required: bool
    key: bool = False
    secret: bool = False
    queryable: bool = False
    description: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class JobWorkerType:
    """What running an action of a job-worker action type needs to know of the type."""

    action_type: ActionTypeId
    properties: tuple[PropertySpec, ...] = ()
    min_inputs: int = 0
    max_inputs: int = 0
    min_outputs: int = 0
    max_outputs: int = 0

    @property
    def queryable(self) -> str | None:
        """The property PollForJobs' ``queryParam`` filters on (at most one)."""
        return next((p.name for p in self.properties if p.queryable), None)

    @property
    def third_party(self) -> bool:
        return self.action_type.owner == "ThirdParty"


class JobWorkerAction(Provider):
    """Base of the generated providers: hand the work to job workers and wait for them."""

    spec: ClassVar[JobWorkerType]
    uses_artifact_locations = True

    def run(self, job: Job) -> Result:
        if job.jobs is None:
            raise ActionFailed("this worker has no job channel to hand jobs to job workers")
        configuration: dict[str, str] = job.configuration.model_dump(
            by_alias=True, exclude_none=True
        )
        credentials = job.jobs.credentials(
            list(job.input_locations.values()), list(job.output_locations.values())
        )
        token: str | None = None
        calls = 0
        name = f"{self.spec.action_type}"
        while True:
            calls += 1
            data = job_data(self.spec, job, configuration, credentials, token)
            job_id = job.jobs.create(data)
            job.log.write(f"Job {job_id} queued for the job workers of {name} (call {calls})\n")
            job.log.flush()
            outcome = job.jobs.wait(job_id, job.deadline, job.cancelled)
            if outcome is None:
                job.jobs.close(job_id)
                if job.cancelled.is_set():
                    return Result(
                        succeeded=False,
                        error_code="Stopped",
                        error_message=f"the action was stopped while job {job_id} was open",
                    )
                return Result(
                    succeeded=False,
                    error_code="TimedOut",
                    error_message=(
                        f"no job worker of {name} reported a result for job {job_id} before "
                        "the action's timeout"
                    ),
                )
            if not outcome.succeeded:
                return Result(
                    succeeded=False,
                    error_code=outcome.failure_type or "JobFailed",
                    error_message=outcome.message or f"job {job_id} failed",
                    external_execution_id=outcome.external_execution_id,
                )
            if outcome.continuation_token:
                token = outcome.continuation_token
                progress = f" ({outcome.percent_complete}%)" if outcome.percent_complete else ""
                job.log.write(f"Continuing: {outcome.summary or 'no summary'}{progress}\n")
                continue
            return Result(
                succeeded=True,
                summary=outcome.summary,
                external_execution_id=outcome.external_execution_id,
                output_variables=outcome.output_variables,
                revision_id=outcome.revision,
                revision_summary=outcome.revision_summary,
            )


def job_data(
    spec: JobWorkerType,
    job: Job,
    configuration: dict[str, str],
    credentials: dict[str, str],
    continuation_token: str | None,
) -> dict[str, Any]:
    """CodePipeline's ``JobData`` for one job: secret properties included (the worker needs
    them); no ``encryptionKey`` (the artifact store is not KMS-encrypted here)."""
    context = pipeline_context(
        job.pipeline_name,
        job.execution_id,
        job.stage_name,
        job.action_name,
        pipeline_arn=job.pipeline_arn,
        action_execution_id=job.action_execution_id,
    )
    data: dict[str, Any] = {
        "actionTypeId": spec.action_type.model_dump(mode="json"),
        "actionConfiguration": {"configuration": configuration},
        "pipelineContext": context,
        "inputArtifacts": [
            artifact(n, o, job.input_revisions.get(n)) for n, o in job.input_locations.items()
        ],
        "outputArtifacts": [artifact(n, o, None) for n, o in job.output_locations.items()],
        "artifactCredentials": credentials,
    }
    if continuation_token is not None:
        data["continuationToken"] = continuation_token
    return data


class DeclaredConfig(ProviderConfig):
    """Base of a declared type's configuration model: its fields are named by alias only
    (property names need not be Python names), and nothing else is accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)


@lru_cache(maxsize=512)
def provider_class(spec: JobWorkerType) -> type[JobWorkerAction]:
    """The provider of one declared job-worker action type (cached: one class per spec)."""
    fields: dict[str, Any] = {}
    for i, prop in enumerate(spec.properties):
        if prop.required:
            fields[f"p{i}"] = (str, Field(alias=prop.name))
        else:
            fields[f"p{i}"] = (str | None, Field(default=None, alias=prop.name))
    config = create_model(f"{spec.action_type.provider}Config", __base__=DeclaredConfig, **fields)
    attrs: dict[str, Any] = {
        "action_type": spec.action_type,
        "Config": config,
        "spec": spec,
        "min_inputs": spec.min_inputs,
        "max_inputs": spec.max_inputs,
        "min_outputs": spec.min_outputs,
        "max_outputs": spec.max_outputs,
    }
    return type(f"JobWorker{spec.action_type.provider}", (JobWorkerAction,), attrs)
