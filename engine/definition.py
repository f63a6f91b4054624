"""Pipeline definitions: CodePipeline's ``PipelineDeclaration`` as pydantic models.

Loaded from CodePipeline JSON (bare, or wrapped as ``aws codepipeline get-pipeline`` prints
it), the same in YAML, or the Properties of a CloudFormation ``AWS::CodePipeline::Pipeline``.
Validation happens once, here, and reports every problem with its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from engine import rules
from engine.errors import DefinitionError, Problem
from engine.rules import Conditions, FailureConditions
from providers.base import ActionTypeId, Category
from providers.registry import Registry

NAME_RE = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")
ARTIFACT_RE = re.compile(r"^[a-zA-Z0-9_\-]{1,100}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9@\-_]{1,100}$")
VARIABLE_RE = re.compile(r"^[A-Za-z0-9@\-_]{1,128}$")
MAX_ACTIONS_PER_STAGE = 50
MAX_STAGES = 50
PIPELINE_RESOURCE_TYPE = "AWS::CodePipeline::Pipeline"


# CodePipeline fields Conveyor does not run yet: rejected by name rather than dropped, since
# silently ignoring e.g. a stage's onFailure would change what the pipeline does.
NOT_YET_SUPPORTED = frozenset(
    {
        "artifactStores",
        "blockers",
        "commands",
        "outputVariables",
        "disableInboundStageTransitions",
    }
)
# Fields with no effect on how a pipeline runs here; accepted so exported definitions load.
IGNORED_TOP_LEVEL = frozenset({"tags", "restartExecutionOnUpdate", "metadata"})


class _Model(BaseModel):
    # Unknown keys are errors: a typo such as ``runorder`` must not pass unnoticed.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ArtifactRefDecl(_Model):
    name: str


class ActionDeclaration(_Model):
    name: str
    action_type_id: ActionTypeId = Field(alias="actionTypeId")
    run_order: int = Field(default=1, alias="runOrder")
    configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[ArtifactRefDecl] = Field(default_factory=list, alias="inputArtifacts")
    output_artifacts: list[ArtifactRefDecl] = Field(default_factory=list, alias="outputArtifacts")
    role_arn: str | None = Field(default=None, alias="roleArn")
    region: str | None = None
    namespace: str | None = None
    timeout_in_minutes: int | None = Field(default=None, alias="timeoutInMinutes")


class StageDeclaration(_Model):
    name: str
    actions: list[ActionDeclaration]
    before_entry: Conditions | None = Field(default=None, alias="beforeEntry")
    on_success: Conditions | None = Field(default=None, alias="onSuccess")
    on_failure: FailureConditions | None = Field(default=None, alias="onFailure")

    def groups(self) -> list[list[int]]:
        """Action indexes grouped by runOrder, groups in ascending runOrder."""
        orders = sorted({a.run_order for a in self.actions})
        return [[i for i, a in enumerate(self.actions) if a.run_order == o] for o in orders]


class ArtifactStore(_Model):
    type: Literal["S3"] = "S3"
    location: str


class PipelineVariable(_Model):
    name: str
    default_value: str | None = Field(default=None, alias="defaultValue")
    description: str | None = None


class PipelineDeclaration(_Model):
    name: str
    role_arn: str | None = Field(default=None, alias="roleArn")
    artifact_store: ArtifactStore | None = Field(default=None, alias="artifactStore")
    stages: list[StageDeclaration]
    version: int | None = None
    pipeline_type: Literal["V1", "V2"] = Field(default="V2", alias="pipelineType")
    execution_mode: Literal["SUPERSEDED", "QUEUED", "PARALLEL"] = Field(
        default="SUPERSEDED", alias="executionMode"
    )
    variables: list[PipelineVariable] = Field(default_factory=list)
    triggers: list[dict[str, Any]] = Field(default_factory=list)

    def stage(self, name: str) -> StageDeclaration | None:
        return next((s for s in self.stages if s.name == name), None)

    def to_aws(self) -> dict[str, Any]:
        """The camelCase JSON CodePipeline's GetPipeline returns."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------- loading


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key would silently win over the first; say so instead."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"duplicate key '{key}'")
        out[key] = value
    return out


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short intrinsic tags (``!Ref X``) and,
    like CloudFormation, rejects a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def parse_document(text: str, *, source: str = "<definition>") -> dict[str, Any]:
    """Parse JSON or YAML text into the raw camelCase ``PipelineDeclaration`` dict."""
    data: Any
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        raise DefinitionError([Problem("", f"{source}: {exc}")]) from None
    except json.JSONDecodeError:
        try:
            data = yaml.load(text, Loader=_CfnLoader)
        except yaml.YAMLError as exc:
            msg = f"{source}: not valid JSON or YAML: {exc}"
            raise DefinitionError([Problem("", msg)]) from None
    return normalize(data, source=source)


def normalize(data: Any, *, source: str = "<definition>") -> dict[str, Any]:
    """Unwrap get-pipeline output and CloudFormation templates into a declaration dict.

    Accepted shapes: a bare ``PipelineDeclaration``; ``{"pipeline": ..., "metadata": ...}``;
    a CloudFormation template with exactly one ``AWS::CodePipeline::Pipeline`` resource; one
    such resource (``{Type, Properties}``); or its bare (PascalCase) ``Properties``.
    """
    if not isinstance(data, Mapping):
        got = "nothing" if data is None else type(data).__name__
        raise DefinitionError(
            [Problem("", f"{source}: expected an object at the top level, got {got}")]
        )
    out: dict[str, Any] = dict(data)
    logical_id: str | None = None
    if isinstance(out.get("Resources"), Mapping):
        pipelines = [
            (str(lid), r)
            for lid, r in out["Resources"].items()
            if isinstance(r, Mapping) and r.get("Type") == PIPELINE_RESOURCE_TYPE
        ]
        if len(pipelines) != 1:
            msg = f"expected exactly one {PIPELINE_RESOURCE_TYPE}, found {len(pipelines)}"
            raise DefinitionError([Problem("Resources", msg)])
        logical_id, resource = pipelines[0]
        out = dict(resource)
    if out.get("Type") == PIPELINE_RESOURCE_TYPE:
        props = out.get("Properties")
        if not isinstance(props, Mapping):
            raise DefinitionError([Problem("Properties", "required, an object")])
        out = dict(props)
        # CloudFormation names an unnamed pipeline itself; the logical ID is the stable part.
        if logical_id is not None and "Name" not in out:
            out["Name"] = logical_id
    if isinstance(out.get("pipeline"), Mapping):
        out = dict(out["pipeline"])  # aws codepipeline get-pipeline output
    if "Stages" in out or "Name" in out:
        problems: list[Problem] = []
        converted = _from_cloudformation(out, "", problems)
        if problems:
            raise DefinitionError(problems)
        assert isinstance(converted, dict)
        out = converted
    return out


# CloudFormation labels the snippet's stage with its property type; it is not data.
_CFN_TYPE_LABELS = {"StageDeclaration", "ActionDeclaration"}


def _camel(key: str) -> str:
    return key[:1].lower() + key[1:]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _from_cloudformation(node: Any, path: str, problems: list[Problem]) -> Any:
    """PascalCase CloudFormation keys to CodePipeline's camelCase.

    Configuration keys keep their case (they belong to the provider). Intrinsic functions
    are resolved as far as they can be without a stack; the rest are reported.
    """
    if _is_intrinsic(node):
        return _intrinsic(node, path, problems)
    if isinstance(node, list):
        items: list[Any] = []
        for i, item in enumerate(node):
            items.append(_from_cloudformation(_unwrap_labelled(item), f"{path}[{i}]", problems))
        return items
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "Type" and _is_label(value):
            continue
        new = _camel(str(key))
        sub = _join(path, new)
        if new == "configuration" and isinstance(value, Mapping):
            # The provider's keys: their case is theirs, their values strings.
            out[new] = {k: _cfn_scalar(v, f"{sub}.{k}", problems) for k, v in value.items()}
        elif new == "actionTypeId" and isinstance(value, Mapping):
            out[new] = {
                _camel(k): _cfn_scalar(v, f"{sub}.{_camel(k)}", problems) for k, v in value.items()
            }
        else:
            out[new] = _from_cloudformation(value, sub, problems)
    return out


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and value in _CFN_TYPE_LABELS


def _unwrap_labelled(item: Any) -> Any:
    """``- ApprovalStage: {Type: StageDeclaration, Name: ...}`` is the stage it wraps."""
    if isinstance(item, Mapping) and len(item) == 1:
        (inner,) = item.values()
        if isinstance(inner, Mapping) and _is_label(inner.get("Type")):
            return inner
    return item


def _cfn_scalar(value: Any, path: str, problems: list[Problem]) -> Any:
    """CloudFormation stringifies scalar property values; CodePipeline wants strings."""
    if _is_intrinsic(value):
        return _intrinsic(value, path, problems)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _is_intrinsic(node: Any) -> bool:
    if not isinstance(node, Mapping) or len(node) != 1:
        return False
    (key,) = node.keys()
    return key == "Ref" or (isinstance(key, str) and key.startswith("Fn::"))


def _intrinsic(node: Mapping[str, Any], path: str, problems: list[Problem]) -> Any:
    """``!Ref Topic`` has no value outside a stack; keep the logical name it names.

    ``Fn::GetAtt`` becomes ``Resource.Attribute``, ``Fn::Sub`` its template, ``Fn::Join``
    the join of its (resolved) parts. Anything else cannot be evaluated here.
    """
    ((fn, arg),) = node.items()
    if fn == "Ref" and isinstance(arg, str):
        return arg
    if fn == "Fn::GetAtt":
        if isinstance(arg, list) and all(isinstance(a, str) for a in arg):
            return ".".join(arg)
        if isinstance(arg, str):
            return arg
    if fn == "Fn::Sub":
        if isinstance(arg, str):
            return arg
        if isinstance(arg, list) and arg and isinstance(arg[0], str):
            return arg[0]
    if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
        sep, parts = arg
        if isinstance(sep, str) and isinstance(parts, list):
            before = len(problems)
            resolved = [_cfn_scalar(p, path, problems) for p in parts]
            if all(isinstance(p, str) for p in resolved):
                return sep.join(resolved)
            if len(problems) > before:
                return None  # a part already said why
    problems.append(Problem(path, f"CloudFormation {fn} cannot be resolved outside a stack"))
    return None


def load_file(path: str | Path, registry: Registry) -> PipelineDeclaration:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DefinitionError([Problem("", f"cannot read {p}: {exc.strerror}")]) from exc
    return validate(parse_document(text, source=str(p)), registry)


# ---------------------------------------------------------------------------- validation


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _pydantic_problems(exc: PydanticValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = _path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required"
        elif err["type"] == "extra_forbidden":
            last = err["loc"][-1] if err["loc"] else ""
            msg = "not supported by Conveyor yet" if last in NOT_YET_SUPPORTED else "unknown key"
        elif err["type"] == "string_type":
            msg = f"must be a string, got {_kind(err['input'])}"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        problems.append(Problem(path, msg))
    return problems


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        text = "true" if value else "false"
        return f'boolean {text} (write "{text}")'
    if isinstance(value, int | float):
        return f'number {value} (write "{value}")'
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def validate(raw: Mapping[str, Any], registry: Registry) -> PipelineDeclaration:
    """Return the declaration, or raise DefinitionError listing every problem with its path.

    Two phases: shape (pydantic: types, required fields) then rules (``check``). Every
    problem of the first phase is reported at once; rules run only on a well-typed
    declaration, so a definition with type errors reports those first.
    """
    raw = {k: v for k, v in raw.items() if k not in IGNORED_TOP_LEVEL}
    try:
        decl = PipelineDeclaration.model_validate(raw)
    except PydanticValidationError as exc:
        raise DefinitionError(_pydantic_problems(exc)) from None
    problems = check(decl, registry)
    if problems:
        raise DefinitionError(problems)
    return decl


NAME_RULE = "must be 1-100 characters of A-Za-z0-9.@-_"
RESERVED_NAMESPACES = ("codepipeline", "variables")
VARIABLE_REF_RE = re.compile(r"#\{([A-Za-z0-9@\-_]+)\.([A-Za-z0-9@\-_.]+)\}")


def check(decl: PipelineDeclaration, registry: Registry) -> list[Problem]:
    """The structural rules CodePipeline enforces, as a pure function."""
    problems: list[Problem] = []

    def add(path: str, msg: str) -> None:
        problems.append(Problem(path, msg))

    if not NAME_RE.match(decl.name):
        add("name", NAME_RULE)
    if decl.artifact_store is not None and not decl.artifact_store.location:
        add("artifactStore.location", "required")
    if len(decl.stages) < 2:
        add("stages", "a pipeline must contain at least two stages")
    if len(decl.stages) > MAX_STAGES:
        add("stages", f"at most {MAX_STAGES} stages")
    if decl.pipeline_type == "V1":
        if decl.variables:
            add("variables", "pipeline variables need pipelineType V2")
        if decl.triggers:
            add("triggers", "triggers need pipelineType V2")
        if decl.execution_mode != "SUPERSEDED":
            add("executionMode", f"{decl.execution_mode} needs pipelineType V2")
    variable_names: set[str] = set()
    for i, var in enumerate(decl.variables):
        if not VARIABLE_RE.match(var.name):
            add(f"variables[{i}].name", "must be 1-128 characters of A-Za-z0-9@-_")
        if var.name in variable_names:
            add(f"variables[{i}].name", f"duplicate variable name '{var.name}'")
        variable_names.add(var.name)

    # Every artifact and namespace with where it comes from, to tell "later" from "nowhere".
    made_by: dict[str, tuple[int, int]] = {}  # artifact -> (stage index, runOrder)
    ns_by: dict[str, tuple[int, int]] = {}  # namespace -> (stage index, runOrder)
    for si, stage in enumerate(decl.stages):
        for action in stage.actions:
            for art in action.output_artifacts:
                made_by.setdefault(art.name, (si, action.run_order))
            if action.namespace is not None:
                ns_by.setdefault(action.namespace, (si, action.run_order))

    def visible(at: tuple[int, int] | None, si: int, run_order: int) -> bool:
        return at is not None and (at[0] < si or (at[0] == si and at[1] < run_order))

    stage_names: set[str] = set()
    outputs_seen: set[str] = set()
    namespaces_seen: set[str] = set()
    for si, stage in enumerate(decl.stages):
        sp = f"stages[{si}]"
        if not NAME_RE.match(stage.name):
            add(f"{sp}.name", NAME_RULE)
        if stage.name in stage_names:
            add(f"{sp}.name", f"duplicate stage name '{stage.name}'")
        stage_names.add(stage.name)
        if not stage.actions:
            add(f"{sp}.actions", "a stage must contain at least one action")
        if len(stage.actions) > MAX_ACTIONS_PER_STAGE:
            add(f"{sp}.actions", f"at most {MAX_ACTIONS_PER_STAGE} actions per stage")
        problems.extend(_check_stage_conditions(stage, si, sp))
        action_names: set[str] = set()
        for ai, action in enumerate(stage.actions):
            ap = f"{sp}.actions[{ai}]"
            if not NAME_RE.match(action.name):
                add(f"{ap}.name", NAME_RULE)
            if action.name in action_names:
                add(f"{ap}.name", f"duplicate action name '{action.name}' in stage '{stage.name}'")
            action_names.add(action.name)
            if not 1 <= action.run_order <= 999:
                add(f"{ap}.runOrder", "must be between 1 and 999")
            is_source = action.action_type_id.category == Category.SOURCE
            if si == 0 and not is_source:
                add(
                    f"{ap}.actionTypeId.category", "the first stage may contain only Source actions"
                )
            if si > 0 and is_source:
                add(
                    f"{ap}.actionTypeId.category",
                    "Source actions may appear only in the first stage",
                )
            timeout = action.timeout_in_minutes
            if timeout is not None and not 5 <= timeout <= 86400:
                add(f"{ap}.timeoutInMinutes", "must be between 5 and 86400")
            if action.namespace is not None:
                ns = action.namespace
                if not NAMESPACE_RE.match(ns):
                    add(f"{ap}.namespace", "must be 1-100 characters of A-Za-z0-9@-_")
                elif ns in RESERVED_NAMESPACES:
                    add(f"{ap}.namespace", f"namespace '{ns}' is reserved")
                elif ns in namespaces_seen:
                    add(f"{ap}.namespace", f"namespace '{ns}' is already in use")
                namespaces_seen.add(ns)
            inputs_seen: set[str] = set()
            for ii, art in enumerate(action.input_artifacts):
                ip = f"{ap}.inputArtifacts[{ii}].name"
                if art.name in inputs_seen:
                    add(ip, f"artifact '{art.name}' is already an input of this action")
                inputs_seen.add(art.name)
                if not visible(made_by.get(art.name), si, action.run_order):
                    where = "a later action" if art.name in made_by else "no action"
                    add(
                        ip,
                        f"artifact '{art.name}' is not an output of an earlier action "
                        f"(it is produced by {where})",
                    )
            for oi, art in enumerate(action.output_artifacts):
                op = f"{ap}.outputArtifacts[{oi}].name"
                if not ARTIFACT_RE.match(art.name):
                    add(op, "must be 1-100 characters of a-zA-Z0-9_-")
                if art.name in outputs_seen:
                    add(op, f"output artifact name '{art.name}' is already used")
                outputs_seen.add(art.name)
            for key, value in action.configuration.items():
                for m in VARIABLE_REF_RE.finditer(value):
                    msg = _reference_problem(
                        m.group(1),
                        m.group(2),
                        variable_names,
                        ns_by.get(m.group(1)),
                        visible(ns_by.get(m.group(1)), si, action.run_order),
                    )
                    if msg:
                        add(f"{ap}.configuration.{key}", msg)
            problems.extend(_check_provider(action, ap, registry))
    problems.extend(_check_triggers(decl))
    return problems


def _reference_problem(
    ns: str, var: str, variables: set[str], at: tuple[int, int] | None, is_visible: bool
) -> str | None:
    """Why ``#{ns.var}`` could never resolve where it is used, or None if it can."""
    if ns == "codepipeline":
        return None
    if ns == "variables":
        return None if var in variables else f"pipeline variable '{var}' is not declared"
    if is_visible:
        return None
    if at is None:
        return f"namespace '{ns}' is not set by any action"
    return f"namespace '{ns}' is set only by a later action"


def _check_triggers(decl: PipelineDeclaration) -> list[Problem]:
    """A trigger names the source action it starts from; it must be one."""
    sources = {a.name for a in decl.stages[0].actions} if decl.stages else set()
    problems: list[Problem] = []
    for i, trigger in enumerate(decl.triggers):
        git = trigger.get("gitConfiguration")
        name = git.get("sourceActionName") if isinstance(git, Mapping) else None
        if isinstance(name, str) and name not in sources:
            problems.append(
                Problem(
                    f"triggers[{i}].gitConfiguration.sourceActionName",
                    f"'{name}' is not an action of the first stage",
                )
            )
    return problems


def _check_provider(action: ActionDeclaration, ap: str, registry: Registry) -> list[Problem]:
    provider = registry.get(action.action_type_id)
    if provider is None:
        return [Problem(f"{ap}.actionTypeId", f"unknown action type {action.action_type_id}")]
    problems: list[Problem] = []
    try:
        provider.Config.model_validate(action.configuration)
    except PydanticValidationError as exc:
        # A value holding ``#{ns.var}`` is only known at run time; judge it then, not here.
        deferred = {f"{ap}.configuration.{k}" for k, v in action.configuration.items() if "#{" in v}
        problems.extend(
            p
            for p in _pydantic_problems(exc, prefix=f"{ap}.configuration")
            if p.path not in deferred
        )
    n_in, n_out = len(action.input_artifacts), len(action.output_artifacts)
    ins = _range(provider.min_inputs, provider.max_inputs)
    outs = _range(provider.min_outputs, provider.max_outputs)
    if not provider.min_inputs <= n_in <= provider.max_inputs:
        problems.append(
            Problem(
                f"{ap}.inputArtifacts",
                f"{action.action_type_id} takes {ins} input artifacts, got {n_in}",
            )
        )
    if not provider.min_outputs <= n_out <= provider.max_outputs:
        problems.append(
            Problem(
                f"{ap}.outputArtifacts",
                f"{action.action_type_id} takes {outs} output artifacts, got {n_out}",
            )
        )
    return problems


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _check_stage_conditions(stage: StageDeclaration, si: int, sp: str) -> list[Problem]:
    problems: list[Problem] = []
    blocks: list[tuple[rules.ConditionKind, Conditions | FailureConditions | None, str]] = [
        ("beforeEntry", stage.before_entry, "beforeEntry"),
        ("onSuccess", stage.on_success, "onSuccess"),
        ("onFailure", stage.on_failure, "onFailure"),
    ]
    for kind, block, key in blocks:
        if block is None:
            continue
        problems.extend(rules.check_conditions(block, kind, f"{sp}.{key}"))
        results = {c.result for c in block.conditions}
        if isinstance(block, FailureConditions):
            results.add(block.result)
        if si == 0 and "ROLLBACK" in results:
            problems.append(Problem(f"{sp}.{key}", "the source stage cannot be rolled back"))
    return problems
