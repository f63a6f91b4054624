"""Authorization: may this principal call this operation? Refusals in AWS's words.

AWS answers ``AccessDeniedException`` with ``User: <user arn> is not authorized to perform:
codepipeline:<Operation>`` and, when the request names one, `` on resource: <arn>``. The
resource is read from the request with botocore's model (members of shape PipelineName, a
declaration's name, a ResourceArn), so it follows the operation, not a list kept here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.arns import Account
from engine.auth.principals import Principal
from engine.auth.sigv4 import AccessDeniedError
from engine.awsmodel import service_model

MAX_SHOWN = 256


def user_arn(principal: Principal, account: Account) -> str:
    return f"arn:aws:iam::{account.account_id}:user/{principal.name}"


def resource_arn(operation: str, body: Mapping[str, Any] | None, account: Account) -> str | None:
    """The ARN of the pipeline (or tagged resource) the request names, if any."""
    if not isinstance(body, Mapping):
        return None
    model = service_model()
    if operation not in model.operation_names:
        return None
    shape = model.operation_model(operation).input_shape
    for member, member_shape in shape.members.items() if shape else ():
        value = body.get(member)
        if member_shape.name == "PipelineDeclaration" and isinstance(value, Mapping):
            value, member_shape = value.get("name"), model.shape_for("PipelineName")
        if not isinstance(value, str) or not value:
            continue
        if member_shape.name == "PipelineName":
            return account.pipeline_arn(value[:MAX_SHOWN])
        if member_shape.name == "ResourceArn":
            return value[:MAX_SHOWN]
    return None


def authorize(
    principal: Principal,
    operation: str,
    body: Mapping[str, Any] | None,
    account: Account,
) -> None:
    """AccessDeniedError unless ``principal``'s roles allow ``operation``."""
    if principal.may_call(operation):
        return
    message = (
        f"User: {user_arn(principal, account)} is not authorized to perform: "
        f"codepipeline:{operation}"
    )
    resource = resource_arn(operation, body, account)
    if resource:
        message += f" on resource: {resource}"
    raise AccessDeniedError(message)
