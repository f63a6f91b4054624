"""CodePipeline's job operations: for Lambda-style handlers reporting on the job they were
invoked with (GetJobDetails, PutJobSuccessResult, PutJobFailureResult, AcknowledgeJob), and
for job workers of Custom and ThirdParty action types (PollForJobs and the ThirdParty
variants of all of these).

Requests are already checked against botocore's model (types, enums, lengths, the job id
pattern); what is left here are the rules the model cannot say, with the errors CodePipeline
gives for them. The job store accepts one result per job, atomically.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from engine.action_types import ActionTypeRecord, described, type_key
from engine.errors import (
    ActionTypeNotFoundError,
    InvalidClientTokenError,
    OutputVariablesSizeExceededError,
    ValidationError,
)
from engine.service import Service
from engine.store.jobs import JobStatus, StoredJob
from engine.variables import MAX_OUTPUT_VARIABLES_BYTES, output_variables_size

Body = dict[str, Any]


def get_job_details(svc: Service, body: Body) -> Body:
    return {"jobDetails": svc.store.jobs.get(body["jobId"]).details()}


def put_job_success_result(svc: Service, body: Body) -> Body:
    variables: dict[str, str] = body.get("outputVariables") or {}
    if variables and body.get("continuationToken"):
        raise ValidationError(
            "outputVariables can be included only when there is no continuation token: "
            "send them with the last PutJobSuccessResult, the one without continuationToken"
        )
    size = output_variables_size(variables)
    if size > MAX_OUTPUT_VARIABLES_BYTES:
        raise OutputVariablesSizeExceededError(
            f"outputVariables total {size} bytes; at most {MAX_OUTPUT_VARIABLES_BYTES} bytes "
            "are allowed for all output variables of an action"
        )
    result = {k: v for k, v in body.items() if k != "jobId"}
    _succeed(svc, body["jobId"], result)
    return {}


def _succeed(svc: Service, job_id: str, result: Body) -> None:
    """Record a success; a continued job's executionDetails become its action's progress."""
    job = svc.store.jobs.get(job_id)
    svc.store.jobs.finish(job_id, JobStatus.SUCCEEDED, result)
    if result.get("continuationToken"):
        svc.store.jobs.record_progress(job, result.get("executionDetails") or {})


def with_progress(svc: Service, state: Body) -> Body:
    """GetPipelineState with the progress job workers reported for the actions still in
    progress (``percentComplete``, and the summary and external id of the last continuation)."""
    running = [
        latest
        for stage in state.get("stageStates", [])
        for action in stage.get("actionStates", [])
        if (latest := action.get("latestExecution")) and latest.get("status") == "InProgress"
    ]
    found = svc.store.jobs.progress([str(a["actionExecutionId"]) for a in running])
    for latest in running:
        details = found.get(str(latest["actionExecutionId"]))
        if details:
            shown = {
                "summary": details.get("summary"),
                "externalExecutionId": details.get("externalExecutionId"),
                "percentComplete": details.get("percentComplete"),
            }
            latest.update({k: v for k, v in shown.items() if v is not None})
    return state


def put_job_failure_result(svc: Service, body: Body) -> Body:
    result = {k: v for k, v in body.items() if k != "jobId"}
    svc.store.jobs.finish(body["jobId"], JobStatus.FAILED, result)
    return {}


def acknowledge_job(svc: Service, body: Body) -> Body:
    return {"status": svc.store.jobs.acknowledge_claim(body["jobId"], body["nonce"]).value}


JOB_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "GetJobDetails": get_job_details,
    "PutJobSuccessResult": put_job_success_result,
    "PutJobFailureResult": put_job_failure_result,
    "AcknowledgeJob": acknowledge_job,
}


# ---------------------------------------------------------------------------- job workers

# Most jobs one poll hands out, whatever maxBatchSize asks.
MAX_BATCH = 100


def _job_worker_type(svc: Service, ident: Body) -> ActionTypeRecord:
    key = type_key(ident["owner"], ident["category"], ident["provider"], ident["version"])
    record = svc.store.action_types.get(key) if ident["owner"] != "AWS" else None
    if record is None or record.deleted:
        what = described(ident["owner"], ident["category"], ident["provider"], ident["version"])
        raise ActionTypeNotFoundError(
            f"{what} does not exist: job workers poll for the jobs of custom action types "
            "(CreateCustomActionType) and ThirdParty types (UpdateActionType)"
        )
    return record


def _query(record: ActionTypeRecord, given: dict[str, str]) -> str:
    """The queryable value PollForJobs filters on, checked as AWS documents queryParam."""
    queryable = record.job_worker_type().queryable
    if queryable is None:
        if given:
            raise ValidationError(
                f"queryParam: action type {record.key} has no queryable property; send no "
                "queryParam"
            )
        return ""
    if set(given) != {queryable}:
        raise ValidationError(
            f"queryParam: action type {record.key} has the queryable property '{queryable}'; "
            f"poll with queryParam {{'{queryable}': <value>}}"
        )
    return given[queryable]


def poll_for_jobs(svc: Service, body: Body) -> Body:
    record = _job_worker_type(svc, body["actionTypeId"])
    query = _query(record, body.get("queryParam") or {})
    claimed = svc.store.jobs.poll(record.key, min(body.get("maxBatchSize") or 1, MAX_BATCH), query)
    account = svc.store.account.account_id
    return {
        "jobs": [
            {"id": j.job_id, "data": j.data, "nonce": j.nonce, "accountId": account}
            for j in claimed
        ]
    }


def poll_for_third_party_jobs(svc: Service, body: Body) -> Body:
    record = _job_worker_type(svc, body["actionTypeId"])
    claimed = svc.store.jobs.poll(record.key, min(body.get("maxBatchSize") or 1, MAX_BATCH))
    # AWS: clientId is "the clientToken portion of the clientId and clientToken pair": the
    # token the other ThirdParty calls present. Each claim gets a new one.
    return {"jobs": [{"clientId": j.client_token, "jobId": j.job_id} for j in claimed]}


def _third_party_job(svc: Service, job_id: str, client_token: str) -> StoredJob:
    job = svc.store.jobs.get(job_id)
    if not job.client_token or not secrets.compare_digest(job.client_token, client_token):
        raise InvalidClientTokenError(
            f"the client token does not match job {job_id}'s current claim (the clientId "
            "PollForThirdPartyJobs returned with it)"
        )
    return job


def acknowledge_third_party_job(svc: Service, body: Body) -> Body:
    status = svc.store.jobs.acknowledge_claim(body["jobId"], body["nonce"], body["clientToken"])
    return {"status": status.value}


def get_third_party_job_details(svc: Service, body: Body) -> Body:
    job = _third_party_job(svc, body["jobId"], body["clientToken"])
    return {"jobDetails": {"id": job.job_id, "data": job.data, "nonce": job.nonce}}


def put_third_party_job_success_result(svc: Service, body: Body) -> Body:
    _third_party_job(svc, body["jobId"], body["clientToken"])
    result = {k: v for k, v in body.items() if k not in ("jobId", "clientToken")}
    _succeed(svc, body["jobId"], result)
    return {}


def put_third_party_job_failure_result(svc: Service, body: Body) -> Body:
    _third_party_job(svc, body["jobId"], body["clientToken"])
    result = {k: v for k, v in body.items() if k not in ("jobId", "clientToken")}
    svc.store.jobs.finish(body["jobId"], JobStatus.FAILED, result)
    return {}


JOB_OPERATIONS.update(
    {
        "PollForJobs": poll_for_jobs,
        "PollForThirdPartyJobs": poll_for_third_party_jobs,
        "AcknowledgeThirdPartyJob": acknowledge_third_party_job,
        "GetThirdPartyJobDetails": get_third_party_job_details,
        "PutThirdPartyJobSuccessResult": put_third_party_job_success_result,
        "PutThirdPartyJobFailureResult": put_third_party_job_failure_result,
    }
)
