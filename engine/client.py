"""A small typed Python client for Conveyor's API, built on boto3's ``codepipeline`` client.

Everything goes through boto3 so this client exercises exactly what users' own boto3 code
and the AWS CLI do; the convenience methods only add what CodePipeline lacks (loading a
definition from JSON/YAML/CloudFormation files, looking up an approval token, waiting).
Errors are botocore ``ClientError`` with the CodePipeline error code; :func:`describe_error`
turns one into a line a person can read.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore import UNSIGNED
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.httpsession import URLLib3Session

from engine.definition import (
    Template,
    check_shape,
    normalize,
    parse_document,
    read_text,
    split_template,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:8484"
ENDPOINT_ENV = "CONVEYOR_API_URL"
DEFAULT_REGION = "us-east-1"
NO_CREDENTIALS_HINT = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add them to "
    "~/.aws/credentials, or name a profile (--profile / AWS_PROFILE); "
    "`conveyor keys create` makes a key"
)
TERMINAL = frozenset({"Succeeded", "Failed", "Stopped", "Superseded", "Cancelled"})

Definition = dict[str, Any] | str | Path


@dataclass(frozen=True)
class PendingApproval:
    """A manual approval waiting for an answer: everything PutApprovalResult needs."""

    pipeline: str
    stage: str
    action: str
    token: str
    execution_id: str | None
    action_execution_id: str | None
    since: float | None
    custom_data: str | None = None
    external_entity_link: str | None = None


def default_endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT


# botocore insists on a roleArn; Conveyor runs actions as its workers, so any value will do.
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/conveyor"


def load_template(definition: Definition) -> Template:
    """A dict, or a file parsed as JSON, YAML or a CloudFormation template, as the
    declaration CreatePipeline takes plus what a template says beside it
    (DisableInboundStageTransitions, Tags, RestartExecutionOnUpdate).

    A missing ``roleArn`` is filled in so definitions written for Conveyor need none. The
    declaration's shape is checked here (:func:`check_shape`), so a key botocore's model
    lacks is refused with its path in Conveyor's words before boto3 sees it.
    """
    if isinstance(definition, dict):
        raw = normalize(definition)
    else:
        path = Path(definition)
        raw = parse_document(read_text(path), source=str(path))
    template = split_template(raw)
    decl = template.declaration
    if not decl.get("roleArn"):
        decl = {**decl, "roleArn": PLACEHOLDER_ROLE_ARN}
    check_shape(decl)
    return replace(template, declaration=decl)


def load_definition(definition: Definition) -> dict[str, Any]:
    """The declaration alone (see :func:`load_template` for the rest of a template)."""
    return load_template(definition).declaration


def error_code(exc: BaseException) -> str | None:
    """The CodePipeline error name of a ClientError (``PipelineNotFoundException``...)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def describe_error(exc: BaseException) -> str:
    """``<AWS code>: <message>`` for API errors; a plain line for transport errors."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message') or str(exc)}"
    if isinstance(exc, NoCredentialsError):
        return f"NoCredentialsError: {NO_CREDENTIALS_HINT}"
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def codepipeline_client(
    endpoint_url: str,
    *,
    profile: str | None = None,
    region_name: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    config: Config | None = None,
) -> Any:
    """boto3's codepipeline client for Conveyor's API, signing as boto3 and the AWS CLI do:
    explicit keys if given, else the default credential chain (environment, shared
    credentials and config files, ``profile`` / ``AWS_PROFILE``). With no credentials at
    all it sends unsigned requests, which only an API in anonymous mode accepts (a signing
    one answers MissingAuthenticationTokenException, saying how to sign)."""
    session = boto3.Session(
        profile_name=profile,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
    )
    config = config or Config()
    if session.get_credentials() is None:
        config = config.merge(Config(signature_version=UNSIGNED))
    return session.client(
        "codepipeline",
        endpoint_url=endpoint_url,
        region_name=region_name or session.region_name or DEFAULT_REGION,
        config=config,
    )


class ConveyorClient:
    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        region_name: str | None = None,
        timeout: float = 30.0,
        client: Any = None,
        profile: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        """Credentials: ``access_key_id``/``secret_access_key`` if given, else boto3's
        default chain (``profile`` names a profile of the shared files)."""
        self.endpoint_url = endpoint_url or default_endpoint()
        self.cp: Any = client or codepipeline_client(
            self.endpoint_url,
            profile=profile,
            region_name=region_name,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            config=Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    # ------------------------------------------------------------------ pipelines

    def create_pipeline(self, definition: Definition) -> dict[str, Any]:
        """CreatePipeline, then what the template says beside the declaration: its Tags go
        with the create, and each of its DisableInboundStageTransitions becomes a
        DisableStageTransition (Inbound, with the template's Reason) right after it, as
        CloudFormation does. Everything is checked before the pipeline is created."""
        template = load_template(definition)
        extra: dict[str, Any] = {"tags": list(template.tags)} if template.tags else {}
        out: dict[str, Any] = self.cp.create_pipeline(pipeline=template.declaration, **extra)
        self._disable_inbound(out["pipeline"]["name"], template)
        return dict(out["pipeline"])

    def update_pipeline(self, definition: Definition) -> dict[str, Any]:
        """UpdatePipeline; a template's transitions are disabled as on create, and
        RestartExecutionOnUpdate starts an execution of the new version. Tags are not
        changed by it (as on AWS: they are TagResource's), so they are left out."""
        template = load_template(definition)
        out: dict[str, Any] = self.cp.update_pipeline(pipeline=template.declaration)
        name = out["pipeline"]["name"]
        self._disable_inbound(name, template)
        if template.restart_on_update:
            self.cp.start_pipeline_execution(name=name)
        return dict(out["pipeline"])

    def _disable_inbound(self, name: str, template: Template) -> None:
        for stage, reason in template.disabled_transitions:
            self.disable_transition(name, stage, reason)

    def get_pipeline(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The GetPipeline response: ``{"pipeline": ..., "metadata": ...}``."""
        kwargs: dict[str, Any] = {"name": name}
        if version is not None:
            kwargs["version"] = version
        return self._strip(self.cp.get_pipeline(**kwargs))

    def list_pipelines(self) -> list[dict[str, Any]]:
        return self._all("list_pipelines", "pipelines")

    def delete_pipeline(self, name: str) -> None:
        self.cp.delete_pipeline(name=name)

    # ------------------------------------------------------------------ executions

    def start_execution(
        self,
        name: str,
        variables: dict[str, str] | None = None,
        *,
        client_request_token: str | None = None,
    ) -> str:
        """Start an execution; its id. Repeating a ``client_request_token`` returns the id of
        the execution that token started instead of starting another."""
        pairs = [{"name": k, "value": v} for k, v in (variables or {}).items()]
        # botocore rejects an empty list: send variables only when there are some.
        kwargs: dict[str, Any] = {"variables": pairs} if pairs else {}
        if client_request_token:
            kwargs["clientRequestToken"] = client_request_token
        out = self.cp.start_pipeline_execution(name=name, **kwargs)
        return str(out["pipelineExecutionId"])

    def get_execution(self, name: str, execution_id: str) -> dict[str, Any]:
        out = self.cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=execution_id)
        return dict(out["pipelineExecution"])

    def list_executions(self, name: str, max_results: int | None = None) -> list[dict[str, Any]]:
        if max_results is not None:
            out = self.cp.list_pipeline_executions(pipelineName=name, maxResults=max_results)
            return list(out["pipelineExecutionSummaries"])
        return self._all(
            "list_pipeline_executions", "pipelineExecutionSummaries", pipelineName=name
        )

    def created_execution(self, name: str) -> str | None:
        """The id of the execution CreatePipeline started, if the server started one (AWS
        does; Conveyor unless CONVEYOR_START_ON_CREATE is off)."""
        for summary in self.list_executions(name):
            if (summary.get("trigger") or {}).get("triggerType") == "CreatePipeline":
                return str(summary["pipelineExecutionId"])
        return None

    def stop_execution(
        self, name: str, execution_id: str, *, abandon: bool = False, reason: str | None = None
    ) -> str:
        kwargs: dict[str, Any] = {"abandon": abandon}
        if reason:
            kwargs["reason"] = reason
        out = self.cp.stop_pipeline_execution(
            pipelineName=name, pipelineExecutionId=execution_id, **kwargs
        )
        return str(out["pipelineExecutionId"])

    def pipeline_state(self, name: str) -> dict[str, Any]:
        return self._strip(self.cp.get_pipeline_state(name=name))

    def list_action_executions(
        self, name: str, execution_id: str | None = None
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"pipelineName": name}
        if execution_id:
            kwargs["filter"] = {"pipelineExecutionId": execution_id}
        return self._all("list_action_executions", "actionExecutionDetails", **kwargs)

    def retry_stage(
        self, name: str, stage: str, execution_id: str, mode: str = "FAILED_ACTIONS"
    ) -> str:
        """Retry a failed stage of ``execution_id`` (``FAILED_ACTIONS`` or ``ALL_ACTIONS``);
        the id of the execution resumed (the same one)."""
        out = self.cp.retry_stage_execution(
            pipelineName=name, stageName=stage, pipelineExecutionId=execution_id, retryMode=mode
        )
        return str(out["pipelineExecutionId"])

    def rollback_stage(self, name: str, stage: str, target_execution_id: str) -> str:
        """Redeploy ``stage`` as ``target_execution_id`` ran it; the rollback execution's id."""
        out = self.cp.rollback_stage(
            pipelineName=name, stageName=stage, targetPipelineExecutionId=target_execution_id
        )
        return str(out["pipelineExecutionId"])

    def disable_transition(
        self, name: str, stage: str, reason: str, transition_type: str = "Inbound"
    ) -> None:
        """Hold executions at ``stage``'s inbound (or outbound) transition."""
        self.cp.disable_stage_transition(
            pipelineName=name, stageName=stage, transitionType=transition_type, reason=reason
        )

    def enable_transition(self, name: str, stage: str, transition_type: str = "Inbound") -> None:
        """Let executions through again; one waiting there moves on."""
        self.cp.enable_stage_transition(
            pipelineName=name, stageName=stage, transitionType=transition_type
        )

    def override_condition(
        self, name: str, stage: str, execution_id: str, condition_type: str
    ) -> None:
        """Stop waiting for ``stage``'s ``BEFORE_ENTRY`` or ``ON_SUCCESS`` condition."""
        self.cp.override_stage_condition(
            pipelineName=name,
            stageName=stage,
            pipelineExecutionId=execution_id,
            conditionType=condition_type,
        )

    def list_rule_types(self) -> list[dict[str, Any]]:
        return list(self.cp.list_rule_types()["ruleTypes"])

    def list_rule_executions(
        self, name: str, execution_id: str | None = None
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"pipelineName": name}
        if execution_id:
            kwargs["filter"] = {"pipelineExecutionId": execution_id}
        return self._all("list_rule_executions", "ruleExecutionDetails", **kwargs)

    def waiting_at(self, name: str, execution_id: str) -> tuple[str, str] | None:
        """Where ``execution_id`` waits to enter a stage, and why; see :func:`waiting_in`."""
        return waiting_in(self.pipeline_state(name), execution_id)

    def wait(
        self,
        name: str,
        execution_id: str,
        timeout: float = 600.0,
        poll: float = 1.0,
        *,
        until: Callable[[dict[str, Any]], bool] | None = None,
    ) -> str:
        """Poll until the execution is terminal (or ``until(execution)`` holds); its status.

        Raises TimeoutError if neither happens within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            execution = self.get_execution(name, execution_id)
            status = str(execution["status"])
            if status in TERMINAL or (until is not None and until(execution)):
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"execution {execution_id} of {name} still {status} after {timeout:g}s"
                )
            time.sleep(poll)

    # ------------------------------------------------------------------ approvals

    def pending_approvals(self, name: str | None = None) -> list[PendingApproval]:
        """Approvals waiting for an answer, in ``name`` or in every pipeline."""
        names = [name] if name else [p["name"] for p in self.list_pipelines()]
        out: list[PendingApproval] = []
        for n in names:
            state = self.pipeline_state(n)
            decl = self.get_pipeline(n)["pipeline"]
            for stage in state.get("stageStates", []):
                for action in stage.get("actionStates", []):
                    latest = action.get("latestExecution") or {}
                    if latest.get("status") != "InProgress" or not latest.get("token"):
                        continue
                    config = _action_config(decl, stage["stageName"], action["actionName"])
                    out.append(
                        PendingApproval(
                            pipeline=n,
                            stage=stage["stageName"],
                            action=action["actionName"],
                            token=latest["token"],
                            execution_id=(stage.get("latestExecution") or {}).get(
                                "pipelineExecutionId"
                            ),
                            action_execution_id=latest.get("actionExecutionId"),
                            since=_epoch(latest.get("lastStatusChange")),
                            custom_data=config.get("CustomData"),
                            external_entity_link=config.get("ExternalEntityLink"),
                        )
                    )
        return out

    def approve(
        self, name: str, stage: str, action: str, *, token: str | None = None, summary: str = ""
    ) -> float:
        return self._answer(name, stage, action, "Approved", token, summary)

    def reject(
        self, name: str, stage: str, action: str, *, token: str | None = None, summary: str = ""
    ) -> float:
        return self._answer(name, stage, action, "Rejected", token, summary)

    def find_token(self, name: str, stage: str, action: str) -> str:
        """The token of the approval waiting at ``stage.action``; ValueError if none waits."""
        for p in self.pending_approvals(name):
            if p.stage == stage and p.action == action:
                return p.token
        raise ValueError(f"no approval is waiting at {name}/{stage}/{action}")

    def _answer(
        self, name: str, stage: str, action: str, status: str, token: str | None, summary: str
    ) -> float:
        out = self.cp.put_approval_result(
            pipelineName=name,
            stageName=stage,
            actionName=action,
            result={"summary": summary, "status": status},
            token=token or self.find_token(name, stage, action),
        )
        return _epoch(out.get("approvedAt")) or time.time()

    # ------------------------------------------------------------------ audit

    def audit(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 100,
        pipeline: str | None = None,
        principal: str | None = None,
        operation: str | None = None,
    ) -> dict[str, Any]:
        """One page of the audit log (``GET /audit``, admins only): ``records`` (each with
        its stream ``id``), ``cursor`` (pass it back as ``after``/``before``) and ``more``.
        Oldest first after ``after``; otherwise newest first."""
        query = {"after": after, "before": before, "limit": str(limit), "pipeline": pipeline}
        query |= {"principal": principal, "operation": operation}
        return self._rest_get("/audit", {k: v for k, v in query.items() if v is not None})

    def _rest_get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        """GET one of Conveyor's REST extras, signed by the boto3 client's own signer (its
        credentials, region and SigV4), sent by botocore's HTTP session."""
        url = self.endpoint_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        # A fresh invocation id per call, as botocore sends with every operation (unsigned:
        # the API does not check reads for replays, engine.auth.replay).
        request = AWSRequest(method="GET", url=url)
        self.cp._request_signer.sign("GetAuditLog", request)
        request.headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        reply = URLLib3Session().send(request.prepare())
        try:
            body = json.loads(reply.content or b"{}")
        except ValueError:
            body = {}
        if reply.status_code >= 400 or not isinstance(body, dict):
            error = body if isinstance(body, dict) else {}
            raise ClientError(
                {
                    "Error": {
                        "Code": str(error.get("__type") or reply.status_code),
                        "Message": str(error.get("message") or reply.content[:200]),
                    }
                },
                "GetAuditLog",
            )
        return body

    # ------------------------------------------------------------------ helpers

    def _all(self, method: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a list operation."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            out = getattr(self.cp, method)(**kwargs, **({"nextToken": token} if token else {}))
            items.extend(out.get(key, []))
            token = out.get("nextToken")
            if not token:
                return items

    @staticmethod
    def _strip(out: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in out.items() if k != "ResponseMetadata"}


def waiting_in(state: dict[str, Any], execution_id: str) -> tuple[str, str] | None:
    """Where ``execution_id`` waits to enter a stage and why, read from a GetPipelineState
    response (its ``inboundExecutions``): ``(stage, "transition disabled: <reason>")``,
    ``(stage, "queued behind <n> execution(s)")`` or ``(stage, "stage locked by <id>")``;
    None if it waits nowhere."""
    for stage in state.get("stageStates", []):
        inbound = stage.get("inboundExecutions") or [stage.get("inboundExecution") or {}]
        ids = [e.get("pipelineExecutionId") for e in inbound]
        if execution_id not in ids:
            continue
        transition = stage.get("inboundTransitionState") or {}
        ahead = ids.index(execution_id)
        if not transition.get("enabled", True):
            why = f"transition disabled: {transition.get('disabledReason') or 'no reason given'}"
        elif ahead:
            why = f"queued behind {ahead} execution{'s' if ahead > 1 else ''}"
        else:
            holder = (stage.get("latestExecution") or {}).get("pipelineExecutionId")
            why = f"stage locked by {holder}" if holder else "stage locked"
        return str(stage["stageName"]), why
    return None


def _action_config(decl: dict[str, Any], stage: str, action: str) -> dict[str, str]:
    for st in decl.get("stages", []):
        if st.get("name") == stage:
            for a in st.get("actions", []):
                if a.get("name") == action:
                    return dict(a.get("configuration") or {})
    return {}


def _epoch(value: Any) -> float | None:
    """boto3 turns timestamps into datetimes; callers here want epoch seconds."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
