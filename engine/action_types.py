"""Action types as CodePipeline describes them: Conveyor's built-in providers, and the
job-worker types people declare (pure: the store keeps the records, the API renders them).

Two ways a job-worker type comes to exist, as on AWS:

* **Custom** (owner ``Custom``): CreateCustomActionType, by anyone allowed to define
  pipelines; DeleteCustomActionType marks it deleted. As AWS documents, a deleted type comes
  back only when created again with exactly the same definition; any other definition needs
  a version that was never used.
* **ThirdParty** (owner ``ThirdParty``): on AWS a partner asks AWS to publish its action
  type; here an administrator registers or changes it with UpdateActionType (an
  ``ActionTypeDeclaration`` with a ``JobWorker`` executor). GetActionType reads it back.

Types owned by ``AWS`` are Conveyor's built-in providers; they cannot be created or changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from engine.errors import RequestFailedError, ValidationError
from providers.base import ActionTypeId, Category, Provider
from providers.job_worker import JobWorkerType, PropertySpec

MAX_PROPERTIES = 10
CUSTOM = "Custom"
THIRD_PARTY = "ThirdParty"


def type_key(owner: str, category: str, provider: str, version: str) -> str:
    """``Owner/Category/Provider/Version``: the action type's name in ARNs and Redis."""
    return f"{owner}/{category}/{provider}/{version}"


def described(owner: str, category: str, provider: str, version: str) -> str:
    """An action type the way AWS's messages name one."""
    return (
        f"ActionType (Category: '{category}', Provider: '{provider}', "
        f"Version: '{version}', Owner: '{owner}')"
    )


def property_shape(prop: PropertySpec) -> dict[str, Any]:
    """An ``ActionConfigurationProperty`` (``queryable`` only when true, as AWS shows it)."""
    out = {k: v for k, v in asdict(prop).items() if v is not None}
    if not prop.queryable:
        out.pop("queryable")
    return out


_PROPERTIES: TypeAdapter[list[PropertySpec]] = TypeAdapter(list[PropertySpec])


class Counts(BaseModel):
    model_config = ConfigDict(frozen=True)

    # AWS's member names; the request's limits (0-5) are botocore's model's to check.
    minimumCount: int
    maximumCount: int


class ActionTypeRecord(BaseModel):
    """A job-worker action type as stored. ``declaration`` keeps what UpdateActionType sent
    that has no place in CreateCustomActionType's shape (executor, permissions, urls...)."""

    owner: str
    category: Category
    provider: str
    version: str
    settings: dict[str, str] = Field(default_factory=dict)
    properties: list[PropertySpec] = Field(default_factory=list)
    inputs: Counts
    outputs: Counts
    description: str | None = None
    executor: dict[str, Any] | None = None
    permissions: dict[str, Any] | None = None
    deleted: bool = False

    @property
    def key(self) -> str:
        return type_key(self.owner, self.category.value, self.provider, self.version)

    def same_definition(self, other: ActionTypeRecord) -> bool:
        return self.model_dump(exclude={"deleted"}) == other.model_dump(exclude={"deleted"})

    def job_worker_type(self) -> JobWorkerType:
        return JobWorkerType(
            action_type=ActionTypeId(
                category=self.category,
                owner=self.owner,
                provider=self.provider,
                version=self.version,
            ),
            properties=tuple(self.properties),
            min_inputs=self.inputs.minimumCount,
            max_inputs=self.inputs.maximumCount,
            min_outputs=self.outputs.minimumCount,
            max_outputs=self.outputs.maximumCount,
        )


def _check_properties(properties: Sequence[PropertySpec], where: str) -> None:
    if len(properties) > MAX_PROPERTIES:
        raise ValidationError(
            f"{where}: at most {MAX_PROPERTIES} properties, got {len(properties)}"
        )
    names: set[str] = set()
    queryable = [p.name for p in properties if p.queryable]
    for i, prop in enumerate(properties):
        if prop.name in names:
            raise ValidationError(f"{where}[{i}].name: '{prop.name}' is declared more than once")
        names.add(prop.name)
        if prop.queryable and (not prop.required or prop.secret):
            raise ValidationError(
                f"{where}[{i}]: the queryable property '{prop.name}' must be required and not "
                "secret"
            )
    if len(queryable) > 1:
        raise ValidationError(
            f"{where}: an action type can have at most one queryable property, got "
            f"{', '.join(queryable)}"
        )


def _check_counts(counts: Counts, where: str) -> None:
    if counts.minimumCount > counts.maximumCount:
        raise ValidationError(
            f"{where}: minimumCount {counts.minimumCount} is more than maximumCount "
            f"{counts.maximumCount}"
        )


def custom_from_request(body: Mapping[str, Any]) -> ActionTypeRecord:
    """CreateCustomActionType's request (already checked against botocore's model) as a
    record, with the rules the model cannot say."""
    properties = _PROPERTIES.validate_python(body.get("configurationProperties") or [])
    _check_properties(properties, "configurationProperties")
    record = ActionTypeRecord(
        owner=CUSTOM,
        category=Category(body["category"]),
        provider=body["provider"],
        version=body["version"],
        settings=dict(body.get("settings") or {}),
        properties=properties,
        inputs=Counts.model_validate(body["inputArtifactDetails"]),
        outputs=Counts.model_validate(body["outputArtifactDetails"]),
    )
    _check_counts(record.inputs, "inputArtifactDetails")
    _check_counts(record.outputs, "outputArtifactDetails")
    return record


def from_declaration(decl: Mapping[str, Any]) -> ActionTypeRecord:
    """UpdateActionType's ``ActionTypeDeclaration`` as a record."""
    ident = decl["id"]
    executor = dict(decl["executor"])
    if executor.get("type") != "JobWorker":
        raise RequestFailedError(
            f"{described(ident['owner'], ident['category'], ident['provider'], ident['version'])}"
            f": executor type {executor.get('type')} is not supported by Conveyor; declare a "
            "JobWorker executor (job workers poll for the type's jobs with PollForThirdPartyJobs)"
        )
    properties = [
        PropertySpec(
            name=p["name"],
            required=not p["optional"],
            key=p["key"],
            secret=p["noEcho"],
            queryable=bool(p.get("queryable", False)),
            description=p.get("description"),
        )
        for p in decl.get("properties") or []
    ]
    _check_properties(properties, "actionType.properties")
    urls = decl.get("urls") or {}
    settings = {
        ("thirdPartyConfigurationUrl" if k == "configurationUrl" else k): v for k, v in urls.items()
    }
    record = ActionTypeRecord(
        owner=ident["owner"],
        category=Category(ident["category"]),
        provider=ident["provider"],
        version=ident["version"],
        settings=settings,
        properties=properties,
        inputs=Counts.model_validate(decl["inputArtifactDetails"]),
        outputs=Counts.model_validate(decl["outputArtifactDetails"]),
        description=decl.get("description"),
        executor=executor,
        permissions=decl.get("permissions"),
    )
    _check_counts(record.inputs, "actionType.inputArtifactDetails")
    _check_counts(record.outputs, "actionType.outputArtifactDetails")
    return record


# ---------------------------------------------------------------------------- shapes


def action_type_shape(record: ActionTypeRecord) -> dict[str, Any]:
    """CodePipeline's ``ActionType`` (CreateCustomActionType, ListActionTypes)."""
    out: dict[str, Any] = {
        "id": {
            "category": record.category.value,
            "owner": record.owner,
            "provider": record.provider,
            "version": record.version,
        },
        "actionConfigurationProperties": [property_shape(p) for p in record.properties],
        "inputArtifactDetails": record.inputs.model_dump(),
        "outputArtifactDetails": record.outputs.model_dump(),
    }
    if record.settings:
        out["settings"] = dict(record.settings)
    return out


def declaration_shape(record: ActionTypeRecord, account_id: str) -> dict[str, Any]:
    """CodePipeline's ``ActionTypeDeclaration`` (GetActionType)."""
    out: dict[str, Any] = {
        "executor": record.executor
        or {
            "type": "JobWorker",
            "configuration": {"jobWorkerExecutorConfiguration": {"pollingAccounts": [account_id]}},
        },
        "id": {
            "category": record.category.value,
            "owner": record.owner,
            "provider": record.provider,
            "version": record.version,
        },
        "inputArtifactDetails": record.inputs.model_dump(),
        "outputArtifactDetails": record.outputs.model_dump(),
        "properties": [
            {
                "name": p.name,
                "optional": not p.required,
                "key": p.key,
                "noEcho": p.secret,
                "queryable": p.queryable,
                **({"description": p.description} if p.description else {}),
            }
            for p in record.properties
        ],
    }
    if record.description:
        out["description"] = record.description
    if record.permissions:
        out["permissions"] = record.permissions
    urls = {
        ("configurationUrl" if k == "thirdPartyConfigurationUrl" else k): v
        for k, v in record.settings.items()
    }
    if urls:
        out["urls"] = urls
    return out


def builtin_record(provider: type[Provider]) -> ActionTypeRecord:
    """A built-in provider described as an action type: its configuration model's fields
    are its properties (required or not), its artifact limits its counts."""
    t = provider.action_type
    properties = [
        PropertySpec(
            name=field.alias or name,
            required=field.is_required(),
            key=field.is_required(),
            secret=False,
            description=field.description,
        )
        for name, field in provider.Config.model_fields.items()
    ][:MAX_PROPERTIES]
    return ActionTypeRecord(
        owner=t.owner,
        category=t.category,
        provider=t.provider,
        version=t.version,
        properties=properties,
        inputs=Counts(minimumCount=provider.min_inputs, maximumCount=provider.max_inputs),
        outputs=Counts(minimumCount=provider.min_outputs, maximumCount=provider.max_outputs),
    )
