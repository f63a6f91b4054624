"""CreateCustomActionType, DeleteCustomActionType, ListActionTypes, GetActionType and
UpdateActionType (see :mod:`engine.action_types` for how each kind of type comes to exist).

Requests are already checked against botocore's model; what is left are the rules it
cannot say, with the errors it declares for each operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import action_types as at
from engine.api.tags import tag_action_type
from engine.errors import ActionTypeNotFoundError, RequestFailedError, ValidationError
from engine.service import Service
from engine.tags import tag_list, tags_of

Body = dict[str, Any]


def _builtins(svc: Service) -> dict[str, at.ActionTypeRecord]:
    records = (at.builtin_record(p) for p in svc.registry)
    return {r.key: r for r in records}


def create_custom_action_type(svc: Service, body: Body) -> Body:
    tags = tags_of(body.get("tags") or [])  # checked before anything is created
    record = at.custom_from_request(body)
    if record.key in _builtins(svc):
        raise ValidationError(
            f"{at.described(record.owner, record.category.value, record.provider, record.version)}"
            " is one of Conveyor's built-in providers; give the custom action type another "
            "provider name or version"
        )
    created = svc.store.action_types.create(record)
    tag_action_type(svc, created.key, tags)
    return {"actionType": at.action_type_shape(created), "tags": tag_list(tags)}


def delete_custom_action_type(svc: Service, body: Body) -> Body:
    key = at.type_key(at.CUSTOM, body["category"], body["provider"], body["version"])
    what = at.described(at.CUSTOM, body["category"], body["provider"], body["version"])
    svc.store.action_types.delete(key, f"{what} does not exist")
    return {}


def list_action_types(svc: Service, body: Body) -> Body:
    from engine.api.operations import _page

    region = body.get("regionFilter")
    if region and region != svc.store.account.region:
        return {"actionTypes": []}  # this installation answers for one region
    records = {**_builtins(svc), **{r.key: r for r in svc.store.action_types.live()}}
    owner = body.get("actionOwnerFilter")
    rows = [records[k] for k in sorted(records) if owner in (None, records[k].owner)]
    page, more = _page(rows, body)
    return {"actionTypes": [at.action_type_shape(r) for r in page], **more}


def _find(svc: Service, ident: Body) -> at.ActionTypeRecord | None:
    key = at.type_key(ident["owner"], ident["category"], ident["provider"], ident["version"])
    if ident["owner"] == "AWS":
        return _builtins(svc).get(key)
    record = svc.store.action_types.get(key)
    return None if record is None or record.deleted else record


def _not_found(ident: Body) -> ActionTypeNotFoundError:
    what = at.described(ident["owner"], ident["category"], ident["provider"], ident["version"])
    return ActionTypeNotFoundError(f"{what} does not exist")


def get_action_type(svc: Service, body: Body) -> Body:
    record = _find(svc, body)
    if record is None:
        raise _not_found(body)
    return {"actionType": at.declaration_shape(record, svc.store.account.account_id)}


def update_action_type(svc: Service, body: Body) -> Body:
    decl = body["actionType"]
    ident = decl["id"]
    builtin = at.type_key(ident["owner"], ident["category"], ident["provider"], ident["version"])
    if ident["owner"] == "AWS" or builtin in _builtins(svc):
        if ident["owner"] == "AWS" and _find(svc, ident) is None:
            raise _not_found(ident)
        raise RequestFailedError(
            f"{at.described(**ident)} is one of Conveyor's built-in providers; it cannot be "
            "changed with UpdateActionType"
        )
    svc.store.action_types.put(at.from_declaration(decl))
    return {}


ACTION_TYPE_OPERATIONS: dict[str, Callable[[Service, Body], Body]] = {
    "CreateCustomActionType": create_custom_action_type,
    "DeleteCustomActionType": delete_custom_action_type,
    "ListActionTypes": list_action_types,
    "GetActionType": get_action_type,
    "UpdateActionType": update_action_type,
}
