"""Response shapes carry every member botocore's model declares for them.

One rich scenario (tags, variables, a waiting approval, a disabled transition, a failed
rule, a stopped execution, a rollback, a webhook, a deploy target) is read back through
every served read operation, and each member (``Shape.member``) the operation's output shape
can reach must appear in some answer. A member Conveyor never returns must be listed in
:data:`NEVER_RETURNED` with the reason.
"""

from __future__ import annotations

from typing import Any

from engine.api.validation import service_model
from engine.execution import ArtifactLocation
from tests.e2e.api_support import BUCKET, definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api_stages import (
    ENV_IS_PROD,
    build_out,
    conforming,
    finish,
    gated,
    run_to_success,
    source_out,
    through_source,
)

ENV_IS_DEV = {
    **ENV_IS_PROD,
    "name": "EnvIsDev",
    "configuration": {"Variable": "#{variables.Env}", "Value": "dev", "Operator": "EQ"},
}

READ_OPERATIONS = (
    "GetPipeline",
    "ListPipelines",
    "GetPipelineState",
    "GetPipelineExecution",
    "ListPipelineExecutions",
    "ListActionExecutions",
    "ListRuleExecutions",
    "ListRuleTypes",
    "ListTagsForResource",
    "ListWebhooks",
)

# GetPipeline's declaration is the definition as created, echoed back: its members are
# there when the definition has them (the declaration round-trip tests cover that), so the
# walk does not go into it.
ECHOED = frozenset({"PipelineDeclaration"})

# Members the model declares on these outputs that Conveyor never returns, and why.
_PRINCIPAL = (
    "AWS names who changed a rule's state; Conveyor's rules change only by the engine's "
    "own evaluation (an override is recorded on the condition, not the rule)"
)
_APPROVER = (
    "tests/e2e/test_approvers_audit.py::"
    "test_the_approval_record_and_its_event_carry_the_approvers_arn"
)
_NO_EXTERNAL_RULE_RUN = (
    "rules are evaluated by the engine or a Conveyor worker: there is no external "
    "execution to identify or link to"
)
_NO_RULE_REVISIONS = "rules take no source revisions, so there is no revision to describe"
NEVER_RETURNED: dict[str, str] = {
    "RuleExecution.lastUpdatedBy": _PRINCIPAL,
    "RuleExecutionDetail.updatedBy": _PRINCIPAL,
    "ActionExecution.logStreamARN": (
        "a CloudWatch Logs stream on AWS; Conveyor keeps an action's log in the artifact "
        "bucket and links it as externalExecutionUrl"
    ),
    "ActionExecutionResult.logStreamARN": "as ActionExecution.logStreamARN",
    "ActionState.entityUrl": (
        "a link to the AWS console page of the action's resource; Conveyor has no such page"
    ),
    "ArtifactRevision.revisionChangeIdentifier": (
        "a second identifier of a revision (a commit date, an S3 ETag): sources record "
        "only the revision id"
    ),
    "PipelineMetadata.pollingDisabledAt": (
        "set on AWS when it switches a polling source off; Conveyor never does"
    ),
    "RuleExecution.errorDetails": (
        "a failed rule says why in its summary (externalExecutionSummary); rules fail with "
        "no error code"
    ),
    "RuleExecutionResult.errorDetails": "as RuleExecution.errorDetails",
    "RuleExecution.externalExecutionId": _NO_EXTERNAL_RULE_RUN,
    "RuleExecution.externalExecutionUrl": _NO_EXTERNAL_RULE_RUN,
    "RuleExecutionResult.externalExecutionId": _NO_EXTERNAL_RULE_RUN,
    "RuleExecutionResult.externalExecutionUrl": _NO_EXTERNAL_RULE_RUN,
    "RuleExecution.token": "no rule waits for an answer, so none has a token",
    "RuleState.currentRevision": _NO_RULE_REVISIONS,
    "RuleState.entityUrl": _NO_RULE_REVISIONS,
    "RuleState.revisionUrl": _NO_RULE_REVISIONS,
    "RuleRevision.created": _NO_RULE_REVISIONS,
    "RuleRevision.revisionChangeId": _NO_RULE_REVISIONS,
    "RuleRevision.revisionId": _NO_RULE_REVISIONS,
    "RuleType.settings": (
        "console URL templates of a rule type; AWS's own rule types, the ones listed, have none"
    ),
    "RuleTypeSettings.entityUrlTemplate": "as RuleType.settings",
    "RuleTypeSettings.executionUrlTemplate": "as RuleType.settings",
    "RuleTypeSettings.revisionUrlTemplate": "as RuleType.settings",
    "RuleTypeSettings.thirdPartyConfigurationUrl": "as RuleType.settings",
}

# Members returned only in states this scenario does not reach, and the test showing them.
_GIT = (
    "tests/e2e/test_webhooks.py::"
    "test_signed_push_to_a_filtered_branch_starts_exactly_one_pinned_execution"
)
_V1 = "tests/e2e/test_api_webhooks_v1.py::"
COVERED_ELSEWHERE: dict[str, str] = {
    "ActionExecution.lastUpdatedBy": _APPROVER,
    "ActionExecutionDetail.updatedBy": _APPROVER,
    "ActionState.revisionUrl": _GIT,
    "ArtifactRevision.revisionUrl": _GIT,
    "SourceRevision.revisionUrl": _GIT,
    "ActionExecution.percentComplete": (
        "tests/e2e/test_custom_action_workers.py::"
        "test_a_sample_job_worker_completes_a_custom_action_with_a_continuation"
    ),
    "ListWebhookItem.lastTriggered": f"{_V1}test_github_hmac_delivery_starts_the_pipeline",
    "ListWebhookItem.errorCode": f"{_V1}test_delivery_limits_and_errors",
    "ListWebhookItem.errorMessage": f"{_V1}test_delivery_limits_and_errors",
}


def members_of(shape: Any, seen: set[str] | None = None) -> set[str]:
    """Every ``Shape.member`` reachable from ``shape``."""
    seen = set() if seen is None else seen
    out: set[str] = set()
    if shape.name in ECHOED:
        return out
    if shape.type_name == "structure":
        if shape.name in seen:
            return out
        seen.add(shape.name)
        for name, member in shape.members.items():
            out.add(f"{shape.name}.{name}")
            out |= members_of(member, seen)
    elif shape.type_name == "list":
        out |= members_of(shape.member, seen)
    elif shape.type_name == "map":
        out |= members_of(shape.value, seen)
    return out


def returned(shape: Any, value: Any) -> set[str]:
    """Every ``Shape.member`` present in ``value``, an answer of ``shape``."""
    out: set[str] = set()
    if shape.name in ECHOED:
        return out
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            if name in shape.members:
                out.add(f"{shape.name}.{name}")
                out |= returned(shape.members[name], item)
    elif shape.type_name == "list" and isinstance(value, list):
        for item in value:
            out |= returned(shape.member, item)
    elif shape.type_name == "map" and isinstance(value, dict):
        for item in value.values():
            out |= returned(shape.value, item)
    return out


def scenario(api: ApiServer, cp: Any) -> list[tuple[str, dict[str, Any]]]:
    """Pipelines in every state a read can show; the requests that read them back."""
    demo = definition("demo")
    demo["stages"][1]["actions"][0].update(
        namespace="BuildVars", roleArn="arn:aws:iam::111122223333:role/build"
    )
    tags = [{"key": "team", "value": "ci"}, {"key": "tier", "value": "1"}]
    cp.create_pipeline(pipeline=demo, tags=tags)
    eid = cp.start_pipeline_execution(name="demo", variables=[{"name": "Env", "value": "qa"}])[
        "pipelineExecutionId"
    ]
    finish(
        api,
        eid,
        "Source",
        "Fetch",
        output_artifacts=[source_out(eid)],
        revision_id="v-1",
        revision_summary="first upload",
    )
    finish(
        api,
        eid,
        "Build",
        "Compile",
        output_artifacts=[build_out(eid)],
        output_variables={"IMAGE": "app:1"},
        summary="built",
        external_execution_id="build-1",
        log_location=ArtifactLocation(name="log", bucket=BUCKET, key="demo/logs/1.log"),
    )
    cp.disable_stage_transition(
        pipelineName="demo", stageName="Release", transitionType="Inbound", reason="Freeze"
    )

    cp.create_pipeline(pipeline=definition("rolled", approval=False))
    first = run_to_success(api, cp, "rolled")
    run_to_success(api, cp, "rolled")
    rollback = cp.rollback_stage(
        pipelineName="rolled", stageName="Release", targetPipelineExecutionId=first
    )["pipelineExecutionId"]
    stopped = cp.start_pipeline_execution(name="rolled")["pipelineExecutionId"]
    cp.stop_pipeline_execution(
        pipelineName="rolled", pipelineExecutionId=stopped, abandon=True, reason="not now"
    )

    rule = {**ENV_IS_PROD, "roleArn": "arn:aws:iam::111122223333:role/rule", "region": "us-east-1"}
    cp.create_pipeline(pipeline=gated(rule))
    failed = cp.start_pipeline_execution(name="gated")["pipelineExecutionId"]
    through_source(api, failed)

    # A failed action, retried by hand; and conditions after success and after failure.
    conditioned = definition("broken", approval=False)
    conditioned["stages"][0]["onSuccess"] = {
        "conditions": [{"result": "FAIL", "rules": [ENV_IS_DEV]}]
    }
    conditioned["stages"][1]["onFailure"] = {
        "result": "RETRY",
        "conditions": [{"result": "RETRY", "rules": [ENV_IS_PROD]}],
    }
    cp.create_pipeline(pipeline=conditioned)
    broken = cp.start_pipeline_execution(name="broken")["pipelineExecutionId"]
    through_source(api, broken)
    finish(api, broken, "Build", "Compile", succeeded=False)
    cp.create_pipeline(pipeline=definition("retried", approval=False))
    retried = cp.start_pipeline_execution(name="retried")["pipelineExecutionId"]
    through_source(api, retried)
    finish(api, retried, "Build", "Compile", succeeded=False)
    cp.retry_stage_execution(
        pipelineName="retried",
        stageName="Build",
        pipelineExecutionId=retried,
        retryMode="FAILED_ACTIONS",
    )

    # Executions held at a disabled transition, queued behind each other.
    held = definition("held", approval=False)
    held["executionMode"] = "QUEUED"
    cp.create_pipeline(pipeline=held)
    cp.disable_stage_transition(
        pipelineName="held", stageName="Build", transitionType="Inbound", reason="Freeze"
    )
    for _ in range(2):
        waiting = cp.start_pipeline_execution(name="held")["pipelineExecutionId"]
        through_source(api, waiting)

    arn = cp.get_pipeline(name="demo")["metadata"]["pipelineArn"]
    for hook, auth, config in [
        ("signed", "GITHUB_HMAC", {"SecretToken": "s3cret"}),
        ("from-ci", "IP", {"AllowedIPRange": "10.0.0.0/8"}),
    ]:
        cp.put_webhook(
            webhook={
                "name": hook,
                "targetPipeline": "demo",
                "targetAction": "Fetch",
                "filters": [{"jsonPath": "$.ref", "matchEquals": "refs/heads/main"}],
                "authentication": auth,
                "authenticationConfiguration": config,
            },
            tags=[{"key": "hook", "value": "1"}],
        )
    reads: list[tuple[str, dict[str, Any]]] = [
        ("ListPipelines", {}),
        ("ListRuleTypes", {}),
        ("ListWebhooks", {}),
        ("ListTagsForResource", {"resourceArn": arn}),
    ]
    for name, execution_id in [
        ("demo", eid),
        ("rolled", rollback),
        ("gated", failed),
        ("broken", broken),
        ("retried", retried),
        ("held", waiting),
    ]:
        reads += [
            ("GetPipeline", {"name": name}),
            ("GetPipelineState", {"name": name}),
            ("ListPipelineExecutions", {"pipelineName": name}),
            ("ListActionExecutions", {"pipelineName": name}),
            ("ListRuleExecutions", {"pipelineName": name}),
            ("GetPipelineExecution", {"pipelineName": name, "pipelineExecutionId": execution_id}),
        ]
    reads += [
        ("GetPipelineExecution", {"pipelineName": "rolled", "pipelineExecutionId": stopped}),
        ("ListPipelines", {"maxResults": 1}),
        ("ListPipelineExecutions", {"pipelineName": "rolled", "maxResults": 1}),
        ("ListActionExecutions", {"pipelineName": "rolled", "maxResults": 1}),
        ("ListRuleExecutions", {"pipelineName": "broken", "maxResults": 1}),
        ("ListWebhooks", {"MaxResults": 1}),
        ("ListTagsForResource", {"resourceArn": arn, "maxResults": 1}),
    ]
    return reads


def test_reads_carry_every_member_the_model_declares(api: ApiServer, cp: Any) -> None:
    model = service_model()
    declared: set[str] = set()
    for operation in READ_OPERATIONS:
        declared |= members_of(model.operation_model(operation).output_shape)
    seen: set[str] = set()
    for operation, body in scenario(api, cp):
        answer = conforming(api, operation, body)  # nothing the model lacks, either
        seen |= returned(model.operation_model(operation).output_shape, answer)
    missing = sorted(declared - seen - set(NEVER_RETURNED) - set(COVERED_ELSEWHERE))
    assert missing == [], "declared by the model, never returned:\n" + "\n".join(missing)
    stale = sorted(set(NEVER_RETURNED) & seen)
    assert stale == [], f"returned after all, take them off NEVER_RETURNED: {stale}"


def test_pipeline_type_defaults_as_create_pipeline_decides_it(cp: Any) -> None:
    """Left out, pipelineType is V1 unless the declaration uses V2 parameters (AWS: including
    them "will result in the pipeline having the V2 type"); executionMode is SUPERSEDED."""

    def without_variables(name: str) -> dict[str, Any]:
        decl = definition(name)
        del decl["variables"]
        for stage in decl["stages"]:
            for action in stage["actions"]:
                if "ProjectName" in action["configuration"]:
                    action["configuration"]["ProjectName"] = action["name"]
        return decl

    plain = without_variables("plain")
    queued = {**without_variables("queued"), "executionMode": "QUEUED"}
    for decl in (plain, definition("with-variables"), queued):
        cp.create_pipeline(pipeline=decl)
    listed = {
        p["name"]: (p["pipelineType"], p["executionMode"]) for p in cp.list_pipelines()["pipelines"]
    }
    assert listed == {
        "plain": ("V1", "SUPERSEDED"),
        "with-variables": ("V2", "SUPERSEDED"),
        "queued": ("V2", "QUEUED"),
    }
    assert cp.get_pipeline(name="plain")["pipeline"]["pipelineType"] == "V1"
    cp.update_pipeline(pipeline={**plain, "pipelineType": "V2"})  # an explicit type is kept
    assert cp.get_pipeline(name="plain")["pipeline"]["pipelineType"] == "V2"
