"""PutActionRevision and ListDeployActionExecutionTargets, with the meaning they have on AWS.

PutActionRevision: a source (on AWS, a custom source action's job worker) reports a new
revision of one source action; a revision different from the last one reported starts an
execution with trigger type ``PutActionRevision``, the action pinned to that revision where
its provider can fetch one exactly (a commit, an S3 object version, an image digest).
Reporting the same revision again starts nothing (``newRevision: false``). The last revision
is kept per action (:func:`keys.action_revisions`), claimed with a compare-and-set so two
reports of one revision racing start one execution; a start that fails gives the claim back.

ListDeployActionExecutionTargets: on AWS, the EC2 instances or ECS tasks a CodeDeploy / EC2
deploy action deployed to, with per-target lifecycle events. Conveyor's deploy actions do not
report per-target progress yet, so a known action execution lists no targets (the documented
shape, empty); an unknown id is ``ActionExecutionNotFoundException``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import keys
from engine.errors import (
    ActionExecutionNotFoundError,
    ActionNotFoundError,
    InvalidNextTokenError,
    StageNotFoundError,
    ValidationError,
)
from engine.execution import TriggerType
from engine.service import Service
from engine.source_overrides import revision_type
from engine.store.connection import redis_errors

Body = dict[str, Any]

# How many executions of each pipeline ListDeployActionExecutionTargets looks through.
MAX_EXECUTIONS_SCANNED = 1000

# Set the action's revision unless it already is ARGV[2]; 1 if set, 0 if it already was.
_CLAIM = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# Give a claim back: restore the earlier revision (or none) if ours is still there.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""


def put_action_revision(svc: Service, body: Body) -> Body:
    name, stage_name, action_name = body["pipelineName"], body["stageName"], body["actionName"]
    decl = svc.get_pipeline(name).declaration
    stage = next((s for s in decl.stages if s.name == stage_name), None)
    if stage is None:
        raise StageNotFoundError(f"Stage '{stage_name}' not found in pipeline '{name}'")
    action = next((a for a in stage.actions if a.name == action_name), None)
    if action is None:
        raise ActionNotFoundError(f"Action '{action_name}' not found in stage '{stage_name}'")
    if action.action_type_id.category.value != "Source":
        raise ValidationError(
            f"Action '{action_name}' is a {action.action_type_id.category.value} action; "
            "PutActionRevision reports revisions of source actions"
        )
    revision = str(body["actionRevision"]["revisionId"])
    field, key = f"{stage_name}/{action_name}", keys.action_revisions(name)
    with redis_errors("recording an action revision"):
        previous = svc.store.r.hget(key, field)
        if not svc.store.r.eval(_CLAIM, 1, key, field, revision):
            return {"newRevision": False}
    kind = revision_type(action.action_type_id.provider)
    pinned = (
        [{"actionName": action_name, "revisionType": kind, "revisionId": revision}]
        if kind
        else None
    )
    try:
        state = svc.start_execution(
            name,
            trigger_type=TriggerType.PUT_ACTION_REVISION,
            trigger_detail=action_name,
            source_revisions=pinned,
        )
    except Exception:
        old = previous.decode() if isinstance(previous, bytes) else (previous or "")
        with redis_errors("releasing an action revision"):
            svc.store.r.eval(_RELEASE, 1, key, field, revision, str(old))
        raise
    return {"newRevision": True, "pipelineExecutionId": state.execution_id}


def list_deploy_action_execution_targets(svc: Service, body: Body) -> Body:
    wanted = body["actionExecutionId"]
    name = body.get("pipelineName")
    names = [svc.get_pipeline(name).declaration.name] if name else svc.store.definitions.names()
    found = any(
        run.action_execution_id == wanted
        for n in names
        for _, _, run in svc.action_executions(n, limit=MAX_EXECUTIONS_SCANNED)
    )
    if not found:
        where = f"pipeline '{name}'" if name else "any pipeline"
        raise ActionExecutionNotFoundError(f"Action execution '{wanted}' was not found in {where}")
    if body.get("nextToken") is not None:
        raise InvalidNextTokenError(f"nextToken {body['nextToken']!r} is not valid")
    return {"targets": []}


REVISION_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "PutActionRevision": put_action_revision,
    "ListDeployActionExecutionTargets": list_deploy_action_execution_targets,
}
