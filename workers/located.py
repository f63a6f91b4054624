"""Artifacts by location, for providers whose own code reads and writes the artifact store
(``Provider.uses_artifact_locations``: a Lambda function), and the job channel a worker
hands every provider.

Inputs are the objects earlier actions recorded; each output gets the key the worker would
have uploaded it to (deterministic per attempt, as for every other provider), and after the
provider succeeds, the object there is what is recorded, so it must exist by then.
"""

from __future__ import annotations

from pydantic import SecretStr

from engine.action_types import type_key
from engine.definition import ActionDeclaration
from engine.execution import ActionState, ExecutionState
from engine.settings import Settings
from providers.base import ActionFailed, ActionTypeId, ApiCredentials, ArtifactObject, Provider
from providers.job_worker import JOB_WORKER_OWNERS, JobWorkerAction, provider_class
from workers.artifacts import ArtifactRef, ArtifactStore, artifact_key, s3_url
from workers.jobs import JobQueue, RedisJobChannel
from workers.runtime import Runtime


def input_locations(act: ActionState) -> dict[str, ArtifactObject]:
    return {loc.name: ArtifactObject(loc.bucket, loc.key) for loc in act.input_artifacts}


def output_locations(
    state: ExecutionState, act: ActionState, decl: ActionDeclaration, attempt: int
) -> dict[str, ArtifactObject]:
    assert act.action_execution_id is not None
    return {
        a.name: ArtifactObject(
            state.artifact_bucket,
            artifact_key(state.pipeline_name, a.name, act.action_execution_id, attempt),
        )
        for a in decl.output_artifacts
    }


def written_output(store: ArtifactStore, name: str, obj: ArtifactObject) -> ArtifactRef:
    """The output artifact the provider's code wrote, or a failure naming where it should be."""
    ref = store.stat(obj.bucket, obj.key)
    if ref is None:
        raise ActionFailed(
            f"output artifact {name} was not written: the function must upload it to "
            f"{s3_url(obj.bucket, obj.key)} (its outputArtifacts location) before it "
            "reports success"
        )
    return ref


def job_channel(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    name: str,
    attempt: int,
    kind: str,
    deadline: float | None,
    queue: JobQueue | None = None,
) -> RedisJobChannel:
    """Jobs of this attempt of an action or rule ``name``, kept until its deadline (queued
    for job workers when ``queue`` says where)."""
    owner = {
        "pipeline": state.pipeline_name,
        "executionId": state.execution_id,
        "stage": stage,
        "name": name,
        "attempt": attempt,
        "kind": kind,
    }
    return RedisJobChannel(
        rt.store.jobs, owner, deadline, credentials=rt.store.credentials, queue=queue
    )


def job_queue(provider: type[Provider], configuration: dict[str, str]) -> JobQueue | None:
    """Where a job-worker action's jobs wait: its action type's queue, filtered by the value
    of its queryable property. None for every other provider."""
    if not issubclass(provider, JobWorkerAction):
        return None
    spec = provider.spec
    t = spec.action_type
    queryable = spec.queryable
    return JobQueue(
        action_type=type_key(t.owner, t.category.value, t.provider, t.version),
        query=configuration.get(queryable, "") if queryable else "",
    )


def declared_provider(rt: Runtime, action_type: ActionTypeId) -> type[Provider] | None:
    """The provider of a job-worker action type declared in the store (a deleted one too,
    so that its running actions finish); None for any other type."""
    t = action_type
    if t.owner not in JOB_WORKER_OWNERS:
        return None
    record = rt.store.action_types.get(type_key(t.owner, t.category.value, t.provider, t.version))
    return provider_class(record.job_worker_type()) if record is not None else None


def api_credentials(settings: Settings) -> ApiCredentials | None:
    """The key workers sign their own Conveyor API calls with (Invoke/CodePipeline)."""
    return _pair(settings.api_access_key_id, settings.api_secret_access_key)


def handler_api_credentials(settings: Settings) -> ApiCredentials | None:
    """The key Lambda-style handlers sign their job results with: their own, job-worker
    only. Never the workers' key (operator too): a handler is pipeline authors' code, and
    must not start, stop or roll back pipelines. None when unset."""
    return _pair(settings.api_handler_access_key_id, settings.api_handler_secret_access_key)


def _pair(key_id: str | None, secret: SecretStr | None) -> ApiCredentials | None:
    if key_id is None or secret is None:
        return None
    return ApiCredentials(key_id, secret.get_secret_value())
