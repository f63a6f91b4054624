"""Invoke/AWS/CodePipeline/1: start another pipeline's execution and finish with it.

The target is started through Conveyor's own CodePipeline-compatible API (``job.api_endpoint``)
with boto3's codepipeline client, exactly as a client outside would start it, so the
target's execution is checked, recorded and observable like any other. The action then
follows that execution to its end and succeeds only if it Succeeded.

The start carries a ``clientRequestToken`` made from this attempt's identity: when the
worker runs the provider again after a transient failure, the API hands back the execution
the first run started instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers.base import (
    ActionFailed,
    ActionTypeId,
    ApiCredentials,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)

RevisionType = Literal["COMMIT_ID", "IMAGE_DIGEST", "S3_OBJECT_VERSION_ID", "S3_OBJECT_KEY"]
# get_pipeline_execution statuses after which nothing more happens to an execution.
TERMINAL = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})
_RETRYABLE_CODES = frozenset({"ThrottlingException", "ServiceUnavailable", "InternalError"})


class InvokeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_PIPELINE_INVOKE_", extra="ignore")

    # How often the target execution's status is read.
    poll_seconds: float = 2.0


class _Variable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    value: str


class _SourceRevision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actionName: str
    revisionType: RevisionType
    revisionValue: str


def _json_list(text: str, item: type[BaseModel], example: str) -> list[dict[str, Any]]:
    """A JSON list of ``item`` objects, or a ValueError saying which entry is wrong and how."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc}); expected e.g. {example}") from None
    if not isinstance(data, list):
        raise ValueError(f"must be a JSON list, e.g. {example}")
    out = []
    for i, entry in enumerate(data):
        try:
            out.append(item.model_validate(entry).model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            at = f"[{i}].{where}" if where else f"[{i}]"
            raise ValueError(f"{at}: {first['msg']}; expected e.g. {example}") from None
    return out


VARIABLES_EXAMPLE = '[{"name":"VAR1","value":"VALUE1"}]'
REVISIONS_EXAMPLE = (
    '[{"actionName":"Source","revisionType":"S3_OBJECT_VERSION_ID","revisionValue":"3Lx…"}]'
)


class PipelineInvokeConfig(ProviderConfig):
    PipelineName: str
    SourceRevisions: str | None = None
    Variables: str | None = None

    @field_validator("PipelineName")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("names the pipeline to start; it must not be empty")
        return value

    @field_validator("Variables")
    @classmethod
    def _variables(cls, value: str | None) -> str | None:
        if value is not None:
            names = [v["name"] for v in _json_list(value, _Variable, VARIABLES_EXAMPLE)]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"variable {', '.join(repeated)} is given more than once")
        return value

    @field_validator("SourceRevisions")
    @classmethod
    def _revisions(cls, value: str | None) -> str | None:
        if value is not None:
            _json_list(value, _SourceRevision, REVISIONS_EXAMPLE)
        return value

    def variables(self) -> list[dict[str, Any]]:
        return _json_list(self.Variables or "[]", _Variable, VARIABLES_EXAMPLE)

    def source_revisions(self) -> list[dict[str, Any]]:
        return _json_list(self.SourceRevisions or "[]", _SourceRevision, REVISIONS_EXAMPLE)


class PipelineInvoke(Provider):
    action_type = ActionTypeId(
        category=Category.INVOKE, owner="AWS", provider="CodePipeline", version="1"
    )
    Config = PipelineInvokeConfig

    def run(self, job: Job) -> Result:
        config: PipelineInvokeConfig = job.configuration
        target = config.PipelineName
        if target == job.pipeline_name:
            raise ActionFailed(
                f"PipelineName '{target}' is this action's own pipeline; an execution that "
                "starts its own pipeline would start executions without end"
            )
        if not job.api_endpoint:
            raise ActionFailed(
                "Invoke/CodePipeline needs Conveyor's API: set CONVEYOR_API_URL on the workers"
            )
        # The API accepts only its own region in the credential scope: its ARNs' region.
        arn = (job.pipeline_arn or "").split(":")
        region = arn[3] if len(arn) > 3 and arn[3] else job.s3.region
        client = _client(job.api_endpoint, region, job.api_credentials)
        settings = InvokeSettings()
        execution_id = self._start(client, job, config)
        job.log.write(f"started pipeline '{target}': execution {execution_id}\n")
        job.log.flush()
        try:
            execution = self._follow(client, job, target, execution_id, settings.poll_seconds)
        except _Stopped as stop:
            self._stop(client, job, target, execution_id)
            raise ActionFailed(
                f"pipeline '{target}' execution {execution_id} was stopped: {stop.why}"
            ) from None
        status = str(execution.get("status"))
        summary = f"pipeline '{target}' execution {execution_id} {status}"
        if status == "Succeeded":
            return Result(summary=summary, external_execution_id=execution_id)
        detail = execution.get("statusSummary")
        message = f"{summary}: {detail}" if detail else summary
        return Result(
            succeeded=False,
            summary=message,
            error_code="JobFailed",
            error_message=message,
            external_execution_id=execution_id,
        )

    def _start(self, client: Any, job: Job, config: PipelineInvokeConfig) -> str:
        target = config.PipelineName
        request: dict[str, Any] = {
            "name": target,
            "clientRequestToken": _request_token(job),
        }
        if variables := config.variables():
            request["variables"] = variables
        if revisions := config.source_revisions():
            request["sourceRevisions"] = revisions
        try:
            response = client.start_pipeline_execution(**request)
        except (ClientError, BotoCoreError) as exc:
            raise _failure(exc, f"starting pipeline '{target}'", job.api_endpoint) from None
        return str(response["pipelineExecutionId"])

    def _follow(
        self, client: Any, job: Job, target: str, execution_id: str, poll: float
    ) -> dict[str, Any]:
        last = None
        while True:
            try:
                execution: dict[str, Any] = client.get_pipeline_execution(
                    pipelineName=target, pipelineExecutionId=execution_id
                )["pipelineExecution"]
            except (ClientError, BotoCoreError) as exc:
                doing = f"reading pipeline '{target}' execution {execution_id}"
                raise _failure(exc, doing, job.api_endpoint) from None
            status = execution.get("status")
            if status != last:
                job.log.write(f"pipeline '{target}' execution {execution_id}: {status}\n")
                job.log.flush()
                last = status
            if status in TERMINAL:
                return execution
            wait = poll
            if job.deadline is not None:
                left = job.deadline - time.time()
                if left <= 0:
                    raise _Stopped("the invoking action timed out")
                wait = min(wait, left)
            if job.cancelled.wait(wait):
                raise _Stopped("the invoking action was stopped")

    @staticmethod
    def _stop(client: Any, job: Job, target: str, execution_id: str) -> None:
        """Stop and wait (not abandon): the target's running actions finish cleanly."""
        reason = f"stopped with {job.pipeline_name}/{job.stage_name}/{job.action_name}"
        try:
            client.stop_pipeline_execution(
                pipelineName=target,
                pipelineExecutionId=execution_id,
                abandon=False,
                reason=reason,
            )
            job.log.write(f"asked pipeline '{target}' execution {execution_id} to stop\n")
        except (ClientError, BotoCoreError) as exc:
            # Already finished or stopping: nothing left to stop.
            job.log.write(f"could not stop pipeline '{target}' execution {execution_id}: {exc}\n")
        job.log.flush()


class _Stopped(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _client(endpoint: str, region: str, credentials: ApiCredentials | None) -> Any:
    # The workers' own API key, never the default credential chain: an AWS profile or keys
    # on the host have no business in requests that never go to AWS. Without a key (an API
    # in anonymous mode) the requests go unsigned.
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30
    )
    if credentials is None:
        return boto3.client(
            "codepipeline",
            endpoint_url=endpoint,
            region_name=region,
            config=config.merge(Config(signature_version=UNSIGNED)),
        )
    return boto3.client(
        "codepipeline",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        config=config,
    )


def _request_token(job: Job) -> str:
    """The same for every run of one attempt, different for each attempt and action."""
    identity = f"{job.execution_id}/{job.stage_name}/{job.action_name}/{job.attempt}"
    return hashlib.sha256(identity.encode()).hexdigest()


def _failure(exc: Exception, doing: str, endpoint: str | None) -> ActionFailed:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", "") or exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PipelineNotFoundException":
            return ActionFailed(f"{doing}: no such pipeline ({message}); check PipelineName")
        retryable = code in _RETRYABLE_CODES or status in (429, 500, 502, 503, 504)
        return ActionFailed(f"{doing}: {code}: {message}", retryable=retryable)
    if isinstance(exc, BotoConnectionError):
        return ActionFailed(
            f"{doing}: cannot reach Conveyor's API at {endpoint}: {exc}", retryable=True
        )
    return ActionFailed(f"{doing}: {exc}")
