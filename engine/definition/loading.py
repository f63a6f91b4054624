"""Loading a definition: text or data in any accepted shape, to the declaration dict.

Loaded from CodePipeline JSON (bare, or wrapped as ``aws codepipeline get-pipeline`` prints
it), the same in YAML, or the Properties of a CloudFormation ``AWS::CodePipeline::Pipeline``.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from engine import awsmodel
from engine.errors import DefinitionError, Problem

PIPELINE_RESOURCE_TYPE = "AWS::CodePipeline::Pipeline"
# Every property of AWS::CodePipeline::Pipeline in CloudFormation's resource reference.
# Nine are PipelineDeclaration members (ArtifactStores among them, which the checks refuse
# as not supported yet). The other three have no place in the declaration CreatePipeline
# takes, so CloudFormation carries them out with calls of its own, and so does Conveyor's
# client (:class:`Template`, ``engine.client``): DisableInboundStageTransitions,
# Tags and RestartExecutionOnUpdate. Any other property is refused, naming it.
CFN_DECLARATION_PROPERTIES = (
    "ArtifactStore",
    "ArtifactStores",
    "ExecutionMode",
    "Name",
    "PipelineType",
    "RoleArn",
    "Stages",
    "Triggers",
    "Variables",
)
CFN_TEMPLATE_PROPERTIES = ("DisableInboundStageTransitions", "RestartExecutionOnUpdate", "Tags")
CFN_PROPERTIES = frozenset(CFN_DECLARATION_PROPERTIES + CFN_TEMPLATE_PROPERTIES)
# The same three once converted to camelCase, as they sit in a loaded declaration dict.
TEMPLATE_KEYS = ("disableInboundStageTransitions", "restartExecutionOnUpdate", "tags")
# A definition is small: its text, and its YAML once aliases are expanded, are held to these.
MAX_DEFINITION_BYTES = 1024 * 1024
MAX_YAML_NODES = 100_000


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


class _TooLarge(yaml.YAMLError):
    pass


class GuardedLoader(yaml.SafeLoader):
    """SafeLoader that, like CloudFormation, rejects a key repeated in one mapping, for any
    YAML Conveyor reads from a user (definitions, the principals file).

    Aliases are counted at their expanded size before anything is built: a document that
    would expand past :data:`MAX_YAML_NODES` nodes ("billion laughs": a few hundred bytes
    of nested aliases standing for gigabytes once copied) or that refers to itself is
    refused (a ``yaml.YAMLError``), so no later step (conversion, validation, JSON) can be
    made to copy it. Deep nesting still raises RecursionError: callers turn it into theirs."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, MAX_YAML_NODES)
        return node

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


class _CfnLoader(GuardedLoader):
    """:class:`GuardedLoader` that understands CloudFormation's short intrinsic tags
    (``!Ref X``)."""


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


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in ``root`` with every alias expanded (each shared node counted once per use,
    by memo, so this is linear in the distinct nodes); raises _TooLarge past ``limit``."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_.discard(key)
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > limit:
                raise _TooLarge(f"the YAML expands to more than {limit} nodes (alias expansion)")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in open_:
            raise _TooLarge("the YAML refers to itself through an alias")
        open_.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_:
                raise _TooLarge("the YAML refers to itself through an alias")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_document(text: str, *, source: str = "<definition>") -> dict[str, Any]:
    """Parse JSON or YAML text into the raw camelCase ``PipelineDeclaration`` dict."""
    data: Any
    if len(text) > MAX_DEFINITION_BYTES:
        msg = f"{source}: {len(text)} characters; a definition may have {MAX_DEFINITION_BYTES}"
        raise DefinitionError([Problem("", msg)])
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        raise DefinitionError([Problem("", f"{source}: {exc}")]) from None
    except RecursionError:
        raise DefinitionError([Problem("", f"{source}: nested too deeply")]) from None
    except (json.JSONDecodeError, ValueError):
        try:
            data = yaml.load(text, Loader=_CfnLoader)
        except _TooLarge as exc:
            raise DefinitionError([Problem("", f"{source}: refused: {exc}")]) from None
        except RecursionError:
            raise DefinitionError([Problem("", f"{source}: nested too deeply")]) from None
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
        problems = [
            Problem(
                f"Properties.{key}",
                f"not a property of {PIPELINE_RESOURCE_TYPE} that Conveyor knows; its "
                f"properties are {', '.join(sorted(CFN_PROPERTIES))}",
            )
            for key in out
            if key not in CFN_PROPERTIES
        ]
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


@dataclass(frozen=True)
class Template:
    """A loaded definition: the declaration CreatePipeline takes, and what a CloudFormation
    template says beside it, which the client carries out with calls of its own."""

    declaration: dict[str, Any]
    # (stage, reason): DisableStageTransition(Inbound) for each, right after CreatePipeline.
    disabled_transitions: tuple[tuple[str, str], ...] = ()
    # CreatePipeline's ``tags`` (TagResource on an update).
    tags: tuple[dict[str, str], ...] = ()
    # StartPipelineExecution after an UpdatePipeline.
    restart_on_update: bool = False


def split_template(declaration: Mapping[str, Any]) -> Template:
    """Take the template-only members out of a loaded declaration, checked as the calls
    that will carry them out check them, so a bad one fails before anything is created."""
    decl = {k: v for k, v in declaration.items() if k not in TEMPLATE_KEYS}
    problems: list[Problem] = []
    stages = {s.get("name") for s in decl.get("stages") or [] if isinstance(s, Mapping)}
    transitions: list[tuple[str, str]] = []
    raw_transitions = declaration.get("disableInboundStageTransitions") or []
    if not isinstance(raw_transitions, list):
        raw_transitions = [raw_transitions]
    found = awsmodel.Findings()
    disable = awsmodel.shape("DisableStageTransitionInput")
    for i, item in enumerate(raw_transitions):
        path = f"DisableInboundStageTransitions[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"stageName", "reason"}:
            problems.append(Problem(path, "must be an object of StageName and Reason"))
            continue
        for member, key in (("stageName", "StageName"), ("reason", "Reason")):
            if member not in item:
                problems.append(Problem(f"{path}.{key}", "required"))
            else:
                awsmodel.check(disable.members[member], item[member], f"{path}.{key}", found)
        name, reason = item.get("stageName"), item.get("reason")
        if isinstance(name, str) and name not in stages:
            problems.append(Problem(f"{path}.StageName", f"no stage is named {name!r}"))
        if isinstance(name, str) and isinstance(reason, str):
            transitions.append((name, reason))
    raw_tags = declaration.get("tags") or []
    if isinstance(raw_tags, list):  # CloudFormation takes `Value: true` for "true"; so do we
        raw_tags = [
            {k: _cfn_scalar(v, "Tags", problems) for k, v in t.items()}
            if isinstance(t, Mapping)
            else t
            for t in raw_tags
        ]
    awsmodel.check(awsmodel.shape("TagList"), raw_tags, "Tags", found)
    restart = declaration.get("restartExecutionOnUpdate", False)
    if restart not in (True, False, "true", "false"):
        problems.append(Problem("RestartExecutionOnUpdate", "must be true or false"))
    problems += [
        Problem(f.path, f.rule if f.value is None else f"{awsmodel.shown(f.value)}: {f.rule}")
        for f in found.items
    ]
    if problems:
        raise DefinitionError(problems)
    return Template(
        declaration=decl,
        disabled_transitions=tuple(transitions),
        tags=tuple(dict(t) for t in raw_tags),
        restart_on_update=restart in (True, "true"),
    )
