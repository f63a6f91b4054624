"""Custom action types and the job-worker operations over real HTTP and Redis, driven by
boto3 as a job worker drives them (no Celery workers here: jobs are queued through the
worker's own channel, as the job-worker provider queues them)."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.api_support import definition
from tests.e2e.conftest import ApiServer
from tests.e2e.test_api import code_of, message_of
from workers.jobs import JobQueue, RedisJobChannel

TYPE = {"category": "Build", "owner": "Custom", "provider": "MyBuilder", "version": "1"}
KEY = "Custom/Build/MyBuilder/1"
PROPERTIES = [
    {"name": "Project", "required": True, "key": True, "secret": False, "queryable": True},
    {"name": "Token", "required": False, "key": False, "secret": True},
]


def _create(cp: Any, **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "category": "Build",
        "provider": "MyBuilder",
        "version": "1",
        "settings": {"entityUrlTemplate": "https://builds.example.com/{Config:Project}"},
        "configurationProperties": PROPERTIES,
        "inputArtifactDetails": {"minimumCount": 1, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
        **overrides,
    }
    return cp.create_custom_action_type(**args)


def _queue(api: ApiServer, project: str = "web", key: str = KEY) -> tuple[RedisJobChannel, str]:
    channel = RedisJobChannel(
        api.service.store.jobs,
        {"executionId": "e", "stage": "S", "name": "A", "attempt": 1},
        time.time() + 60,
        credentials=api.service.store.credentials,
        queue=JobQueue(key, project),
    )
    data = {"actionTypeId": TYPE, "actionConfiguration": {"configuration": {"Project": project}}}
    return channel, channel.create(data)


def _declared(cp: Any) -> list[Any]:
    """The Custom types listed, without the built-in Jenkins provider (owner Custom too)."""
    listed = cp.list_action_types(actionOwnerFilter="Custom")["actionTypes"]
    return [t["id"] for t in listed if t["id"]["provider"] != "Jenkins"]


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return code_of(exc), message_of(exc)


# ---------------------------------------------------------------------------- action types


def test_create_list_tag_and_delete_a_custom_action_type(api: ApiServer, cp: Any) -> None:
    made = _create(cp, tags=[{"key": "team", "value": "web"}])
    assert made["actionType"]["id"] == TYPE
    assert made["actionType"]["actionConfigurationProperties"][0]["queryable"] is True
    assert made["tags"] == [{"key": "team", "value": "web"}]
    # Created again with the same definition: the same type, nothing changes.
    assert _create(cp)["actionType"] == made["actionType"]

    assert _declared(cp) == [TYPE]
    everything = cp.list_action_types()["actionTypes"]
    owners = {t["id"]["owner"] for t in everything}
    assert {"AWS", "Custom"} <= owners
    codebuild = next(t for t in everything if t["id"]["provider"] == "CodeBuild")
    assert codebuild["inputArtifactDetails"] == {"minimumCount": 1, "maximumCount": 5}
    assert "ProjectName" in [p["name"] for p in codebuild["actionConfigurationProperties"]]
    assert cp.list_action_types(regionFilter="eu-west-3")["actionTypes"] == []

    arn = f"arn:aws:codepipeline:us-east-1:111122223333:actiontype:{KEY}"
    assert cp.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "web"}]

    cp.delete_custom_action_type(category="Build", provider="MyBuilder", version="1")
    assert _declared(cp) == []
    code, _ = _error(cp.list_tags_for_resource, resourceArn=arn)
    assert code == "ResourceNotFoundException"
    code, message = _error(
        cp.delete_custom_action_type, category="Build", provider="MyBuilder", version="1"
    )
    assert code == "ValidationException" and "does not exist" in message
    # As AWS documents: a deleted type comes back only with exactly its definition...
    code, message = _error(_create, cp=cp, settings={})
    assert code == "ValidationException" and "was deleted" in message
    assert _create(cp)["actionType"]["id"] == TYPE
    assert _declared(cp) == [TYPE]


def test_list_action_types_pages_with_sealed_tokens(api: ApiServer, cp: Any) -> None:
    seen: list[Any] = []
    token = None
    while True:
        # ListActionTypes has no maxResults in the model: pages are 100 long; there are fewer.
        page = cp.list_action_types(**({"nextToken": token} if token else {}))
        seen += page["actionTypes"]
        token = page.get("nextToken")
        if not token:
            break
    assert len(seen) == len({str(t["id"]) for t in seen})
    code, _ = _error(cp.list_action_types, nextToken="-5")
    assert code == "InvalidNextTokenException"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (
            {"configurationProperties": [{**PROPERTIES[0]}, {**PROPERTIES[0], "name": "Other"}]},
            "at most one queryable property",
        ),
        (
            {"configurationProperties": [{**PROPERTIES[0], "required": False}]},
            "must be required and not secret",
        ),
        ({"configurationProperties": [PROPERTIES[1], PROPERTIES[1]]}, "more than once"),
        (
            {"inputArtifactDetails": {"minimumCount": 3, "maximumCount": 1}},
            "minimumCount 3 is more than maximumCount 1",
        ),
        ({"provider": "Jenkins"}, "built-in providers"),
    ],
)
def test_create_refuses_what_aws_refuses(
    api: ApiServer, cp: Any, change: dict[str, Any], complaint: str
) -> None:
    code, message = _error(_create, cp=cp, **change)
    assert code == "ValidationException"
    assert complaint in message
    assert _declared(cp) == []


def test_create_checks_the_model_first(api: ApiServer, cp: Any) -> None:
    too_many = [{**PROPERTIES[1], "name": f"P{i}"} for i in range(11)]
    code, message = _error(_create, cp=cp, configurationProperties=too_many)
    assert code == "ValidationException" and "configurationProperties" in message


def test_third_party_types_are_registered_with_update_action_type(api: ApiServer, cp: Any) -> None:
    ident = {"category": "Deploy", "owner": "ThirdParty", "provider": "Partner", "version": "2"}
    declaration = {
        "executor": {
            "type": "JobWorker",
            "configuration": {"jobWorkerExecutorConfiguration": {}},
        },
        "id": ident,
        "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
        "properties": [{"name": "Site", "optional": False, "key": True, "noEcho": False}],
        "urls": {"configurationUrl": "https://partner.example.com/setup"},
    }
    code, _ = _error(cp.get_action_type, **ident)
    assert code == "ActionTypeNotFoundException"
    cp.update_action_type(actionType=declaration)
    got = cp.get_action_type(**ident)["actionType"]
    assert got["id"] == ident
    assert got["executor"]["type"] == "JobWorker"
    assert got["properties"][0]["name"] == "Site"
    assert got["urls"] == {"configurationUrl": "https://partner.example.com/setup"}
    listed = cp.list_action_types(actionOwnerFilter="ThirdParty")["actionTypes"]
    assert ident in [t["id"] for t in listed]
    # Built-ins: readable, not changeable; unknown AWS types: not found.
    s3 = cp.get_action_type(category="Deploy", owner="AWS", provider="S3", version="1")
    assert s3["actionType"]["inputArtifactDetails"]["minimumCount"] == 1
    aws: dict[str, Any] = {
        **declaration,
        "id": {**ident, "owner": "AWS", "provider": "S3", "version": "1"},
    }
    code, _ = _error(cp.update_action_type, actionType=aws)
    assert code == "RequestFailedException"
    github_id = {**ident, "category": "Source", "provider": "GitHub", "version": "1"}
    github = {**declaration, "id": github_id}
    code, _ = _error(cp.update_action_type, actionType=github)
    assert code == "RequestFailedException"  # ThirdParty/Source/GitHub/1 is a built-in
    aws["id"]["provider"] = "NoSuchThing"
    code, _ = _error(cp.update_action_type, actionType=aws)
    assert code == "ActionTypeNotFoundException"
    lam = copy.deepcopy(declaration)
    lam["executor"] = {
        "type": "Lambda",
        "configuration": {
            "lambdaExecutorConfiguration": {
                "lambdaFunctionArn": "arn:aws:lambda:us-east-1:111122223333:function:f"
            }
        },
    }
    code, message = _error(cp.update_action_type, actionType=lam)
    assert code == "RequestFailedException" and "JobWorker" in message


# ---------------------------------------------------------------------------- definitions


def _custom_pipeline(configuration: dict[str, str], inputs: int = 1) -> dict[str, Any]:
    pipeline = definition("custom", approval=False)
    pipeline["stages"][1]["actions"] = [
        {
            "name": "Make",
            "actionTypeId": TYPE,
            "configuration": configuration,
            "inputArtifacts": [{"name": "SourceOut"}] * inputs,
        }
    ]
    pipeline["stages"] = pipeline["stages"][:2]
    return pipeline


def test_pipelines_use_custom_types_checked_against_their_properties(
    api: ApiServer, cp: Any
) -> None:
    code, message = _error(cp.create_pipeline, pipeline=_custom_pipeline({"Project": "web"}))
    assert code == "InvalidActionDeclarationException"
    assert message.startswith(
        "ActionType (Category: 'Build', Provider: 'MyBuilder', Version: '1', Owner: 'Custom') "
        "in action 'Make' is not available in region 'US_EAST_1'"
    )
    _create(cp)
    code, message = _error(cp.create_pipeline, pipeline=_custom_pipeline({"Token": "t"}))
    assert code == "InvalidActionDeclarationException"
    assert "missing required configuration 'Project'" in message
    assert "stages[1].actions[0].configuration.Project: required" in message
    code, message = _error(
        cp.create_pipeline, pipeline=_custom_pipeline({"Project": "web", "Bogus": "x"})
    )
    assert "stages[1].actions[0].configuration.Bogus: unknown key" in message
    code, message = _error(cp.create_pipeline, pipeline=_custom_pipeline({"Project": "w"}, 0))
    assert code == "InvalidActionDeclarationException"
    assert "stages[1].actions[0].inputArtifacts" in message
    made = cp.create_pipeline(pipeline=_custom_pipeline({"Project": "web", "Token": "s"}))
    assert made["pipeline"]["stages"][1]["actions"][0]["actionTypeId"] == TYPE


# ---------------------------------------------------------------------------- jobs


def test_poll_acknowledge_and_report_a_job(api: ApiServer, cp: Any) -> None:
    _create(cp)
    channel, job_id = _queue(api)
    assert cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "other"})["jobs"] == []
    jobs = cp.poll_for_jobs(actionTypeId=TYPE, maxBatchSize=5, queryParam={"Project": "web"})
    [job] = jobs["jobs"]
    assert job["id"] == job_id and job["accountId"] == "111122223333"
    assert job["data"]["actionConfiguration"]["configuration"] == {"Project": "web"}
    # Claimed: no other poll gets it.
    assert cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"] == []
    code, _ = _error(cp.put_job_success_result, jobId=job_id)
    assert code == "InvalidJobStateException"  # not acknowledged yet
    code, _ = _error(cp.acknowledge_job, jobId=job_id, nonce="not-the-nonce")
    assert code == "InvalidNonceException"
    assert cp.acknowledge_job(jobId=job_id, nonce=job["nonce"])["status"] == "InProgress"
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(channel.wait(job_id, time.time() + 10, threading.Event()))
    )
    waiter.start()
    cp.put_job_success_result(
        jobId=job_id,
        executionDetails={"summary": "built", "externalExecutionId": "b-1", "percentComplete": 100},
        currentRevision={"revision": "r1", "changeIdentifier": "c1", "revisionSummary": "one"},
    )
    waiter.join(10)
    assert got and got[0].succeeded and got[0].summary == "built"
    assert got[0].revision == "r1" and got[0].revision_summary == "one"
    code, _ = _error(cp.put_job_failure_result, jobId=job_id, failureDetails=FAILED)
    assert code == "InvalidJobStateException"


FAILED = {"type": "ConfigurationError", "message": "no such project"}


def test_failure_types_reach_the_waiting_action(api: ApiServer, cp: Any) -> None:
    _create(cp)
    channel, job_id = _queue(api)
    [job] = cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"]
    cp.acknowledge_job(jobId=job_id, nonce=job["nonce"])
    cp.put_job_failure_result(jobId=job_id, failureDetails=FAILED)
    outcome = channel.wait(job_id, time.time() + 5, threading.Event())
    assert outcome is not None and not outcome.succeeded
    assert (outcome.failure_type, outcome.message) == ("ConfigurationError", "no such project")


def test_an_unacknowledged_job_goes_back_to_the_queue_and_its_nonce_goes_stale(
    api: ApiServer, cp: Any
) -> None:
    _create(cp)
    api.service.store.jobs.ack_timeout_seconds = 0.5
    try:
        _, job_id = _queue(api)
        [first] = cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"]
        time.sleep(0.7)
        [second] = cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"]
        assert second["id"] == job_id and second["nonce"] != first["nonce"]
        code, message = _error(cp.acknowledge_job, jobId=job_id, nonce=first["nonce"])
        assert code == "InvalidNonceException" and "back to the queue" in message
        assert cp.acknowledge_job(jobId=job_id, nonce=second["nonce"])["status"] == "InProgress"
        # An acknowledgement that comes too late is refused even before anyone polls again.
        _, late = _queue(api)
        [claim] = cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"]
        time.sleep(0.7)
        code, _ = _error(cp.acknowledge_job, jobId=late, nonce=claim["nonce"])
        assert code == "InvalidNonceException"
    finally:
        api.service.store.jobs.ack_timeout_seconds = 60.0


def test_competing_pollers_never_share_a_job(api: ApiServer, cp: Any) -> None:
    _create(cp)
    ids = {_queue(api)[1] for _ in range(60)}
    claimed: list[str] = []
    lock = threading.Lock()

    def poller() -> None:
        while True:
            jobs = cp.poll_for_jobs(
                actionTypeId=TYPE, maxBatchSize=3, queryParam={"Project": "web"}
            )
            if not jobs["jobs"]:
                return
            for job in jobs["jobs"]:
                cp.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
                with lock:
                    claimed.append(job["id"])

    threads = [threading.Thread(target=poller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(ids)


def test_job_operations_refuse_unknown_types_and_wrong_query_params(
    api: ApiServer, cp: Any
) -> None:
    code, message = _error(cp.poll_for_jobs, actionTypeId=TYPE)
    assert code == "ActionTypeNotFoundException" and "MyBuilder" in message
    aws = {**TYPE, "owner": "AWS", "provider": "CodeBuild"}
    code, _ = _error(cp.poll_for_jobs, actionTypeId=aws)
    assert code == "ActionTypeNotFoundException"
    code, _ = _error(cp.poll_for_third_party_jobs, actionTypeId=TYPE)
    assert code == "ActionTypeNotFoundException"
    _create(cp)
    code, message = _error(cp.poll_for_jobs, actionTypeId=TYPE)
    assert code == "ValidationException" and "queryParam" in message
    code, _ = _error(cp.poll_for_jobs, actionTypeId=TYPE, queryParam={"Token": "x"})
    assert code == "ValidationException"
    missing = str(uuid.uuid4())
    code, _ = _error(cp.acknowledge_job, jobId=missing, nonce="n")
    assert code == "JobNotFoundException"


THIRD = {"category": "Deploy", "owner": "ThirdParty", "provider": "Partner", "version": "1"}


def test_third_party_jobs_are_bound_to_their_client_token(api: ApiServer, cp: Any) -> None:
    cp.update_action_type(
        actionType={
            "executor": {"type": "JobWorker", "configuration": {}},
            "id": THIRD,
            "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
            "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 0},
        }
    )
    channel, job_id = _queue(api, "", "ThirdParty/Deploy/Partner/1")
    [job] = cp.poll_for_third_party_jobs(actionTypeId=THIRD)["jobs"]
    assert job["jobId"] == job_id
    token = job["clientId"]
    code, _ = _error(cp.get_third_party_job_details, jobId=job_id, clientToken="wrong")
    assert code == "InvalidClientTokenException"
    details = cp.get_third_party_job_details(jobId=job_id, clientToken=token)["jobDetails"]
    assert details["id"] == job_id and details["nonce"]
    code, _ = _error(
        cp.acknowledge_third_party_job, jobId=job_id, nonce=details["nonce"], clientToken="wrong"
    )
    assert code == "InvalidClientTokenException"
    code, _ = _error(cp.acknowledge_third_party_job, jobId=job_id, nonce="x", clientToken=token)
    assert code == "InvalidNonceException"
    status = cp.acknowledge_third_party_job(jobId=job_id, nonce=details["nonce"], clientToken=token)
    assert status["status"] == "InProgress"
    code, _ = _error(cp.put_third_party_job_success_result, jobId=job_id, clientToken="wrong")
    assert code == "InvalidClientTokenException"
    cp.put_third_party_job_failure_result(jobId=job_id, clientToken=token, failureDetails=FAILED)
    outcome = channel.wait(job_id, time.time() + 5, threading.Event())
    assert outcome is not None and outcome.failure_type == "ConfigurationError"
    code, _ = _error(cp.put_third_party_job_success_result, jobId=job_id, clientToken=token)
    assert code == "InvalidJobStateException"
    code, _ = _error(cp.get_third_party_job_details, jobId=str(uuid.uuid4()), clientToken=token)
    assert code == "JobNotFoundException"


def test_a_job_whose_action_stopped_waiting_takes_no_result(api: ApiServer, cp: Any) -> None:
    _create(cp)
    channel, queued = _queue(api)
    _, claimed = _queue(api)
    [job] = cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"]
    assert job["id"] == queued
    channel.close(queued)  # the action timed out or was stopped
    channel.close(claimed)
    assert cp.acknowledge_job(jobId=queued, nonce=job["nonce"])["status"] == "TimedOut"
    code, _ = _error(cp.put_job_success_result, jobId=queued)
    assert code == "InvalidJobStateException"
    assert cp.poll_for_jobs(actionTypeId=TYPE, queryParam={"Project": "web"})["jobs"] == []
