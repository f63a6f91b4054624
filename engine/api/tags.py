"""TagResource, UntagResource, ListTagsForResource: tags on pipelines and webhooks.

A resource is named by the ARN Conveyor handed out for it (GetPipeline's ``pipelineArn``,
ListWebhooks' ``arn``), built by :mod:`engine.arns`: an ARN of another region or account
names nothing here (``ResourceNotFoundException``). Custom action types are tagged by their
ARN (``...:actiontype:Custom/<Category>/<Provider>/<Version>``). Tags also come with
CreatePipeline, PutWebhook and CreateCustomActionType (:func:`tag_pipeline`,
:func:`tag_webhook`, :func:`tag_action_type`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine import keys
from engine.action_types import ActionTypeRecord
from engine.approvals import STAGE_APPROVERS, check_stages
from engine.arns import WEBHOOK_RESOURCE, Account, resource_of
from engine.errors import (
    InvalidArnError,
    InvalidNextTokenError,
    NotFoundError,
    PipelineNotFoundError,
)
from engine.service import Service
from engine.store.connection import redis_errors
from engine.store.tags import Exists
from engine.tags import check_keys, tag_list, tags_of

Body = dict[str, Any]

ACTION_TYPE_RESOURCE = "actiontype:"


@dataclass(frozen=True)
class Taggable:
    key: str  # the resource's tag hash
    watch: tuple[str, ...]  # what changes when the resource is created or deleted
    exists: Exists
    missing: str  # the message when it does not exist
    pipeline: str | None = None  # the pipeline's name, when the resource is one


def _pipeline(name: str, account: Account) -> Taggable:
    key = keys.pipeline(name)
    return Taggable(
        keys.pipeline_tags(name),
        (key,),
        lambda p: bool(p.hexists(key, "current")),
        f"The pipeline '{name}' ({account.pipeline_arn(name)}) does not exist",
        pipeline=name,
    )


def _webhook(name: str, account: Account) -> Taggable:
    return Taggable(
        keys.webhook_tags(name),
        (keys.WEBHOOKS,),
        lambda p: bool(p.hexists(keys.WEBHOOKS, name)),
        f"The webhook '{name}' ({account.webhook_arn(name)}) does not exist",
    )


def _action_type(type_key: str, account: Account) -> Taggable:
    def exists(p: Any) -> bool:
        raw = p.hget(keys.ACTION_TYPES, type_key)
        return bool(raw) and not ActionTypeRecord.model_validate_json(raw).deleted

    return Taggable(
        keys.action_type_tags(type_key),
        (keys.ACTION_TYPES,),
        exists,
        f"The action type '{type_key}' ({account.arn(ACTION_TYPE_RESOURCE + type_key)}) "
        "does not exist",
    )


def _resource(arn: str, account: Account) -> Taggable:
    resource = resource_of(arn)
    if resource is None:
        raise InvalidArnError(f"'{arn}' is not a CodePipeline ARN")
    if resource.startswith(WEBHOOK_RESOURCE):
        name = resource[len(WEBHOOK_RESOURCE) :]
        if account.webhook_arn(name) != arn:
            raise NotFoundError(f"The resource '{arn}' does not exist in this region and account")
        return _webhook(name, account)
    if resource.startswith(ACTION_TYPE_RESOURCE):
        type_key = resource[len(ACTION_TYPE_RESOURCE) :]
        if account.arn(resource) != arn or type_key.count("/") != 3:
            raise NotFoundError(f"The resource '{arn}' does not exist in this region and account")
        return _action_type(type_key, account)
    if ":" in resource or "/" in resource:
        raise InvalidArnError(
            f"'{arn}' names no pipeline, webhook or action type: a pipeline's ARN ends in "
            "its name, a webhook's in webhook:<name>"
        )
    if account.pipeline_arn(resource) != arn:
        raise NotFoundError(f"The resource '{arn}' does not exist in this region and account")
    return _pipeline(resource, account)


def _add(svc: Service, target: Taggable, tags: Mapping[str, str]) -> None:
    if target.pipeline is not None and any(k.startswith(STAGE_APPROVERS) for k in tags):
        try:
            decl = svc.get_pipeline(target.pipeline).declaration
        except PipelineNotFoundError:
            raise NotFoundError(target.missing) from None
        check_stages(tags, {s.name for s in decl.stages}, target.pipeline)
    svc.store.tags.add(
        target.key, tags, watch=target.watch, exists=target.exists, missing=target.missing
    )


def tag_pipeline(svc: Service, name: str, tags: Mapping[str, str]) -> None:
    """CreatePipeline's ``tags``, once the pipeline exists."""
    if tags:
        _add(svc, _pipeline(name, svc.store.account), tags)


def tag_webhook(svc: Service, name: str, tags: Mapping[str, str]) -> None:
    """PutWebhook's ``tags``: added to the webhook's (an update keeps the others)."""
    if tags:
        _add(svc, _webhook(name, svc.store.account), tags)


def tag_action_type(svc: Service, type_key: str, tags: Mapping[str, str]) -> None:
    """CreateCustomActionType's ``tags``, once the type exists."""
    if tags:
        _add(svc, _action_type(type_key, svc.store.account), tags)


def webhook_tags(svc: Service, name: str) -> list[dict[str, str]]:
    return tag_list(svc.store.tags.get(keys.webhook_tags(name)))


def tag_resource(svc: Service, body: Body) -> Body:
    target = _resource(body["resourceArn"], svc.store.account)
    _add(svc, target, tags_of(body["tags"]))
    return {}


def untag_resource(svc: Service, body: Body) -> Body:
    target = _resource(body["resourceArn"], svc.store.account)
    svc.store.tags.remove(
        target.key,
        check_keys(body["tagKeys"]),
        watch=target.watch,
        exists=target.exists,
        missing=target.missing,
    )
    return {}


def list_tags_for_resource(svc: Service, body: Body) -> Body:
    target = _resource(body["resourceArn"], svc.store.account)
    with redis_errors("reading tags"):
        found = target.exists(svc.store.r)
    if not found:
        raise NotFoundError(target.missing)
    tags = tag_list(svc.store.tags.get(target.key))
    token = body.get("nextToken")
    start = 0
    if token is not None:
        if not token.isdigit() or int(token) >= max(len(tags), 1):
            raise InvalidNextTokenError(f"nextToken {token!r} is not valid")
        start = int(token)
    size = int(body.get("maxResults") or 100)
    out: Body = {"tags": tags[start : start + size]}
    if start + size < len(tags):
        out["nextToken"] = str(start + size)
    return out


TAG_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
