"""PutWebhook's webhooks (CodePipeline's "V1" webhooks), the pure part: checking a
definition, authenticating a delivery by the webhook's own scheme, and its filters.

- ``GITHUB_HMAC``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` keyed
  with the webhook's SecretToken (GitHub's older ``X-Hub-Signature: sha1=...`` is accepted
  too), compared in constant time.
- ``IP``: the sender's address must be inside AllowedIPRange (a CIDR). The address is the
  peer of the connection: a proxy in front of Conveyor makes every delivery come from the
  proxy, so use GITHUB_HMAC behind one.
- ``UNAUTHENTICATED``: anyone who knows the url.

Filters: every ``jsonPath`` (JSONPath, evaluated with jsonpath-ng) must select a value equal
to ``matchEquals``, in which ``{Key}`` stands for the target action's configuration value
``Key`` (``refs/heads/{Branch}``), resolved from the pipeline as it is when the delivery
arrives. A filter without ``matchEquals`` only needs its path to select something.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jsonpath_ng.jsonpath import JSONPath
from jsonpath_ng.parser import parse

from engine.definition import PipelineDeclaration
from engine.definition.model import ActionDeclaration
from engine.errors import (
    InvalidWebhookAuthenticationParametersError,
    InvalidWebhookFilterPatternError,
    ValidationError,
)

GITHUB_HMAC = "GITHUB_HMAC"
IP = "IP"
UNAUTHENTICATED = "UNAUTHENTICATED"
REDACTED = "<redacted>"

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@lru_cache(maxsize=512)
def compiled(path: str) -> JSONPath:
    """A JSONPath parsed once (jsonpath-ng builds a parser per call: slow-ish)."""
    return parse(path)


def target_action(decl: PipelineDeclaration, name: str) -> ActionDeclaration | None:
    """The source action of the first stage called ``name``, the only kind a webhook
    can target (as on AWS)."""
    for action in decl.stages[0].actions if decl.stages else []:
        if action.name == name and action.action_type_id.category.value == "Source":
            return action
    return None


def check_definition(definition: Mapping[str, Any], decl: PipelineDeclaration) -> None:
    """Everything botocore's model cannot say about a WebhookDefinition, against the target
    pipeline as it is now."""
    action = target_action(decl, str(definition["targetAction"]))
    if action is None:
        raise ValidationError(
            f"targetAction '{definition['targetAction']}' is not a source action of the first "
            f"stage of pipeline '{decl.name}'"
        )
    _check_authentication(definition["authentication"], definition["authenticationConfiguration"])
    for i, rule in enumerate(definition["filters"]):
        where = f"filters[{i}]"
        try:
            compiled(rule["jsonPath"])
        except Exception as exc:  # jsonpath-ng raises several types for a bad expression
            raise InvalidWebhookFilterPatternError(
                f"{where}.jsonPath {rule['jsonPath']!r} is not a valid JsonPath: {exc}"
            ) from None
        for key in _PLACEHOLDER.findall(rule.get("matchEquals") or ""):
            if key not in action.configuration:
                raise InvalidWebhookFilterPatternError(
                    f"{where}.matchEquals: {{{key}}} names no configuration property of action "
                    f"'{action.name}' (it has: {', '.join(sorted(action.configuration)) or 'none'})"
                )


def _check_authentication(kind: str, config: Mapping[str, Any]) -> None:
    secret, cidr = config.get("SecretToken"), config.get("AllowedIPRange")
    if kind == GITHUB_HMAC:
        if not secret or cidr:
            raise InvalidWebhookAuthenticationParametersError(
                "GITHUB_HMAC authentication takes SecretToken (and only SecretToken)"
            )
    elif kind == IP:
        if not cidr or secret:
            raise InvalidWebhookAuthenticationParametersError(
                "IP authentication takes AllowedIPRange (and only AllowedIPRange)"
            )
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidWebhookAuthenticationParametersError(
                f"AllowedIPRange {cidr!r} is not a valid CIDR range"
            ) from None


def redacted(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition as the API shows it: a SecretToken is never returned (AWS redacts it)."""
    out = dict(definition)
    auth = dict(out.get("authenticationConfiguration") or {})
    if "SecretToken" in auth:
        auth["SecretToken"] = REDACTED
    out["authenticationConfiguration"] = auth
    return out


def authenticate(
    definition: Mapping[str, Any], headers: Mapping[str, str], body: bytes, peer: str | None
) -> str | None:
    """None if the delivery is authentic by the webhook's scheme, else why not (never
    saying anything about the secret). ``headers`` have lower-case names."""
    kind = definition["authentication"]
    config = definition.get("authenticationConfiguration") or {}
    if kind == GITHUB_HMAC:
        key = str(config.get("SecretToken", "")).encode()
        for header, algo in (("x-hub-signature-256", "sha256"), ("x-hub-signature", "sha1")):
            given = headers.get(header)
            if given is None:
                continue
            want = f"{algo}=" + hmac.new(key, body, getattr(hashlib, algo)).hexdigest()
            if hmac.compare_digest(given.strip().encode(), want.encode()):
                return None
            return f"{header} does not match the body signed with the webhook's secret"
        return "missing X-Hub-Signature-256 (GITHUB_HMAC webhook)"
    if kind == IP:
        if peer is None:
            return "the sender's address is unknown"
        try:
            inside = ipaddress.ip_address(peer) in ipaddress.ip_network(
                str(config.get("AllowedIPRange")), strict=False
            )
        except ValueError:
            inside = False
        return None if inside else f"{peer} is outside the webhook's AllowedIPRange"
    return None


def matches(
    definition: Mapping[str, Any], payload: Any, configuration: Mapping[str, str]
) -> str | None:
    """None if every filter matches ``payload``, else which one did not and why."""
    for i, rule in enumerate(definition.get("filters") or []):
        try:
            found = [_text(m.value) for m in compiled(rule["jsonPath"]).find(payload)]
        except RecursionError:
            return f"filters[{i}]: the body is nested too deeply to evaluate {rule['jsonPath']}"
        want = rule.get("matchEquals")
        if want is None:
            if not found:
                return f"filters[{i}]: {rule['jsonPath']} selects nothing"
            continue
        try:
            expected = _PLACEHOLDER.sub(lambda m: configuration[m.group(1)], want)
        except KeyError as exc:
            return f"filters[{i}]: the target action has no configuration property {exc}"
        if expected not in found:
            return f"filters[{i}]: {rule['jsonPath']} is not {expected!r}"
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
