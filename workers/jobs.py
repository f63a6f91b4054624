"""The worker's side of the job API: :class:`providers.base.JobChannel` over the Redis job
store, so a provider can hand a job to a handler and wait for its answer without knowing
where jobs live."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidJobStateError, JobNotFoundError, ServiceUnavailableError
from engine.store.credentials import CredentialStore
from engine.store.jobs import JobStatus, JobStore, StoredJob
from providers.base import ActionFailed, ArtifactObject, JobOutcome

# Longest single block on Redis, so cancellation is noticed within this long.
WAIT_SLICE_SECONDS = 1.0
# An open job outlives its action's deadline by this much (then expires with no sweep).
OPEN_GRACE_SECONDS = 3600.0
# An open job of an action without a deadline lives this long.
DEFAULT_OPEN_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class JobQueue:
    """Where the jobs of a job-worker action go: its action type's queue, and the value of
    its queryable property (PollForJobs' queryParam matches it)."""

    action_type: str
    query: str = ""


class RedisJobChannel:
    """Jobs of one attempt (``owner`` says which), kept until ``deadline`` plus a grace:
    handed to a Lambda-style handler (no ``queue``), or queued for job workers."""

    def __init__(
        self,
        store: JobStore,
        owner: dict[str, Any],
        deadline: float | None,
        *,
        credentials: CredentialStore | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.store, self.owner, self.deadline = store, owner, deadline
        self.credential_store, self.queue = credentials, queue

    def _ttl(self) -> float:
        if self.deadline is None:
            return DEFAULT_OPEN_SECONDS
        return self.deadline - time.time() + OPEN_GRACE_SECONDS

    def create(self, data: dict[str, Any]) -> str:
        job_id = str(uuid.uuid4())
        if self.queue is None:
            self.store.create(job_id, data, self.owner, self._ttl())
        else:
            self.store.enqueue(
                job_id,
                data,
                self.owner,
                self._ttl(),
                queue=self.queue.action_type,
                query=self.queue.query,
            )
        return job_id

    def credentials(
        self, reads: list[ArtifactObject], writes: list[ArtifactObject]
    ) -> dict[str, str]:
        if self.credential_store is None:
            raise ActionFailed("this worker cannot issue artifact credentials")
        grant = self.credential_store.issue(
            [(o.bucket, o.key) for o in reads], [(o.bucket, o.key) for o in writes], self._ttl()
        )
        return grant.credentials()

    def wait(
        self, job_id: str, deadline: float | None, cancelled: threading.Event
    ) -> JobOutcome | None:
        while True:
            remaining = WAIT_SLICE_SECONDS if deadline is None else deadline - time.time()
            try:
                job = self.store.wait(job_id, min(WAIT_SLICE_SECONDS, max(remaining, 0.0)))
            except ServiceUnavailableError:
                # Redis restarting: the answer is kept there, so look again shortly.
                job = None
                cancelled.wait(min(WAIT_SLICE_SECONDS, max(remaining, 0.0)))
            if job is not None and job.status.finished:
                return outcome(job)
            if cancelled.is_set() or (deadline is not None and time.time() >= deadline):
                return None

    def close(self, job_id: str) -> None:
        # Answered meanwhile, expired, or unreachable: then there is nothing left to refuse.
        with contextlib.suppress(InvalidJobStateError, JobNotFoundError, ServiceUnavailableError):
            self.store.close(job_id)


def outcome(job: StoredJob) -> JobOutcome:
    """A finished job's result request as the provider's :class:`JobOutcome`."""
    result = job.result or {}
    if job.status is JobStatus.SUCCEEDED:
        details = result.get("executionDetails") or {}
        return JobOutcome(
            succeeded=True,
            continuation_token=result.get("continuationToken"),
            summary=details.get("summary"),
            external_execution_id=details.get("externalExecutionId"),
            percent_complete=details.get("percentComplete"),
            output_variables=dict(result.get("outputVariables") or {}),
            revision=(result.get("currentRevision") or {}).get("revision"),
            revision_summary=(result.get("currentRevision") or {}).get("revisionSummary"),
        )
    if job.status is JobStatus.FAILED:
        failure = result.get("failureDetails") or {}
        return JobOutcome(
            succeeded=False,
            failure_type=failure.get("type"),
            message=failure.get("message"),
            external_execution_id=failure.get("externalExecutionId"),
        )
    return JobOutcome(succeeded=False, message=f"job {job.job_id} {job.status.value}")
