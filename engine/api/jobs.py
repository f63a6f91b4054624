"""CodePipeline's job operations, for Lambda-style handlers reporting on the job they were
invoked with: GetJobDetails, PutJobSuccessResult, PutJobFailureResult, AcknowledgeJob.

Requests are already checked against botocore's model (types, enums, lengths, the job id
pattern); what is left here are the rules the model cannot say, with the errors CodePipeline
gives for them. The job store accepts one result per job, atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import OutputVariablesSizeExceededError, ValidationError
from engine.service import Service
from engine.store.jobs import JobStatus
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
    svc.store.jobs.finish(body["jobId"], JobStatus.SUCCEEDED, result)
    return {}


def put_job_failure_result(svc: Service, body: Body) -> Body:
    result = {k: v for k, v in body.items() if k != "jobId"}
    svc.store.jobs.finish(body["jobId"], JobStatus.FAILED, result)
    return {}


def acknowledge_job(svc: Service, body: Body) -> Body:
    return {"status": svc.store.jobs.acknowledge(body["jobId"], body["nonce"]).value}


JOB_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "GetJobDetails": get_job_details,
    "PutJobSuccessResult": put_job_success_result,
    "PutJobFailureResult": put_job_failure_result,
    "AcknowledgeJob": acknowledge_job,
}
