"""Invoke/AWS/Lambda/1, self-hosted: a Python handler called as CodePipeline calls a Lambda.

``FunctionName`` names a handler (``module:function``) in the worker's settings, never in
the definition, so a pipeline can run only the functions its operators installed. Each call
runs in a process of its own (its own process group, killed on stop or timeout) with the
event CodePipeline sends a Lambda (``{"CodePipeline.job": {"id", "accountId", "data"}}``)
and a context like Lambda's. The handler answers as on AWS, through boto3's codepipeline
client, which its environment points at Conveyor's API (``AWS_ENDPOINT_URL_CODEPIPELINE``):
PutJobSuccessResult, with a continuation token to be called again for long work, or
PutJobFailureResult. Artifacts stay in the artifact store: inputs are the objects earlier
actions wrote, outputs are keys the handler uploads to itself, with the temporary
``artifactCredentials`` of its job (they read only its inputs and write only its outputs,
through Conveyor's S3 gateway at ``AWS_ENDPOINT_URL_S3``; the store's own keys never reach
a handler).

The same loop serves the LambdaInvoke stage-condition rule (:func:`run_function`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.base import (
    DEFAULT_ACCOUNT_ID,
    ActionFailed,
    ActionTypeId,
    ApiCredentials,
    ArtifactObject,
    Category,
    Job,
    JobChannel,
    JobOutcome,
    Provider,
    ProviderConfig,
    Result,
    S3Access,
)
from providers.job_data import artifact, pipeline_context

RUNTIME = Path(__file__).with_name("lambda_runtime.py")
LOG_NAME = "function-log"
# How often the worker looks at the handler's process while it waits for an answer.
POLL_SECONDS = 0.5
# After an answer, how long the handler's process may take to return before it is killed.
EXIT_GRACE_SECONDS = 10.0
# A function that never answers fails this far ahead of the action's deadline, so its
# message ("never called PutJobSuccessResult…") is the one recorded, not a bare timeout.
MAX_REPORT_MARGIN_SECONDS = 5.0
# Variables of the worker's own environment a handler must not see: Conveyor's settings
# (Redis and S3 credentials) and the worker's own AWS identity.
HIDDEN_PREFIXES = ("CONVEYOR_", "AWS_")
# The access key id handlers sign with when the worker has no handler key: an anonymous API
# accepts it; a signing one refuses it, naming the setting to set.
UNSET_HANDLER_KEY = "set-CONVEYOR_API_HANDLER_ACCESS_KEY_ID"


class LambdaSettings(BaseSettings):
    """Where function names lead (``CONVEYOR_LAMBDA_*``), read by the worker that runs them.

    ``functions``: JSON ``{"name": "module:function"}``; ``functions_file``: a JSON file of
    the same shape (the environment wins for a name in both); ``path``: directories to
    import handlers from, separated like PATH.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_LAMBDA_", extra="ignore")

    functions: dict[str, str] = Field(default_factory=dict)
    functions_file: Path | None = None
    path: str = ""

    def handler_for(self, function_name: str) -> str:
        """The ``module:function`` a FunctionName (a name or a Lambda ARN) runs."""
        name = _bare_name(function_name)
        table = {**self._file_functions(), **self.functions}
        spec = table.get(name)
        if spec is None:
            known = ", ".join(sorted(table)) or "none"
            raise ActionFailed(
                f"function {name!r} is not configured on this worker: map it to a handler "
                f"in CONVEYOR_LAMBDA_FUNCTIONS or CONVEYOR_LAMBDA_FUNCTIONS_FILE as "
                f'{{"{name}": "module:function"}} (configured: {known})'
            )
        module, sep, attr = spec.partition(":")
        if not sep or not module or not attr:
            raise ActionFailed(
                f"function {name!r} maps to {spec!r}, which is not of the form module:function"
            )
        return spec

    def _file_functions(self) -> dict[str, str]:
        if self.functions_file is None:
            return {}
        where = f"CONVEYOR_LAMBDA_FUNCTIONS_FILE ({self.functions_file})"
        try:
            table = json.loads(self.functions_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ActionFailed(f"{where} cannot be read: {exc}") from None
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise ActionFailed(f'{where} must be a JSON object {{"name": "module:function"}}')
        return table


def _bare_name(function_name: str) -> str:
    """``my-fn`` from ``arn:aws:lambda:region:acct:function:my-fn[:alias]``; names as-is."""
    if function_name.startswith("arn:") and ":function:" in function_name:
        return function_name.split(":function:", 1)[1].split(":", 1)[0]
    return function_name


def load_settings() -> LambdaSettings:
    try:
        return LambdaSettings()
    except ValidationError as exc:
        raise ActionFailed(f"invalid CONVEYOR_LAMBDA_* settings: {exc}") from None


class LambdaConfig(ProviderConfig):
    FunctionName: str = Field(min_length=1, max_length=140)
    UserParameters: str | None = None

    @field_validator("FunctionName")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


@dataclass
class Invocation:
    """Everything one function run needs, for an action and a rule alike."""

    function_name: str
    user_parameters: str | None
    inputs: dict[str, ArtifactObject]
    outputs: dict[str, ArtifactObject]
    s3: S3Access
    api_endpoint: str | None
    deadline: float | None
    cancelled: threading.Event
    workdir: Path
    # CodePipeline's pipelineContext (pipelineName, stage, action, pipelineExecutionId...).
    pipeline_context: dict[str, Any]
    action_type: dict[str, str] | None = None
    # The installation's account id (the job event's accountId).
    account_id: str = DEFAULT_ACCOUNT_ID
    # Conveyor's S3 gateway (CONVEYOR_S3_GATEWAY_URL), where ``credentials`` work.
    s3_gateway: str | None = None
    # The jobs' temporary artifact credentials (AWSSessionCredentials); issued through the
    # job channel by run_function when not given.
    credentials: dict[str, str] | None = None
    # The identity the handler's boto3 signs its job results with (the workers' API key).
    api_credentials: ApiCredentials | None = None


@dataclass
class FunctionResult:
    succeeded: bool
    calls: int
    summary: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    external_execution_id: str | None = None
    output_variables: dict[str, str] = field(default_factory=dict)


class LambdaInvoke(Provider):
    action_type = ActionTypeId(
        category=Category.INVOKE, owner="AWS", provider="Lambda", version="1"
    )
    Config = LambdaConfig
    max_inputs = 5
    max_outputs = 5
    uses_artifact_locations = True

    def run(self, job: Job) -> Result:
        config: LambdaConfig = job.configuration
        if job.jobs is None:
            raise ActionFailed("this worker has no job API channel to run Lambda functions with")
        invocation = Invocation(
            function_name=config.FunctionName,
            user_parameters=config.UserParameters,
            inputs=job.input_locations,
            outputs=job.output_locations,
            s3=job.s3,
            api_endpoint=job.api_endpoint,
            api_credentials=job.handler_api_credentials,
            deadline=job.deadline,
            cancelled=job.cancelled,
            workdir=job.workdir,
            pipeline_context=pipeline_context(
                job.pipeline_name,
                job.execution_id,
                job.stage_name,
                job.action_name,
                pipeline_arn=job.pipeline_arn,
                action_execution_id=job.action_execution_id,
            ),
            action_type=self.action_type.model_dump(mode="json"),
            account_id=job.account_id,
            s3_gateway=job.s3_gateway_url,
        )
        log_path = job.workdir / f"{LOG_NAME}.log"
        with log_path.open("a", encoding="utf-8") as log:
            outcome = run_function(invocation, job.jobs, log)
        return Result(
            succeeded=outcome.succeeded,
            summary=outcome.summary,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            external_execution_id=outcome.external_execution_id,
            output_variables=outcome.output_variables,
            attachments={LOG_NAME: log_path},
        )


def run_function(
    inv: Invocation, jobs: JobChannel, log: TextIO, settings: LambdaSettings | None = None
) -> FunctionResult:
    """Call the function until it answers without a continuation token, or fails.

    Each call gets a job of its own (a new id; ``continuationToken`` set from the second on).
    A function that raises fails with the exception; one that never answers fails just
    before the deadline, saying so. Raises ActionFailed for a function not configured.
    """
    settings = settings or load_settings()
    handler = settings.handler_for(inv.function_name)
    if not inv.api_endpoint:
        # Without it the handler's boto3 would send its job results to AWS itself.
        raise ActionFailed("no API endpoint for handlers to report to: set CONVEYOR_API_URL")
    if inv.credentials is None:
        inv.credentials = jobs.credentials(list(inv.inputs.values()), list(inv.outputs.values()))
    give_up = _give_up_at(inv.deadline)
    token: str | None = None
    calls = 0
    while True:
        calls += 1
        data = job_data(inv, token)
        job_id = jobs.create(data)
        outcome, crash = _call(inv, handler, settings, job_id, data, jobs, log, give_up)
        if outcome is None:
            jobs.close(job_id)
            return _unanswered(inv, calls, crash)
        if not outcome.succeeded:
            return FunctionResult(
                succeeded=False,
                calls=calls,
                error_code=outcome.failure_type or "JobFailed",
                error_message=outcome.message or f"function {inv.function_name} failed",
                external_execution_id=outcome.external_execution_id,
            )
        if outcome.continuation_token:
            token = outcome.continuation_token
            progress = (
                f" ({outcome.percent_complete}% complete)" if outcome.percent_complete else ""
            )
            _line(
                log, f"Continuing after call {calls}: {outcome.summary or 'no summary'}{progress}"
            )
            continue
        return FunctionResult(
            succeeded=True,
            calls=calls,
            summary=outcome.summary,
            external_execution_id=outcome.external_execution_id,
            output_variables=outcome.output_variables,
        )


def _unanswered(inv: Invocation, calls: int, crash: dict[str, Any] | None) -> FunctionResult:
    name = inv.function_name
    if crash is not None:
        return FunctionResult(
            succeeded=False,
            calls=calls,
            error_code="FunctionError",
            error_message=(
                f"function {name} raised {crash.get('errorType')}: {crash.get('errorMessage')}"
            ),
        )
    if inv.cancelled.is_set():
        return FunctionResult(
            succeeded=False,
            calls=calls,
            error_code="Stopped",
            error_message=f"function {name} was stopped",
        )
    return FunctionResult(
        succeeded=False,
        calls=calls,
        error_code="TimedOut",
        error_message=(
            f"function {name} never called PutJobSuccessResult or PutJobFailureResult "
            f"for its job before the action's timeout (call {calls})"
        ),
    )


def _give_up_at(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    margin = min(MAX_REPORT_MARGIN_SECONDS, max(0.0, deadline - time.time()) * 0.2)
    return deadline - margin


def job_data(inv: Invocation, continuation_token: str | None) -> dict[str, Any]:
    """CodePipeline's ``JobData`` for one call (what GetJobDetails returns)."""
    configuration = {"FunctionName": inv.function_name}
    if inv.user_parameters is not None:
        configuration["UserParameters"] = inv.user_parameters
    data: dict[str, Any] = {
        "actionConfiguration": {"configuration": configuration},
        "pipelineContext": inv.pipeline_context,
        "inputArtifacts": [artifact(n, o) for n, o in inv.inputs.items()],
        "outputArtifacts": [artifact(n, o) for n, o in inv.outputs.items()],
        # Temporary, scoped to this action's artifacts (never the store's own keys).
        "artifactCredentials": dict(inv.credentials or {}),
    }
    if inv.action_type is not None:
        data["actionTypeId"] = inv.action_type
    if continuation_token is not None:
        data["continuationToken"] = continuation_token
    return data


# The members of JobData a Lambda's event carries (AWS's example event); GetJobDetails has
# them all.
_EVENT_FIELDS = (
    "actionConfiguration",
    "inputArtifacts",
    "outputArtifacts",
    "artifactCredentials",
    "continuationToken",
    "encryptionKey",
)


def event(
    job_id: str, data: dict[str, Any], account_id: str = DEFAULT_ACCOUNT_ID
) -> dict[str, Any]:
    """The event a CodePipeline Lambda receives for job ``job_id``."""
    shown = {k: data[k] for k in _EVENT_FIELDS if k in data}
    for key in ("inputArtifacts", "outputArtifacts"):
        # AWS sends "revision": null when the artifact has none.
        shown[key] = [{"revision": None, **a} for a in shown.get(key, [])]
    return {"CodePipeline.job": {"id": job_id, "accountId": account_id, "data": shown}}


def handler_environment(inv: Invocation, settings: LambdaSettings) -> dict[str, str]:
    """The environment of the handler's process: the worker's, without its settings and
    identity, plus what a Lambda's boto3 needs to reach Conveyor and the artifact store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(HIDDEN_PREFIXES)}
    # The default credentials are for the codepipeline endpoint only (job results): the
    # handlers' API key, job-worker only. Artifacts are reached with the event's
    # artifactCredentials (scoped to the job, valid at the S3 gateway AWS_ENDPOINT_URL_S3
    # names), as on AWS. Unset: a key id that says so (an anonymous API accepts any; a
    # signing one refuses it with UnrecognizedClientException naming the setting).
    api = inv.api_credentials or ApiCredentials(UNSET_HANDLER_KEY, "unset")
    env.update(
        {
            "AWS_ACCESS_KEY_ID": api.access_key_id,
            "AWS_SECRET_ACCESS_KEY": api.secret_access_key,
            "AWS_REGION": api_region(inv),
            "AWS_DEFAULT_REGION": api_region(inv),
            "AWS_ENDPOINT_URL_S3": gateway_url(inv.s3_gateway, inv.api_endpoint),
            "AWS_LAMBDA_FUNCTION_NAME": _bare_name(inv.function_name),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if inv.api_endpoint:
        env["AWS_ENDPOINT_URL_CODEPIPELINE"] = inv.api_endpoint
    if settings.path:
        env["PYTHONPATH"] = settings.path
    else:
        env.pop("PYTHONPATH", None)
    return env


def api_region(inv: Invocation) -> str:
    """The region handlers sign with: the API's (its pipeline ARNs'), which it requires in
    the credential scope; the S3 gateway does not check the region."""
    arn = str(inv.pipeline_context.get("pipelineArn") or "").split(":")
    return arn[3] if len(arn) > 3 and arn[3] else inv.s3.region


def gateway_url(configured: str | None, api_endpoint: str | None) -> str:
    """Where the jobs' artifact credentials work: the S3 gateway, by default under the API."""
    return configured or f"{(api_endpoint or '').rstrip('/')}/s3"


def _call(
    inv: Invocation,
    handler: str,
    settings: LambdaSettings,
    job_id: str,
    data: dict[str, Any],
    jobs: JobChannel,
    log: TextIO,
    give_up: float | None,
) -> tuple[JobOutcome | None, dict[str, Any] | None]:
    """One call: (the job's outcome or None, the handler's error if it raised)."""
    request_id = str(uuid.uuid4())
    report = inv.workdir / f".lambda-report-{request_id}.json"
    invocation = {
        "handler": handler,
        "event": event(job_id, data, inv.account_id),
        "function_name": _bare_name(inv.function_name),
        "request_id": request_id,
        "deadline": give_up,
        "region": api_region(inv),
        "account_id": inv.account_id,
    }
    _line(log, f"START RequestId: {request_id} Version: $LATEST")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(RUNTIME), str(report)],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=inv.workdir,
        env=handler_environment(inv, settings),
        start_new_session=True,
    )
    crash: dict[str, Any] | None = None
    outcome: JobOutcome | None = None
    exited = False
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(invocation).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the process died at start; its exit is read below
        while True:
            until = time.time() + POLL_SECONDS
            if give_up is not None:
                until = min(until, give_up)
            outcome = jobs.wait(job_id, until, inv.cancelled)
            if outcome is not None or inv.cancelled.is_set():
                break
            if give_up is not None and time.time() >= give_up:
                break
            if not exited and proc.poll() is not None:
                exited = True
                crash = _crash(report, proc.returncode)
                if crash is not None:
                    # Answered, then raised: the answer was recorded before the raise.
                    outcome = jobs.wait(job_id, time.time(), inv.cancelled)
                    break
                # Returned without answering: keep waiting, as CodePipeline does; whatever
                # the function handed its job id to may still answer before the timeout.
        if outcome is not None and proc.poll() is None:
            grace = EXIT_GRACE_SECONDS
            if give_up is not None:
                grace = max(0.0, min(grace, give_up - time.time()))
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _line(log, f"The function did not return within {grace:.0f}s of answering")
    finally:
        _kill_group(proc)
        report.unlink(missing_ok=True)
    elapsed = (time.monotonic() - started) * 1000
    _line(log, f"END RequestId: {request_id}")
    _line(log, f"REPORT RequestId: {request_id} Duration: {elapsed:.2f} ms")
    return outcome, crash


def _crash(report: Path, returncode: int) -> dict[str, Any] | None:
    """The handler's error, if its process says it raised (or died without saying)."""
    try:
        text = report.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if text:
        try:
            found: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            found = {}
        if "errorType" in found:
            return found
        if found.get("returned") and returncode == 0:
            return None
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
    return {"errorType": "Runtime.ExitError", "errorMessage": f"the function's process {how}"}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the handler and everything it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _line(log: TextIO, text: str) -> None:
    log.write(f"{text}\n")
    log.flush()
