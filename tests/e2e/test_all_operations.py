"""Every operation of botocore's CodePipeline 2015-07-09 model, driven through boto3.

One scenario, as a user's scripts and job workers would run it against ``conveyor api``
(in process, SigV4 on, signing as the admin): each of the model's operations is called at
least once, and the test fails if the model has an operation this scenario does not call.
An operation counts as driven when Conveyor answered it with a success or with the 4xx
error AWS documents for that situation, never a 5xx.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError

from engine.execution import ActionResult
from engine.messages import ActionCompleted
from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer

# Jobs queued the way the job-worker provider queues one for its action.
from tests.e2e.test_api_custom_actions import _queue

CUSTOM = {"category": "Build", "owner": "Custom", "provider": "AllOps", "version": "1"}
THIRD = {"category": "Deploy", "owner": "ThirdParty", "provider": "AllOpsPartner", "version": "1"}
ADMIN_ARN = "arn:aws:iam::111122223333:user/test-admin"


def model_operations() -> set[str]:
    model = botocore.session.get_session().get_service_model("codepipeline")
    return set(model.operation_names)


@pytest.fixture
def driven(cp: Any) -> Iterator[dict[str, int]]:
    """Operation name -> HTTP status of its last answer, recorded from botocore's own
    after-call events (so a call that raised is counted with its error's status)."""
    seen: dict[str, int] = {}

    def record(http_response: Any, model: Any, **_: Any) -> None:
        seen[model.name] = http_response.status_code

    cp.meta.events.register("after-call.codepipeline", record)
    yield seen
    cp.meta.events.unregister("after-call.codepipeline", record)


def expect_error(code: str, call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    assert exc.value.response["Error"]["Code"] == code, exc.value.response
    return str(exc.value.response["Error"]["Message"])


def complete(api: ApiServer, name: str, eid: str, stage: str, action: str) -> None:
    """What a worker reports when an action succeeds (no Celery workers in this test)."""
    event = ActionCompleted(
        now=time.time(),
        execution_id=eid,
        stage=stage,
        action=action,
        attempt=1,
        result=ActionResult(succeeded=True),
    )
    api.service.store.apply(name, event)


def test_every_operation_in_the_model_answers_through_boto3(
    api: ApiServer, cp: Any, driven: dict[str, int]
) -> None:
    name = "all-ops"
    # ---- pipelines and executions
    created = cp.create_pipeline(pipeline=definition(name), tags=[{"key": "team", "value": "a"}])
    arn = cp.get_pipeline(name=name)["metadata"]["pipelineArn"]
    assert arn == f"arn:aws:codepipeline:us-east-1:111122223333:{name}"
    assert created["tags"] == [{"key": "team", "value": "a"}]
    assert [p["name"] for p in cp.list_pipelines()["pipelines"]] == [name]
    cp.update_pipeline(pipeline=definition(name))
    eid = cp.start_pipeline_execution(name=name)["pipelineExecutionId"]
    execution = cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=eid)
    trigger = execution["pipelineExecution"]["trigger"]
    assert trigger == {"triggerType": "StartPipelineExecution", "triggerDetail": ADMIN_ARN}
    summaries = cp.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]
    assert [s["pipelineExecutionId"] for s in summaries] == [eid]

    # ---- transitions, approvals, stage operations
    cp.disable_stage_transition(
        pipelineName=name, stageName="Release", transitionType="Inbound", reason="freeze"
    )
    state = cp.get_pipeline_state(name=name)
    release = next(s for s in state["stageStates"] if s["stageName"] == "Release")
    assert release["inboundTransitionState"]["lastChangedBy"] == ADMIN_ARN
    cp.enable_stage_transition(pipelineName=name, stageName="Release", transitionType="Inbound")
    complete(api, name, eid, "Source", "Fetch")
    complete(api, name, eid, "Build", "Compile")
    [(_, waiting)] = [
        (s, a) for s, a in api.service.pending_approvals(name) if s.execution_id == eid
    ]
    assert waiting.approval_token
    answered = cp.put_approval_result(
        pipelineName=name,
        stageName="Approve",
        actionName="Gate",
        result={"summary": "ok", "status": "Approved"},
        token=waiting.approval_token,
    )
    assert answered["approvedAt"]
    details = cp.list_action_executions(pipelineName=name, filter={"pipelineExecutionId": eid})
    by_action = {d["actionName"]: d for d in details["actionExecutionDetails"]}
    assert by_action["Gate"]["updatedBy"] == ADMIN_ARN
    expect_error(
        "StageNotRetryableException",
        cp.retry_stage_execution,
        pipelineName=name,
        stageName="Build",
        pipelineExecutionId=eid,
        retryMode="FAILED_ACTIONS",
    )
    expect_error(
        "PipelineExecutionNotFoundException",
        cp.rollback_stage,
        pipelineName=name,
        stageName="Release",
        targetPipelineExecutionId="00000000-0000-0000-0000-000000000000",
    )
    expect_error(
        "ConditionNotOverridableException",
        cp.override_stage_condition,
        pipelineName=name,
        stageName="Build",
        pipelineExecutionId=eid,
        conditionType="BEFORE_ENTRY",
    )
    assert cp.list_rule_types()["ruleTypes"]
    assert cp.list_rule_executions(pipelineName=name)["ruleExecutionDetails"] == []
    targets = cp.list_deploy_action_execution_targets(
        pipelineName=name, actionExecutionId=by_action["Fetch"]["actionExecutionId"]
    )
    assert targets["targets"] == []
    cp.put_action_revision(
        pipelineName=name,
        stageName="Source",
        actionName="Fetch",
        actionRevision={
            "revisionId": "v2",
            "revisionChangeId": "v2",
            "created": time.time(),
        },
    )
    cp.stop_pipeline_execution(
        pipelineName=name, pipelineExecutionId=eid, abandon=True, reason="done here"
    )

    # ---- tags
    cp.tag_resource(resourceArn=arn, tags=[{"key": "tier", "value": "web"}])
    cp.untag_resource(resourceArn=arn, tagKeys=["team"])
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "tier", "value": "web"}]

    # ---- webhooks
    hook = cp.put_webhook(
        webhook={
            "name": "all-ops-hook",
            "targetPipeline": name,
            "targetAction": "Fetch",
            "filters": [{"jsonPath": "$.ref", "matchEquals": "refs/heads/main"}],
            "authentication": "UNAUTHENTICATED",
            "authenticationConfiguration": {},
        }
    )["webhook"]
    assert hook["url"]
    assert [w["definition"]["name"] for w in cp.list_webhooks()["webhooks"]] == ["all-ops-hook"]
    for register in (
        cp.register_webhook_with_third_party,
        cp.deregister_webhook_with_third_party,
    ):
        message = expect_error("ValidationException", register, webhookName="all-ops-hook")
        assert "GitHub" in message or "third party" in message.lower()
    cp.delete_webhook(name="all-ops-hook")

    # ---- action types
    cp.create_custom_action_type(
        category="Build",
        provider="AllOps",
        version="1",
        configurationProperties=[
            {"name": "Project", "required": True, "key": True, "secret": False, "queryable": True}
        ],
        inputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
        outputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
    )
    cp.update_action_type(
        actionType={
            "executor": {"type": "JobWorker", "configuration": {}},
            "id": THIRD,
            "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
            "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
        }
    )
    # GetActionType's owner is AWS or ThirdParty by the model: Custom types are listed.
    assert cp.get_action_type(**THIRD)["actionType"]["id"] == THIRD
    listed = [t["id"] for t in cp.list_action_types()["actionTypes"]]
    assert CUSTOM in listed and THIRD in listed

    # ---- job workers
    channel, job_id = _queue(api, "web", "Custom/Build/AllOps/1")
    [job] = cp.poll_for_jobs(actionTypeId=CUSTOM, queryParam={"Project": "web"})["jobs"]
    assert job["id"] == job_id
    assert cp.acknowledge_job(jobId=job_id, nonce=job["nonce"])["status"] == "InProgress"
    assert cp.get_job_details(jobId=job_id)["jobDetails"]["id"] == job_id
    cp.put_job_success_result(jobId=job_id, outputVariables={"built": "yes"})
    outcome = channel.wait(job_id, time.time() + 5, threading.Event())
    assert outcome is not None
    _, second = _queue(api, "web", "Custom/Build/AllOps/1")
    # Not the first poll's bytes: an identical change within a second is a replay.
    poll = {"actionTypeId": CUSTOM, "queryParam": {"Project": "web"}, "maxBatchSize": 1}
    [job] = cp.poll_for_jobs(**poll)["jobs"]
    cp.acknowledge_job(jobId=second, nonce=job["nonce"])
    cp.put_job_failure_result(
        jobId=second, failureDetails={"type": "JobFailed", "message": "compile error"}
    )

    for finish in ("success", "failure"):
        _, third_id = _queue(api, "", "ThirdParty/Deploy/AllOpsPartner/1")
        batch = 1 if finish == "success" else 2  # not the same bytes twice: a replay
        [tjob] = cp.poll_for_third_party_jobs(actionTypeId=THIRD, maxBatchSize=batch)["jobs"]
        token = tjob["clientId"]
        tdetails = cp.get_third_party_job_details(jobId=third_id, clientToken=token)
        nonce = tdetails["jobDetails"]["nonce"]
        cp.acknowledge_third_party_job(jobId=third_id, nonce=nonce, clientToken=token)
        if finish == "success":
            cp.put_third_party_job_success_result(jobId=third_id, clientToken=token)
        else:
            cp.put_third_party_job_failure_result(
                jobId=third_id,
                clientToken=token,
                failureDetails={"type": "JobFailed", "message": "partner said no"},
            )
    cp.delete_custom_action_type(category="Build", provider="AllOps", version="1")

    # ---- and gone
    cp.delete_pipeline(name=name)
    assert cp.list_pipelines()["pipelines"] == []

    missing = sorted(model_operations() - set(driven))
    assert missing == [], f"operations this scenario never called: {missing}"
    server_errors = {op: status for op, status in driven.items() if status >= 500}
    assert server_errors == {}
    assert len(driven) == 44
