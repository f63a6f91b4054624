"""Checking a definition: shape, then the structural rules CodePipeline enforces.

Validation happens once, here, and reports every problem with its path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from engine import awsmodel, rules
from engine.action_types import described
from engine.arns import DEFAULT_REGION
from engine.definition.model import (
    ARTIFACT_RE,
    IGNORED_TOP_LEVEL,
    MAX_ACTIONS_PER_STAGE,
    MAX_STAGES,
    NAME_RE,
    NAMESPACE_RE,
    NOT_YET_SUPPORTED,
    VARIABLE_RE,
    ActionDeclaration,
    PipelineDeclaration,
    StageDeclaration,
)
from engine.definition.triggers import check_triggers
from engine.errors import DefinitionError, Problem
from engine.rules import Conditions, FailureConditions
from engine.variables import (
    CODEPIPELINE,
    PIPELINE_VARIABLES,
    RESERVED_NAMESPACES,
    has_reference,
    references,
)
from providers.base import ActionTypeId, Category
from providers.registry import Registry


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


def validate(
    raw: Mapping[str, Any], registry: Registry, *, region: str = DEFAULT_REGION
) -> PipelineDeclaration:
    """Return the declaration, or raise DefinitionError listing every problem with its path.

    Two phases: shape (pydantic: types, required fields) then rules (``check``). Every
    problem of the first phase is reported at once; rules run only on a well-typed
    declaration, so a definition with type errors reports those first.
    """
    decl, limits = _shape(raw)
    problems = _merged(check(decl, registry, region=region), limits)
    if problems:
        raise DefinitionError(problems)
    return decl


def check_shape(raw: Mapping[str, Any]) -> PipelineDeclaration:
    """The first phase of :func:`validate` alone: what a client can judge without the
    server's registry. The client runs it before sending, so a key botocore's model lacks
    is refused with its path in Conveyor's words, not as botocore's ParamValidationError."""
    decl, limits = _shape(raw)
    if limits:
        raise DefinitionError(limits)
    return decl


def _shape(raw: Mapping[str, Any]) -> tuple[PipelineDeclaration, list[Problem]]:
    raw = {k: v for k, v in raw.items() if k not in IGNORED_TOP_LEVEL}
    limits, oversized = model_limits(raw)
    if oversized:
        raise DefinitionError(limits)  # far too many items: judge nothing more of it
    try:
        decl = PipelineDeclaration.model_validate(raw)
    except PydanticValidationError as exc:
        raise DefinitionError(_merged(_pydantic_problems(exc), limits)) from None
    return decl, limits


# A list or map this much longer than its limit is not judged item by item (a million
# wrong stages would be a million problems to find, hold and word).
MAX_JUDGED_ITEMS = 1000
MAX_LIMIT_PROBLEMS = 100


def model_limits(raw: Mapping[str, Any]) -> tuple[list[Problem], bool]:
    """The lengths, counts, ranges and patterns botocore's model sets on each member of the
    declaration (configuration values of at most 1000 characters, ...), and the counts
    CodePipeline's quotas set (:data:`engine.awsmodel.COUNT_LIMITS`); and whether a list or
    map is over :data:`MAX_JUDGED_ITEMS`, too long to judge further."""
    found = awsmodel.Findings(keep=MAX_LIMIT_PROBLEMS)
    awsmodel.check(awsmodel.shape("PipelineDeclaration"), raw, "", found, awsmodel.LIMITS_ONLY)
    out = []
    oversized = False
    for f in found.items:
        rule = f.rule.replace("Member must ", "must ", 1)
        if isinstance(f.value, list | Mapping) and rule.startswith("must have length <= "):
            cap = rule.removeprefix("must have length <= ")
            rule = f"at most {cap} items, got {len(f.value)}"
            oversized = oversized or len(f.value) > MAX_JUDGED_ITEMS
        out.append(Problem(f.path, rule))
    return out, oversized


def _merged(problems: list[Problem], limits: list[Problem]) -> list[Problem]:
    """``problems``, then each limit broken at a path they do not already name."""
    named = {p.path for p in problems}
    return problems + [p for p in limits if p.path not in named]


NAME_RULE = "must be 1-100 characters of A-Za-z0-9.@-_"


def check(
    decl: PipelineDeclaration, registry: Registry, *, region: str = DEFAULT_REGION
) -> list[Problem]:
    """The structural rules CodePipeline enforces, as a pure function."""
    problems: list[Problem] = []

    def add(path: str, msg: str) -> None:
        problems.append(Problem(path, msg))

    if not NAME_RE.match(decl.name):
        add("name", NAME_RULE)
    if decl.artifact_store is not None and not decl.artifact_store.location:
        add("artifactStore.location", "required")
    if len(decl.stages) < 2:
        problems.append(
            Problem(
                "stages",
                "a pipeline must contain at least two stages",
                f"Pipeline has only {len(decl.stages)} stage(s). "
                "There should be a minimum of 2 stages in a pipeline",
            )
        )
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
            for made in action.output_artifacts:
                made_by.setdefault(made.name, (si, action.run_order))
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
        problems.extend(
            _check_stage_conditions(stage, si, sp, parallel=decl.execution_mode == "PARALLEL")
        )
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
            for oi, out in enumerate(action.output_artifacts):
                op = f"{ap}.outputArtifacts[{oi}].name"
                if not ARTIFACT_RE.match(out.name):
                    add(op, "must be 1-100 characters of a-zA-Z0-9_-")
                if out.name in outputs_seen:
                    add(op, f"output artifact name '{out.name}' is already used")
                outputs_seen.add(out.name)
            for key, value in action.configuration.items():
                for ref_ns, ref_var in references(value):
                    msg = _reference_problem(
                        ref_ns,
                        ref_var,
                        variable_names,
                        ns_by.get(ref_ns),
                        visible(ns_by.get(ref_ns), si, action.run_order),
                    )
                    if msg:
                        add(f"{ap}.configuration.{key}", msg)
            problems.extend(_check_provider(action, ap, registry, region))
            problems.extend(_check_compute(action, ap, registry, decl.pipeline_type))
    problems.extend(_check_triggers(decl))
    return problems


def _reference_problem(
    ns: str, var: str, variables: set[str], at: tuple[int, int] | None, is_visible: bool
) -> str | None:
    """Why ``#{ns.var}`` could never resolve where it is used, or None if it can."""
    if ns == CODEPIPELINE:
        return None
    if ns == PIPELINE_VARIABLES:
        return None if var in variables else f"pipeline variable '{var}' is not declared"
    if is_visible:
        return None
    if at is None:
        return f"namespace '{ns}' is not set by any action"
    return f"namespace '{ns}' is set only by a later action"


def _check_triggers(decl: PipelineDeclaration) -> list[Problem]:
    """A trigger names the git source action it starts from; its filters must be usable."""
    first = decl.stages[0].actions if decl.stages else []
    sources = {a.name: (a.action_type_id.owner, a.action_type_id.provider) for a in first}
    return check_triggers(decl.triggers, sources)


# Action types CodePipeline offers (its action structure reference), so that a definition
# written for AWS learns that a type is missing here, not that it does not exist.
CODEPIPELINE_ACTION_TYPES = frozenset(
    (category, owner, provider, "1")
    for category, owner, providers in (
        ("Source", "AWS", ("S3", "CodeCommit", "ECR", "CodeStarSourceConnection")),
        ("Source", "ThirdParty", ("GitHub",)),
        ("Build", "AWS", ("CodeBuild", "ECRBuildAndPublish", "InspectorScan")),
        ("Build", "Custom", ("Jenkins",)),
        ("Test", "AWS", ("CodeBuild", "DeviceFarm")),
        ("Test", "Custom", ("Jenkins",)),
        (
            "Deploy",
            "AWS",
            (
                "S3",
                "CloudFormation",
                "CloudFormationStackSet",
                "CloudFormationStackInstances",
                "CodeDeploy",
                "CodeDeployToECS",
                "ECS",
                "ElasticBeanstalk",
                "AppConfig",
                "OpsWorks",
                "ServiceCatalog",
                "AlexaSkillsKit",
                "EC2",
                "EKS",
                "Lambda",
            ),
        ),
        ("Approval", "AWS", ("Manual",)),
        ("Invoke", "AWS", ("Lambda", "StepFunctions", "CodePipeline", "InspectorScan")),
    )
    for provider in providers
)


def aws_region_name(region: str) -> str:
    """A region as AWS's messages name it: ``us-east-1`` is ``US_EAST_1``."""
    return region.upper().replace("-", "_")


def _missing_provider(action_type: ActionTypeId, registry: Registry) -> str:
    """Why no provider runs ``action_type``, and what the person could write instead."""
    same_category = sorted(
        str(p.action_type) for p in registry if p.action_type.category == action_type.category
    )
    runs = (
        f"; {action_type.category.value} action types this installation runs: "
        + ", ".join(same_category)
        if same_category
        else ""
    )
    if action_type.key() in CODEPIPELINE_ACTION_TYPES:
        return f"action type {action_type} is not supported by this installation yet{runs}"
    if action_type.owner == "Custom":
        return (
            f"custom action type {action_type} does not exist: create it with "
            "CreateCustomActionType first"
        )
    namesakes = [
        str(p.action_type)
        for p in registry
        if p.action_type.category == action_type.category
        and p.action_type.provider.lower() == action_type.provider.lower()
    ]
    if namesakes:
        return f"unknown action type {action_type}; did you mean {' or '.join(namesakes)}?"
    return f"unknown action type {action_type}{runs}"


def _check_provider(
    action: ActionDeclaration, ap: str, registry: Registry, region: str
) -> list[Problem]:
    provider = registry.get(action.action_type_id)
    if provider is None:
        t = action.action_type_id
        return [
            Problem(
                f"{ap}.actionTypeId",
                _missing_provider(t, registry),
                f"{described(t.owner, t.category.value, t.provider, t.version)} in action "
                f"'{action.name}' is not available in region '{aws_region_name(region)}'",
            )
        ]
    problems: list[Problem] = []
    try:
        provider.Config.model_validate(action.configuration)
    except PydanticValidationError as exc:
        # A value holding ``#{ns.var}`` is only known at run time; judge it then, not here.
        deferred = {
            f"{ap}.configuration.{k}" for k, v in action.configuration.items() if has_reference(v)
        }
        problems.extend(
            _missing_configuration(p, action.name)
            for p in _pydantic_problems(exc, prefix=f"{ap}.configuration")
            if p.path not in deferred
        )
    n_in, n_out = len(action.input_artifacts), len(action.output_artifacts)
    ins = _range(provider.min_inputs, provider.max_inputs)
    outs = _range(provider.min_outputs, provider.max_outputs)
    if not provider.min_inputs <= n_in <= provider.max_inputs:
        fewer = (
            f"Action {action.name} declares {n_in} input artifacts which is less than the "
            f"minimum count ({provider.min_inputs})"
            if n_in < provider.min_inputs
            else None
        )
        problems.append(
            Problem(
                f"{ap}.inputArtifacts",
                f"{action.action_type_id} takes {ins} input artifacts, got {n_in}",
                fewer,
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


def _missing_configuration(problem: Problem, action: str) -> Problem:
    """A required configuration key that is missing, with AWS's sentence for it."""
    if problem.message != "required":
        return problem
    key = problem.path.rsplit(".", 1)[-1]
    return replace(
        problem,
        aws_message=f"Action configuration for action '{action}' is missing required "
        f"configuration '{key}'",
    )


# CodePipeline's limits on a compute action's declaration (ActionDeclaration, OutputArtifact).
MAX_OUTPUT_VARIABLES = 15
MAX_OUTPUT_VARIABLE_LENGTH = 128
MAX_OUTPUT_FILES = 10
MAX_OUTPUT_FILE_LENGTH = 128
MAX_ENVIRONMENT_VARIABLES = 10
MAX_ENVIRONMENT_VALUE_LENGTH = 2000
ENV_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,128}$")


def _check_compute(
    action: ActionDeclaration, ap: str, registry: Registry, pipeline_type: str
) -> list[Problem]:
    """``commands``, ``outputVariables``, ``environmentVariables`` and output ``files``
    belong to compute actions (Commands) only, within CodePipeline's limits."""
    provider = registry.get(action.action_type_id)
    compute = provider is not None and provider.takes_commands
    problems: list[Problem] = []
    given = {
        "commands": action.commands is not None,
        "outputVariables": action.output_variables is not None,
        "environmentVariables": action.environment_variables is not None,
    }
    given.update(
        {
            f"outputArtifacts[{i}].files": o.files is not None
            for i, o in enumerate(action.output_artifacts)
        }
    )
    if not compute:
        for key, present in given.items():
            if present:
                problems.append(
                    Problem(f"{ap}.{key}", f"only Commands actions take {key.split('.')[-1]}")
                )
        return problems
    what = f"a {action.action_type_id.provider} action"
    if pipeline_type != "V2":
        problems.append(Problem(f"{ap}.actionTypeId", f"{what} needs pipelineType V2"))
    problems.extend(rules.check_commands(action.commands, f"{ap}.commands", what))
    names = action.output_variables
    if names is not None:
        vp = f"{ap}.outputVariables"
        if not 1 <= len(names) <= MAX_OUTPUT_VARIABLES:
            problems.append(Problem(vp, f"1 to {MAX_OUTPUT_VARIABLES} names, got {len(names)}"))
        for i, name in enumerate(names):
            if not name.isidentifier() or len(name) > MAX_OUTPUT_VARIABLE_LENGTH:
                problems.append(
                    Problem(
                        f"{vp}[{i}]",
                        f"{name!r} is not a shell variable name of at most "
                        f"{MAX_OUTPUT_VARIABLE_LENGTH} characters",
                    )
                )
    for oi, out in enumerate(action.output_artifacts):
        if out.files is None:
            continue
        fp = f"{ap}.outputArtifacts[{oi}].files"
        if not 1 <= len(out.files) <= MAX_OUTPUT_FILES:
            problems.append(Problem(fp, f"1 to {MAX_OUTPUT_FILES} paths, got {len(out.files)}"))
        for i, path in enumerate(out.files):
            if not 1 <= len(path) <= MAX_OUTPUT_FILE_LENGTH:
                problems.append(Problem(f"{fp}[{i}]", f"1 to {MAX_OUTPUT_FILE_LENGTH} characters"))
    env = action.environment_variables
    if env is not None:
        ep = f"{ap}.environmentVariables"
        if not 1 <= len(env) <= MAX_ENVIRONMENT_VARIABLES:
            problems.append(
                Problem(ep, f"1 to {MAX_ENVIRONMENT_VARIABLES} variables, got {len(env)}")
            )
        for i, var in enumerate(env):
            if not ENV_NAME_RE.match(var.name):
                problems.append(
                    Problem(f"{ep}[{i}].name", "must be 1-128 characters of A-Za-z0-9_")
                )
            if not 1 <= len(var.value) <= MAX_ENVIRONMENT_VALUE_LENGTH:
                problems.append(
                    Problem(f"{ep}[{i}].value", f"1 to {MAX_ENVIRONMENT_VALUE_LENGTH} characters")
                )
    return problems


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _check_stage_conditions(
    stage: StageDeclaration, si: int, sp: str, *, parallel: bool
) -> list[Problem]:
    problems: list[Problem] = []
    blocks: list[tuple[rules.ConditionKind, Conditions | FailureConditions | None, str]] = [
        (rules.ConditionKind.BEFORE_ENTRY, stage.before_entry, "beforeEntry"),
        (rules.ConditionKind.ON_SUCCESS, stage.on_success, "onSuccess"),
        (rules.ConditionKind.ON_FAILURE, stage.on_failure, "onFailure"),
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
        elif parallel and "ROLLBACK" in results:
            problems.append(
                Problem(f"{sp}.{key}", "a PARALLEL pipeline cannot roll back (no ROLLBACK results)")
            )
    return problems
