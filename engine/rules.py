"""Stage conditions: CodePipeline's ``beforeEntry``, ``onSuccess`` and ``onFailure`` rules.

A condition is a result (what to do) and up to five rules (what to check). Every rule must
succeed for the condition to be met; if any fails, the condition fails and its result
engages: beforeEntry FAIL fails the stage and SKIP skips it, onSuccess ROLLBACK or FAIL,
onFailure ROLLBACK or RETRY.

This module is pure. It holds the declaration models, the ListRuleTypes catalogue,
definition-time checks (``check_conditions``) and the evaluation of the rules that need
nothing but a clock and the execution's variables (``evaluate``). The Commands rule runs
shell commands and the LambdaInvoke rule a function, so they run on workers
(``providers.commands_rule``, ``providers.lambda_invoke``) through the queue
``worker_queue`` names; ``needs_worker`` tells the two kinds apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from engine.cron import CronError, in_window, load_zone, next_window_start, parse_cron
from engine.errors import Problem
from engine.keys import CODEBUILD_RULE_QUEUE, COMMANDS_RULE_QUEUE, LAMBDA_RULE_QUEUE
from engine.records import Declaration
from engine.variables import Lookup, has_reference, substitute
from providers.base import ProviderConfig

__all__ = [
    "ALLOWED_RESULTS",
    "NOT_RUNNABLE",
    "RULE_TYPES",
    "CloudWatchAlarmConfig",
    "CodeBuildRuleConfig",
    "CommandsConfig",
    "Condition",
    "ConditionKind",
    "Conditions",
    "CronError",
    "DeploymentWindowConfig",
    "FailureConditions",
    "InputArtifactRef",
    "LambdaInvokeConfig",
    "RetryConfiguration",
    "RuleDeclaration",
    "RuleOutcome",
    "RuleTypeId",
    "VariableCheckConfig",
    "check_conditions",
    "evaluate",
    "in_window",
    "needs_worker",
    "next_window_start",
    "rule_type",
    "worker_queue",
]


class ConditionKind(StrEnum):
    """Where a stage's conditions sit; the values are the declaration's keys."""

    BEFORE_ENTRY = "beforeEntry"
    ON_SUCCESS = "onSuccess"
    ON_FAILURE = "onFailure"

    @property
    def api_name(self) -> str:
        """The ConditionType name the API uses (OverrideStageCondition)."""
        return _API_NAMES[self]

    @classmethod
    def from_api(cls, name: str) -> ConditionKind | None:
        """The kind an API ConditionType names, or None for a name that is not one."""
        return next((k for k, v in _API_NAMES.items() if v == name), None)


_API_NAMES = {
    ConditionKind.BEFORE_ENTRY: "BEFORE_ENTRY",
    ConditionKind.ON_SUCCESS: "ON_SUCCESS",
    ConditionKind.ON_FAILURE: "ON_FAILURE",
}

ResultName = Literal["ROLLBACK", "FAIL", "RETRY", "SKIP"]

# Which results each kind of condition may engage (AWS's stage-conditions guide).
ALLOWED_RESULTS: dict[ConditionKind, frozenset[str]] = {
    ConditionKind.BEFORE_ENTRY: frozenset({"FAIL", "SKIP"}),
    ConditionKind.ON_SUCCESS: frozenset({"ROLLBACK", "FAIL"}),
    ConditionKind.ON_FAILURE: frozenset({"ROLLBACK", "RETRY"}),
}
MAX_RULES_PER_CONDITION = 5
MAX_COMMANDS = 50
MAX_COMMAND_LENGTH = 1000
RULE_NAME_RE = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")


_Model = Declaration


# ---------------------------------------------------------------------------- declarations


class RuleTypeId(_Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    category: Literal["Rule"]
    # Optional in CodePipeline's model; "AWS" and "1" are the only values it has.
    owner: Literal["AWS"] = "AWS"
    provider: str
    version: str = "1"

    def __str__(self) -> str:
        return f"{self.category}/{self.owner}/{self.provider}/{self.version}"


class InputArtifactRef(_Model):
    name: str


class RuleDeclaration(_Model):
    name: str
    rule_type_id: RuleTypeId = Field(alias="ruleTypeId")
    configuration: dict[str, str] = Field(default_factory=dict)
    input_artifacts: list[InputArtifactRef] = Field(default_factory=list, alias="inputArtifacts")
    # Only the Commands rule takes commands; None (not []) so to_aws() omits the key.
    commands: list[str] | None = None
    region: str | None = None
    role_arn: str | None = Field(default=None, alias="roleArn")
    timeout_in_minutes: int | None = Field(default=None, alias="timeoutInMinutes")


class Condition(_Model):
    # Optional in CodePipeline's model: an onFailure condition may take the block's result.
    result: ResultName | None = None
    rules: list[RuleDeclaration] = Field(default_factory=list)


class Conditions(_Model):
    """A stage's ``beforeEntry`` or ``onSuccess``: exactly one condition, as in CodePipeline."""

    conditions: list[Condition]


class RetryConfiguration(_Model):
    retry_mode: Literal["FAILED_ACTIONS", "ALL_ACTIONS"] = Field(
        default="FAILED_ACTIONS", alias="retryMode"
    )


class FailureConditions(_Model):
    """A stage's ``onFailure``: a result on its own (automatic rollback or retry of a failed
    stage) or a condition whose rules decide whether its result engages."""

    result: Literal["RETRY", "ROLLBACK"] | None = None
    retry_configuration: RetryConfiguration | None = Field(default=None, alias="retryConfiguration")
    conditions: list[Condition] = Field(default_factory=list)


# ---------------------------------------------------------------------------- configurations


def _deferred(value: str) -> bool:
    """A value holding ``#{ns.var}`` is known only at run time: judge it then, not now."""
    return has_reference(value)


def _java_regex(pattern: str) -> re.Pattern[str]:
    """Compile a CodePipeline (Java) regex with Python's engine.

    The two agree on what pipelines use; the one spelling that differs and is common,
    named groups ``(?<name>...)``, is translated.
    """
    return re.compile(re.sub(r"\(\?<(?=[A-Za-z])", "(?P<", pattern))


class VariableCheckConfig(ProviderConfig):
    Variable: str = Field(min_length=1)
    Value: str = Field(min_length=1)
    Operator: Literal["EQ", "CONTAINS", "MATCHES", "NE"]

    @model_validator(mode="after")
    def _regex_compiles(self) -> VariableCheckConfig:
        if self.Operator == "MATCHES" and not _deferred(self.Value):
            try:
                _java_regex(self.Value)
            except re.error as exc:
                raise ValueError(f"Value is not a valid regular expression: {exc}") from None
        return self


class DeploymentWindowConfig(ProviderConfig):
    Cron: str
    TimeZone: str = "UTC"

    @field_validator("Cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not _deferred(value):
            parse_cron(value)  # CronError is a ValueError: pydantic reports its message
        return value

    @field_validator("TimeZone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _deferred(value):
            load_zone(value)
        return value


class LambdaInvokeConfig(ProviderConfig):
    FunctionName: str = Field(min_length=1, max_length=140)
    UserParameters: str | None = None


class CommandsConfig(ProviderConfig):
    """The Commands rule has no configuration keys; its shell commands are the rule's
    ``commands`` field."""


def _flag(value: Any) -> Any:
    """CodePipeline configuration values are strings; YAML authors write booleans."""
    return ("true" if value else "false") if isinstance(value, bool) else value


Flag = Annotated[Literal["true", "false"] | None, BeforeValidator(_flag)]


class CodeBuildRuleConfig(ProviderConfig):
    """The CodeBuild rule: configured like a CodeBuild action, run by the same buildspec
    runner on a build worker (which checks EnvironmentVariables fully when the rule runs)."""

    ProjectName: str = Field(min_length=1)
    PrimarySource: str | None = None
    EnvironmentVariables: str | None = None
    BatchEnabled: Flag = None
    CombineArtifacts: Flag = None

    @field_validator("EnvironmentVariables")
    @classmethod
    def _env_list(cls, value: str | None) -> str | None:
        if value is None or _deferred(value):
            return value
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"EnvironmentVariables is not valid JSON: {exc}") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError("EnvironmentVariables must be a JSON list of {name, value, type}")
        return value


class CloudWatchAlarmConfig(ProviderConfig):
    AlarmName: str = Field(min_length=1)
    AlarmStates: str | None = None
    WaitTime: str | None = None


# ---------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class _Property:
    name: str
    required: bool
    description: str
    key: bool = False
    queryable: bool = False


@dataclass(frozen=True)
class _RuleSpec:
    provider: str
    config: type[ProviderConfig]
    properties: tuple[_Property, ...]
    min_inputs: int
    max_inputs: int
    on_worker: bool = False
    # Where a worker-run rule is sent; whether the rule takes ``commands``.
    queue: str = COMMANDS_RULE_QUEUE
    takes_commands: bool = False
    # AWS documents it but this installation cannot run it: ListRuleTypes lists it, marked
    # so, and CreatePipeline refuses a definition that uses it.
    runnable: bool = True

    def describe(self) -> dict[str, Any]:
        """This rule type in botocore's ``RuleType`` shape (ListRuleTypes). The shape has no
        member for "not runnable here"; each configuration property's ``description`` (the
        one free-text member) starts with :data:`NOT_RUNNABLE` instead."""
        note = "" if self.runnable else NOT_RUNNABLE
        return {
            "id": {"category": "Rule", "owner": "AWS", "provider": self.provider, "version": "1"},
            "ruleConfigurationProperties": [
                {
                    "name": p.name,
                    "required": p.required,
                    "key": p.key,
                    "secret": False,
                    "queryable": p.queryable,
                    "description": note + p.description,
                    "type": "String",
                }
                for p in self.properties
            ],
            "inputArtifactDetails": {
                "minimumCount": self.min_inputs,
                "maximumCount": self.max_inputs,
            },
        }


# How ListRuleTypes marks a rule type AWS documents that this installation cannot run.
NOT_RUNNABLE = "Not supported by this installation (CreatePipeline refuses this rule type). "

_SPECS: dict[str, _RuleSpec] = {
    spec.provider: spec
    for spec in (
        _RuleSpec(
            "VariableCheck",
            VariableCheckConfig,
            (
                _Property(
                    "Variable",
                    True,
                    "The variable to check, such as #{SourceVariables.BranchName}.",
                    key=True,
                ),
                _Property(
                    "Value",
                    True,
                    "The value to compare the variable with (a regular expression for MATCHES).",
                ),
                _Property("Operator", True, "How to compare: EQ, CONTAINS, MATCHES or NE."),
            ),
            0,
            0,
        ),
        _RuleSpec(
            "DeploymentWindow",
            DeploymentWindowConfig,
            (
                _Property(
                    "Cron",
                    True,
                    "When deployment is allowed: a 6- or 7-field cron expression (seconds: *).",
                    key=True,
                ),
                _Property(
                    "TimeZone",
                    False,
                    "The time zone the cron expression is read in; UTC when not set.",
                ),
            ),
            0,
            0,
        ),
        # Conveyor's choice: AWS documents no artifact limits for this rule; 5 is its cap.
        _RuleSpec("Commands", CommandsConfig, (), 0, 5, on_worker=True, takes_commands=True),
        # Conveyor's choice again: up to 5 input artifacts, as for the Lambda invoke action.
        _RuleSpec(
            "LambdaInvoke",
            LambdaInvokeConfig,
            (
                _Property(
                    "FunctionName",
                    True,
                    "The function to call: a name mapped to a handler in the worker's settings.",
                    key=True,
                ),
                _Property(
                    "UserParameters",
                    False,
                    "A string handed to the function in its event, as for a Lambda action.",
                ),
            ),
            0,
            5,
            on_worker=True,
            queue=LAMBDA_RULE_QUEUE,
        ),
        _RuleSpec(
            "CodeBuild",
            CodeBuildRuleConfig,
            (
                _Property(
                    "ProjectName",
                    True,
                    "The build project: builds run the primary source's buildspec locally.",
                    key=True,
                ),
                _Property(
                    "PrimarySource",
                    False,
                    "The input artifact holding the buildspec; required with several inputs.",
                ),
                _Property(
                    "EnvironmentVariables",
                    False,
                    "A JSON list of {name, value, type} handed to the build, as for the action.",
                ),
                _Property(
                    "BatchEnabled", False, "Accepted; the local runner runs one build, not a batch."
                ),
                _Property("CombineArtifacts", False, "Accepted; the rule keeps no artifacts."),
            ),
            1,
            5,
            on_worker=True,
            queue=CODEBUILD_RULE_QUEUE,
        ),
        _RuleSpec(
            "CloudWatchAlarm",
            CloudWatchAlarmConfig,
            (
                _Property("AlarmName", True, "The CloudWatch alarm to watch.", key=True),
                _Property(
                    "AlarmStates", False, "The alarm states the rule watches for: ALARM, OK..."
                ),
                _Property("WaitTime", False, "Minutes to allow for a state change."),
            ),
            0,
            0,
            runnable=False,
        ),
    )
}

# The ListRuleTypes catalogue: ``{"ruleTypes": RULE_TYPES}`` is its response.
RULE_TYPES: list[dict[str, Any]] = [spec.describe() for spec in _SPECS.values()]


def rule_type(type_id: RuleTypeId) -> _RuleSpec | None:
    """The rule type Conveyor runs for this id, or None if it runs no such rule."""
    spec = _SPECS.get(type_id.provider)
    return spec if spec is not None and type_id.version == "1" else None


def needs_worker(rule: RuleDeclaration) -> bool:
    """Whether the rule runs on a worker (Commands, LambdaInvoke) rather than ``evaluate``."""
    spec = rule_type(rule.rule_type_id)
    return spec is not None and spec.on_worker


def worker_queue(provider: str) -> str:
    """The queue a worker-run rule of this provider goes to."""
    spec = _SPECS.get(provider)
    return spec.queue if spec is not None else COMMANDS_RULE_QUEUE


# ---------------------------------------------------------------------------- validation


def check_conditions(
    conditions: Conditions | FailureConditions,
    where: ConditionKind,
    path: str,
    *,
    allowed_results: Collection[str] | None = None,
) -> list[Problem]:
    """Every definition-time problem of one stage's ``where`` block at ``path``.

    ``allowed_results`` defaults to ``ALLOWED_RESULTS[where]``. Not checked here, because
    they need the whole pipeline: whether input artifacts and ``#{ns.var}`` references
    in configuration and commands are produced before the stage.
    """
    allowed = frozenset(ALLOWED_RESULTS[where] if allowed_results is None else allowed_results)
    problems: list[Problem] = []
    block_result: str | None = None
    if isinstance(conditions, FailureConditions):
        block_result = conditions.result
        if not conditions.conditions and conditions.result is None:
            problems.append(Problem(path, "onFailure needs a result or a condition"))
        retry = conditions.retry_configuration
        engaged = {block_result} | {c.result for c in conditions.conditions}
        if retry is not None and "RETRY" not in engaged:
            problems.append(Problem(f"{path}.retryConfiguration", "applies only with result RETRY"))
        if len(conditions.conditions) > 1:
            problems.append(Problem(f"{path}.conditions", "at most one condition"))
    elif len(conditions.conditions) != 1:
        problems.append(
            Problem(
                f"{path}.conditions",
                f"exactly one condition, got {len(conditions.conditions)}",
            )
        )
    for ci, condition in enumerate(conditions.conditions):
        cp = f"{path}.conditions[{ci}]"
        result = condition.result or block_result
        if result is None:
            problems.append(Problem(f"{cp}.result", "required"))
        elif result not in allowed:
            choices = " or ".join(sorted(allowed))
            problems.append(
                Problem(f"{cp}.result", f"{where} conditions take {choices}, not {result}")
            )
        problems.extend(_check_rules(condition, result, cp))
    return problems


def _check_rules(condition: Condition, result: str | None, cp: str) -> list[Problem]:
    problems: list[Problem] = []
    if not 1 <= len(condition.rules) <= MAX_RULES_PER_CONDITION:
        problems.append(
            Problem(
                f"{cp}.rules",
                f"a condition needs 1 to {MAX_RULES_PER_CONDITION} rules, "
                f"got {len(condition.rules)}",
            )
        )
    names: set[str] = set()
    for ri, rule in enumerate(condition.rules):
        rp = f"{cp}.rules[{ri}]"
        if not RULE_NAME_RE.match(rule.name):
            problems.append(Problem(f"{rp}.name", "must be 1-100 characters of A-Za-z0-9.@-_"))
        if rule.name in names:
            problems.append(
                Problem(f"{rp}.name", f"duplicate rule name '{rule.name}' in this condition")
            )
        names.add(rule.name)
        if result == "SKIP" and rule.rule_type_id.provider != "VariableCheck":
            problems.append(
                Problem(
                    f"{rp}.ruleTypeId.provider",
                    "a SKIP condition may use only VariableCheck rules",
                )
            )
        problems.extend(_check_rule(rule, rp))
    return problems


def _check_rule(rule: RuleDeclaration, rp: str) -> list[Problem]:
    spec = rule_type(rule.rule_type_id)
    runnable = ", ".join(sorted(p for p, s in _SPECS.items() if s.runnable))
    if spec is None:
        return [
            Problem(
                f"{rp}.ruleTypeId", f"unknown rule type {rule.rule_type_id} (known: {runnable})"
            )
        ]
    if not spec.runnable:
        return [
            Problem(
                f"{rp}.ruleTypeId",
                f"rule type {rule.rule_type_id} is not supported by this installation "
                f"(ListRuleTypes marks it so; rule types that run here: {runnable})",
            )
        ]
    problems: list[Problem] = []
    try:
        spec.config.model_validate(rule.configuration)
    except PydanticValidationError as exc:
        problems.extend(_config_problems(exc, f"{rp}.configuration"))
    if spec.takes_commands:
        problems.extend(check_commands(rule.commands, f"{rp}.commands"))
    elif rule.commands is not None:
        problems.append(Problem(f"{rp}.commands", "only Commands rules take commands"))
    n = len(rule.input_artifacts)
    if not spec.min_inputs <= n <= spec.max_inputs:
        span = (
            str(spec.min_inputs)
            if spec.min_inputs == spec.max_inputs
            else f"{spec.min_inputs} to {spec.max_inputs}"
        )
        problems.append(
            Problem(
                f"{rp}.inputArtifacts", f"{spec.provider} takes {span} input artifacts, got {n}"
            )
        )
    seen: set[str] = set()
    for ii, art in enumerate(rule.input_artifacts):
        if art.name in seen:
            problems.append(
                Problem(f"{rp}.inputArtifacts[{ii}].name", f"artifact '{art.name}' is listed twice")
            )
        seen.add(art.name)
    if spec.config is CodeBuildRuleConfig:
        problems.extend(_check_primary_source(rule, rp))
    timeout = rule.timeout_in_minutes
    if timeout is not None and not 5 <= timeout <= 86400:
        problems.append(Problem(f"{rp}.timeoutInMinutes", "must be between 5 and 86400"))
    return problems


def _check_primary_source(rule: RuleDeclaration, rp: str) -> list[Problem]:
    """As for a CodeBuild action: PrimarySource names one of the inputs, and is required
    when there are several (the buildspec is read from it)."""
    primary = rule.configuration.get("PrimarySource")
    names = [a.name for a in rule.input_artifacts]
    where = f"{rp}.configuration.PrimarySource"
    if primary is None:
        if len(names) > 1:
            return [Problem(where, f"required with several input artifacts ({', '.join(names)})")]
        return []
    if not _deferred(primary) and primary not in names:
        return [Problem(where, f"'{primary}' is not one of the rule's input artifacts {names}")]
    return []


def check_commands(
    commands: list[str] | None, cp: str, what: str = "a Commands rule"
) -> list[Problem]:
    """CodePipeline's limits on a ``commands`` list (rules and Commands actions alike)."""
    if not commands:
        return [Problem(cp, f"{what} needs 1 to {MAX_COMMANDS} commands")]
    problems: list[Problem] = []
    if len(commands) > MAX_COMMANDS:
        problems.append(Problem(cp, f"at most {MAX_COMMANDS} commands, got {len(commands)}"))
    for i, command in enumerate(commands):
        if not command.strip():
            problems.append(Problem(f"{cp}[{i}]", "must not be empty"))
        elif len(command) > MAX_COMMAND_LENGTH:
            problems.append(Problem(f"{cp}[{i}]", f"at most {MAX_COMMAND_LENGTH} characters"))
        elif "\n" in command or "\r" in command:
            # CodePipeline accepts single-line commands only; one list item per line.
            problems.append(Problem(f"{cp}[{i}]", "must be a single line"))
    return problems


def _config_problems(exc: PydanticValidationError, prefix: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        path = ".".join([prefix, *loc])
        value = err.get("input")
        if loc and isinstance(value, str) and _deferred(value):
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(Problem(path, msg))
    return problems


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RuleOutcome:
    """One rule run: CodePipeline's RuleExecution ``status`` and ``summary``.

    ``InProgress`` is a rule that cannot decide yet and holds its stage (a DeploymentWindow
    outside its window): it is judged again at ``retry_at`` (epoch seconds)."""

    status: Literal["Succeeded", "Failed", "InProgress"]
    summary: str
    retry_at: float | None = None

    def __post_init__(self) -> None:
        if (self.status == "InProgress") != (self.retry_at is not None):
            raise ValueError("a rule in progress, and only one, says when to look again")

    @property
    def succeeded(self) -> bool:
        return self.status == "Succeeded"

    @property
    def waiting(self) -> bool:
        return self.status == "InProgress"


class _Unresolved(Exception):
    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference


def _resolve(value: str, variables: Lookup) -> str:
    def lookup(namespace: str, variable: str) -> str:
        found = variables(namespace, variable)
        if found is None:
            raise _Unresolved(f"#{{{namespace}.{variable}}}")
        return found

    return substitute(value, lookup)


def evaluate(rule: RuleDeclaration, *, now: float, variables: Lookup) -> RuleOutcome:
    """Run a rule that needs no worker, at ``now`` (epoch seconds). A DeploymentWindow
    outside its window is ``InProgress`` until the window next opens (``retry_at``); one
    that never opens again fails.

    ``variables`` is called with each reference's namespace and name (``"SourceVariables",
    "Branch"``; ``"variables", "env"``; ``"codepipeline", "PipelineExecutionId"``) and
    returns its value, or None when it has none. Every reference in the configuration is
    resolved first; one that cannot be fails the rule, since comparing against its literal
    text would be a lie.
    Raises ValueError for a Commands rule or an unknown type: the definition check and
    ``needs_worker`` keep those away.
    """
    spec = rule_type(rule.rule_type_id)
    if spec is None or spec.on_worker:
        raise ValueError(f"rule type {rule.rule_type_id} is not evaluated in the engine")
    try:
        resolved = {k: _resolve(v, variables) for k, v in rule.configuration.items()}
    except _Unresolved as exc:
        return RuleOutcome("Failed", f"variable {exc.reference} has no value")
    try:
        config = spec.config.model_validate(resolved)
    except PydanticValidationError as exc:
        detail = "; ".join(str(p) for p in _config_problems(exc, "configuration"))
        return RuleOutcome("Failed", f"invalid configuration: {detail}")
    if isinstance(config, VariableCheckConfig):
        return _variable_check(config)
    assert isinstance(config, DeploymentWindowConfig)
    return _deployment_window(config, now)


def _variable_check(config: VariableCheckConfig) -> RuleOutcome:
    actual, expected, op = config.Variable, config.Value, config.Operator
    if op == "EQ":
        ok = actual == expected
        verb = "equals" if ok else "does not equal"
    elif op == "NE":
        ok = actual != expected
        verb = "differs from" if ok else "equals"
    elif op == "CONTAINS":
        ok = expected in actual
        verb = "contains" if ok else "does not contain"
    else:
        # Java's String.matches, which CodePipeline's regexes follow: the whole value.
        ok = _java_regex(expected).fullmatch(actual) is not None
        verb = "matches" if ok else "does not match"
    summary = f"{op}: '{_clip(actual)}' {verb} '{_clip(expected)}'"
    return RuleOutcome("Succeeded" if ok else "Failed", summary)


def _deployment_window(config: DeploymentWindowConfig, now: float) -> RuleOutcome:
    zone = load_zone(config.TimeZone)
    local = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d %H:%M")
    where = f"'{config.Cron}' ({config.TimeZone}) at {local}"
    if in_window(config.Cron, config.TimeZone, now):
        return RuleOutcome("Succeeded", f"inside deployment window {where}")
    opens = next_window_start(config.Cron, config.TimeZone, now)
    if opens is None:
        return RuleOutcome("Failed", f"outside deployment window {where}; it does not open again")
    # AWS holds the stage until the window opens rather than failing it.
    at = datetime.fromtimestamp(opens, zone).strftime("%Y-%m-%d %H:%M")
    return RuleOutcome(
        "InProgress",
        f"waiting for deployment window {where}: it opens at {at}",
        retry_at=opens,
    )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
