"""Principals as AWS tools see them: IAM user ARNs (``arn:aws:iam::<account>:user/<name>``).

AWS puts the caller's ARN where a person is named (an execution's ``triggerDetail`` after
StartPipelineExecution, ``lastUpdatedBy`` of an approval), so Conveyor does the same with
the account id it answers as. The name is the principal's; there is no IAM behind it.
"""

from __future__ import annotations

import re

from engine.arns import PARTITION, Account
from engine.auth.context import SYSTEM, current

# IAM's user-name characters without the comma (lists of names in tags are comma- or
# space-separated, so a name holding either could not be listed).
PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9+=.@_-]{1,64}$")
_USER_ARN = re.compile(r"^arn:[a-z-]+:iam::(?P<account>[0-9]{12}):user/(?P<name>[^/]+)$")


def principal_arn(name: str, account: Account) -> str:
    """``arn:aws:iam::111122223333:user/alice``"""
    return f"arn:{PARTITION}:iam::{account.account_id}:user/{name}"


def principal_name(arn: str | None) -> str | None:
    """The user name in an IAM user ARN, or None if ``arn`` is not one."""
    found = _USER_ARN.match(arn or "")
    return found["name"] if found else None


def caller_arn(account: Account) -> str | None:
    """The ARN of the principal the current request is served for; None outside requests
    (Conveyor's own moves are nobody's)."""
    principal = current().principal
    return None if principal == SYSTEM.principal else principal_arn(principal.name, account)
