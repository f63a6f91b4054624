"""The job operations over real HTTP and Redis, driven by boto3 as a handler drives them."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.store.jobs import JobStatus
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import code_of, message_of, raw
from workers.jobs import RedisJobChannel

DATA = {
    "actionConfiguration": {"configuration": {"FunctionName": "f", "UserParameters": "u"}},
    "inputArtifacts": [
        {
            "name": "Src",
            "location": {"type": "S3", "s3Location": {"bucketName": "b", "objectKey": "k"}},
        }
    ],
    "outputArtifacts": [],
    "artifactCredentials": {"accessKeyId": "a", "secretAccessKey": "s", "sessionToken": ""},
}
OWNER = {"executionId": "e", "stage": "S", "name": "A", "attempt": 1}


def _job(api: ApiServer, deadline: float | None = None) -> tuple[RedisJobChannel, str]:
    channel = RedisJobChannel(api.service.store.jobs, OWNER, deadline or time.time() + 60)
    return channel, channel.create(DATA)


def test_get_job_details_returns_the_job_data(api: ApiServer, cp: Any) -> None:
    _, job_id = _job(api)
    details = cp.get_job_details(jobId=job_id)["jobDetails"]
    assert details == {"id": job_id, "data": DATA, "accountId": "111122223333"}


def test_unknown_and_malformed_job_ids(api: ApiServer, cp: Any) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as exc:
        cp.get_job_details(jobId=missing)
    assert code_of(exc) == "JobNotFoundException"
    assert missing in message_of(exc)
    with pytest.raises(ClientError) as exc:
        cp.put_job_success_result(jobId=missing)
    assert code_of(exc) == "JobNotFoundException"
    status, _, body = raw(api, "GetJobDetails", '{"jobId": "not-a-uuid"}')
    assert status == 400
    assert body["__type"] == "ValidationException"
    assert "jobId" in body["message"]


def test_a_result_is_accepted_once_and_wakes_the_waiter(api: ApiServer, cp: Any) -> None:
    channel, job_id = _job(api)
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(channel.wait(job_id, time.time() + 10, threading.Event()))
    )
    waiter.start()
    cp.put_job_success_result(
        jobId=job_id,
        executionDetails={"summary": "done", "externalExecutionId": "x-1", "percentComplete": 100},
        outputVariables={"Version": "2"},
    )
    waiter.join(5)
    [outcome] = got
    assert outcome is not None and outcome.succeeded
    assert (outcome.summary, outcome.external_execution_id) == ("done", "x-1")
    assert outcome.output_variables == {"Version": "2"}
    with pytest.raises(ClientError) as exc:
        cp.put_job_success_result(jobId=job_id)
    assert code_of(exc) == "InvalidJobStateException"
    with pytest.raises(ClientError) as exc:
        cp.put_job_failure_result(
            jobId=job_id, failureDetails={"type": "JobFailed", "message": "late"}
        )
    assert code_of(exc) == "InvalidJobStateException"
    assert api.service.store.jobs.get(job_id).status is JobStatus.SUCCEEDED


def test_failure_result_reaches_the_waiter(api: ApiServer, cp: Any) -> None:
    channel, job_id = _job(api)
    cp.put_job_failure_result(
        jobId=job_id,
        failureDetails={
            "type": "RevisionUnavailable",
            "message": "gone",
            "externalExecutionId": "r",
        },
    )
    outcome = channel.wait(job_id, time.time(), threading.Event())
    assert outcome is not None and not outcome.succeeded
    assert (outcome.failure_type, outcome.message, outcome.external_execution_id) == (
        "RevisionUnavailable",
        "gone",
        "r",
    )


def test_output_variables_only_on_the_last_result(api: ApiServer, cp: Any) -> None:
    _, job_id = _job(api)
    with pytest.raises(ClientError) as exc:
        cp.put_job_success_result(jobId=job_id, continuationToken="t", outputVariables={"A": "1"})
    assert code_of(exc) == "ValidationException"
    assert "continuation token" in message_of(exc)
    with pytest.raises(ClientError) as exc:
        cp.put_job_success_result(jobId=job_id, outputVariables={"Big": "x" * 130_000})
    assert code_of(exc) == "OutputVariablesSizeExceededException"
    # Neither refusal used up the job's one result.
    cp.put_job_success_result(jobId=job_id, continuationToken="t")
    assert api.service.store.jobs.get(job_id).result == {"continuationToken": "t"}


def test_a_closed_job_refuses_results(api: ApiServer, cp: Any) -> None:
    channel, job_id = _job(api)
    assert channel.wait(job_id, time.time() + 0.2, threading.Event()) is None
    channel.close(job_id)
    with pytest.raises(ClientError) as exc:
        cp.put_job_success_result(jobId=job_id)
    assert code_of(exc) == "InvalidJobStateException"
    assert "TimedOut" in message_of(exc)


def test_acknowledge_job_checks_the_nonce(api: ApiServer, cp: Any) -> None:
    _, job_id = _job(api)
    nonce = api.service.store.jobs.get(job_id).nonce
    assert cp.acknowledge_job(jobId=job_id, nonce=nonce)["status"] == "InProgress"
    with pytest.raises(ClientError) as exc:
        cp.acknowledge_job(jobId=job_id, nonce="wrong")
    assert code_of(exc) == "InvalidNonceException"


def test_jobs_expire(api: ApiServer) -> None:
    _, job_id = _job(api, deadline=time.time())
    ttl = api.redis.ttl(f"conveyor:job:{job_id}")
    # An open job outlives its action's deadline by the grace, then Redis forgets it.
    assert 0 < int(ttl) <= 3600
