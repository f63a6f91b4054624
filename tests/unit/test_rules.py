"""Stage-condition rules: declarations, definition checks, evaluation and the cron dialect."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import botocore.session
import pytest
from botocore.validate import ParamValidator
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.cron import CronError, in_window, next_window_start, parse_cron, quartz_weekday
from engine.rules import (
    ALLOWED_RESULTS,
    NOT_RUNNABLE,
    RULE_TYPES,
    ConditionKind,
    Conditions,
    FailureConditions,
    RuleDeclaration,
    check_conditions,
    evaluate,
    needs_worker,
    worker_queue,
)

# ---------------------------------------------------------------------------- helpers


def rule(provider: str, name: str = "R", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": provider, "version": "1"},
        **extra,
    }


def var_check(name: str = "R", **config: str) -> dict[str, Any]:
    conf = {"Variable": "#{Source.Branch}", "Value": "main", "Operator": "EQ", **config}
    return rule("VariableCheck", name, configuration=conf)


def window(cron: str, tz: str | None = None, name: str = "W") -> dict[str, Any]:
    conf = {"Cron": cron} | ({"TimeZone": tz} if tz else {})
    return rule("DeploymentWindow", name, configuration=conf)


def problems(block: dict[str, Any], where: str = "beforeEntry") -> dict[str, str]:
    model: Conditions | FailureConditions
    if where == "onFailure":
        model = FailureConditions.model_validate(block)
    else:
        model = Conditions.model_validate(block)
    found = check_conditions(model, ConditionKind(where), f"stages[1].{where}")
    return {p.path: p.message for p in found}


def one(result: str | None, *rules: dict[str, Any]) -> dict[str, Any]:
    cond: dict[str, Any] = {"rules": list(rules)}
    if result is not None:
        cond["result"] = result
    return {"conditions": [cond]}


def epoch(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def no_vars(namespace: str, variable: str) -> str | None:
    return None


# ---------------------------------------------------------------------------- declarations


def test_aws_example_loads_and_round_trips() -> None:
    block = {
        "conditions": [
            {
                "result": "FAIL",
                "rules": [
                    {
                        "name": "MyVarCheckRule",
                        "ruleTypeId": {
                            "category": "Rule",
                            "owner": "AWS",
                            "provider": "VariableCheck",
                            "version": "1",
                        },
                        "configuration": {
                            "Operator": "EQ",
                            "Value": "MyDemoRepo",
                            "Variable": "#{SourceVariables.RepositoryName}",
                        },
                        "inputArtifacts": [],
                        "region": "us-east-1",
                    }
                ],
            }
        ]
    }
    model = Conditions.model_validate(block)
    assert model.conditions[0].rules[0].rule_type_id.provider == "VariableCheck"
    assert model.model_dump(by_alias=True, exclude_none=True) == block
    assert check_conditions(model, ConditionKind.BEFORE_ENTRY, "s") == []


def test_owner_and_version_default_like_codepipeline() -> None:
    r = RuleDeclaration.model_validate(
        {"name": "R", "ruleTypeId": {"category": "Rule", "provider": "VariableCheck"}}
    )
    assert (r.rule_type_id.owner, r.rule_type_id.version) == ("AWS", "1")
    assert str(r.rule_type_id) == "Rule/AWS/VariableCheck/1"


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "R", "ruleTypeId": {"category": "Build", "provider": "VariableCheck"}},
        {"name": "R", "ruleTypeId": {"category": "Rule", "provider": "X"}, "runOrder": 1},
        {
            "name": "R",
            "ruleTypeId": {"category": "Rule", "provider": "X"},
            "configuration": {"a": 1},
        },
    ],
)
def test_rule_shape_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RuleDeclaration.model_validate(bad)


def test_failure_conditions_take_only_retry_or_rollback() -> None:
    with pytest.raises(ValidationError):
        FailureConditions.model_validate({"result": "FAIL"})
    fc = FailureConditions.model_validate({"result": "RETRY", "retryConfiguration": {}})
    assert fc.retry_configuration is not None
    assert fc.retry_configuration.retry_mode == "FAILED_ACTIONS"


def test_rule_types_match_botocore_list_rule_types_output() -> None:
    model = botocore.session.get_session().get_service_model("codepipeline")
    shape = model.operation_model("ListRuleTypes").output_shape
    report = ParamValidator().validate({"ruleTypes": RULE_TYPES}, shape)
    assert not report.has_errors(), report.generate_report()
    # AWS's rule reference: CloudWatchAlarm, CodeBuild, Commands, DeploymentWindow,
    # LambdaInvoke, VariableCheck.
    assert {t["id"]["provider"] for t in RULE_TYPES} == {
        "VariableCheck",
        "DeploymentWindow",
        "Commands",
        "LambdaInvoke",
        "CodeBuild",
        "CloudWatchAlarm",
    }


def test_rule_types_not_runnable_here_are_marked_and_refused() -> None:
    marked = {
        t["id"]["provider"]
        for t in RULE_TYPES
        if t["ruleConfigurationProperties"]
        and all(p["description"].startswith(NOT_RUNNABLE) for p in t["ruleConfigurationProperties"])
    }
    assert marked == {"CloudWatchAlarm"}
    alarm = rule("CloudWatchAlarm", configuration={"AlarmName": "errors"})
    (message,) = problems(one("FAIL", alarm)).values()
    assert message.startswith(
        "rule type Rule/AWS/CloudWatchAlarm/1 is not supported by this installation"
    )
    assert "CodeBuild" in message and "CloudWatchAlarm, " not in message


def test_codebuild_rule_declaration() -> None:
    rp = "stages[1].beforeEntry.conditions[0].rules[0]"
    src = [{"name": "SourceOutput"}]
    ok = rule("CodeBuild", configuration={"ProjectName": "gate"}, inputArtifacts=src)
    assert problems(one("FAIL", ok)) == {}
    assert needs_worker(RuleDeclaration.model_validate(ok))
    assert worker_queue("CodeBuild") == "conveyor.rule.codebuild"
    two = [*src, {"name": "Tools"}]
    assert problems(one("FAIL", rule("CodeBuild", configuration={}, inputArtifacts=src))) == {
        f"{rp}.configuration.ProjectName": "required"
    }
    assert problems(one("FAIL", rule("CodeBuild", configuration={"ProjectName": "p"}))) == {
        f"{rp}.inputArtifacts": "CodeBuild takes 1 to 5 input artifacts, got 0"
    }
    several = rule("CodeBuild", configuration={"ProjectName": "p"}, inputArtifacts=two)
    assert problems(one("FAIL", several)) == {
        f"{rp}.configuration.PrimarySource": "required with several input artifacts "
        "(SourceOutput, Tools)"
    }
    wrong = rule(
        "CodeBuild",
        configuration={"ProjectName": "p", "PrimarySource": "Nope"},
        inputArtifacts=two,
    )
    assert problems(one("FAIL", wrong)) == {
        f"{rp}.configuration.PrimarySource": "'Nope' is not one of the rule's input artifacts "
        "['SourceOutput', 'Tools']"
    }
    bad_env = rule(
        "CodeBuild",
        configuration={"ProjectName": "p", "EnvironmentVariables": "{"},
        inputArtifacts=src,
    )
    assert list(problems(one("FAIL", bad_env))) == [f"{rp}.configuration.EnvironmentVariables"]


def test_needs_worker() -> None:
    cmd = RuleDeclaration.model_validate(rule("Commands", commands=["true"]))
    assert needs_worker(cmd)
    assert not needs_worker(RuleDeclaration.model_validate(var_check()))
    assert not needs_worker(RuleDeclaration.model_validate(rule("Nope")))


# ---------------------------------------------------------------------------- check_conditions


def test_valid_blocks_of_each_kind() -> None:
    assert problems(one("SKIP", var_check())) == {}
    assert problems(one("ROLLBACK", window("* * 9-17 ? * MON-FRI")), "onSuccess") == {}
    assert problems({"result": "ROLLBACK"}, "onFailure") == {}
    assert (
        problems(
            {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}}, "onFailure"
        )
        == {}
    )
    assert problems(one("ROLLBACK", var_check()) | {"result": "ROLLBACK"}, "onFailure") == {}
    # An onFailure condition without its own result takes the block's.
    assert problems(one(None, var_check()) | {"result": "ROLLBACK"}, "onFailure") == {}


@pytest.mark.parametrize(
    ("where", "result"),
    [
        ("beforeEntry", "ROLLBACK"),
        ("beforeEntry", "RETRY"),
        ("onSuccess", "SKIP"),
        ("onFailure", "FAIL"),
    ],
)
def test_result_must_suit_the_condition_kind(where: str, result: str) -> None:
    found = problems(one(result, var_check()), where)
    choices = " or ".join(sorted(ALLOWED_RESULTS[ConditionKind(where)]))
    message = f"{where} conditions take {choices}, not {result}"
    assert found == {f"stages[1].{where}.conditions[0].result": message}


def test_result_is_required() -> None:
    assert problems(one(None, var_check())) == {
        "stages[1].beforeEntry.conditions[0].result": "required"
    }


def test_explicit_allowed_results_override_the_default() -> None:
    model = Conditions.model_validate(one("FAIL", var_check()))
    found = check_conditions(model, ConditionKind.BEFORE_ENTRY, "p", allowed_results={"SKIP"})
    assert [p.message for p in found] == ["beforeEntry conditions take SKIP, not FAIL"]


def test_skip_only_with_variable_check() -> None:
    found = problems(one("SKIP", var_check("A"), window("* * * * * ?", name="B")))
    assert found == {
        "stages[1].beforeEntry.conditions[0].rules[1].ruleTypeId.provider": (
            "a SKIP condition may use only VariableCheck rules"
        )
    }


def test_exactly_one_condition() -> None:
    two = {"conditions": [one("FAIL", var_check())["conditions"][0]] * 2}
    assert problems(two) == {"stages[1].beforeEntry.conditions": "exactly one condition, got 2"}
    assert problems({"conditions": []}, "onSuccess") == {
        "stages[1].onSuccess.conditions": "exactly one condition, got 0"
    }


def test_one_to_five_rules_with_unique_names() -> None:
    assert problems(one("FAIL")) == {
        "stages[1].beforeEntry.conditions[0].rules": "a condition needs 1 to 5 rules, got 0"
    }
    six = one("FAIL", *[var_check(f"R{i}") for i in range(6)])
    assert problems(six) == {
        "stages[1].beforeEntry.conditions[0].rules": "a condition needs 1 to 5 rules, got 6"
    }
    dup = problems(one("FAIL", var_check("Same"), var_check("Same")))
    assert dup == {
        "stages[1].beforeEntry.conditions[0].rules[1].name": (
            "duplicate rule name 'Same' in this condition"
        )
    }
    bad_name = problems(one("FAIL", var_check("bad name!")))
    assert bad_name == {
        "stages[1].beforeEntry.conditions[0].rules[0].name": (
            "must be 1-100 characters of A-Za-z0-9.@-_"
        )
    }


def test_unknown_rule_types() -> None:
    rp = "stages[1].beforeEntry.conditions[0].rules[0]"
    found = problems(one("FAIL", rule("SlackVote")))
    assert found[f"{rp}.ruleTypeId"].startswith("unknown rule type Rule/AWS/SlackVote/1")
    v2 = rule("VariableCheck") | {
        "ruleTypeId": {"category": "Rule", "provider": "VariableCheck", "version": "2"}
    }
    assert f"{rp}.ruleTypeId" in problems(one("FAIL", v2))


def test_variable_check_configuration() -> None:
    cp = "stages[1].beforeEntry.conditions[0].rules[0].configuration"
    missing = rule("VariableCheck", configuration={"Variable": "#{a.b}", "Value": "x"})
    assert problems(one("FAIL", missing)) == {f"{cp}.Operator": "required"}
    gt = problems(one("FAIL", var_check(Operator="GT")))
    assert list(gt) == [f"{cp}.Operator"]
    assert "'EQ', 'CONTAINS', 'MATCHES' or 'NE'" in gt[f"{cp}.Operator"]
    bad_regex = problems(one("FAIL", var_check(Operator="MATCHES", Value="release/(")))
    assert bad_regex[cp].startswith("Value is not a valid regular expression")
    # A regex built from variables is judged when it runs.
    assert problems(one("FAIL", var_check(Operator="MATCHES", Value="#{a.b}("))) == {}
    assert problems(one("FAIL", var_check(Extra="1"))) == {f"{cp}.Extra": "unknown key"}


def test_deployment_window_configuration() -> None:
    cp = "stages[1].beforeEntry.conditions[0].rules[0].configuration"
    assert problems(one("FAIL", window("0 0 9 ? * MON-FRI"))) == {
        f"{cp}.Cron": "seconds field '0' must be '*': a deployment window is matched to the minute"
    }
    # '*' in one day field means "any day", so it needs no '?'.
    assert problems(one("FAIL", window("* * 9 * * MON"))) == {}
    assert problems(one("FAIL", window("* * 9 1 * MON"))) == {
        f"{cp}.Cron": "day-of-month '1' and day-of-week 'MON' are both set; set one of them to '?'"
    }
    zone = problems(one("FAIL", window("* * * * * ?", "Mars/Olympus")))
    assert zone[f"{cp}.TimeZone"].startswith("unknown time zone 'Mars/Olympus'")
    assert problems(one("FAIL", window("* * * * * ?", "Europe/Berlin"))) == {}
    assert problems(one("FAIL", window("#{variables.cron}"))) == {}
    assert problems(one("FAIL", rule("DeploymentWindow"))) == {f"{cp}.Cron": "required"}


def test_commands_rule_declaration() -> None:
    rp = "stages[1].onSuccess.conditions[0].rules[0]"
    ok = rule("Commands", commands=["make test"], inputArtifacts=[{"name": "Src"}])
    assert problems(one("FAIL", ok), "onSuccess") == {}
    assert problems(one("FAIL", rule("Commands")), "onSuccess") == {
        f"{rp}.commands": "a Commands rule needs 1 to 50 commands"
    }
    multi = rule("Commands", commands=["echo a\necho b", "", "x" * 1001])
    assert problems(one("FAIL", multi), "onSuccess") == {
        f"{rp}.commands[0]": "must be a single line",
        f"{rp}.commands[1]": "must not be empty",
        f"{rp}.commands[2]": "at most 1000 characters",
    }
    assert problems(one("FAIL", rule("Commands", commands=["x"] * 51)), "onSuccess") == {
        f"{rp}.commands": "at most 50 commands, got 51"
    }
    assert problems(
        one("FAIL", rule("Commands", commands=["x"], configuration={"A": "b"})), "onSuccess"
    ) == {f"{rp}.configuration.A": "unknown key"}
    # CodeBuild-style sources, but not the same artifact twice.
    twice = rule("Commands", commands=["x"], inputArtifacts=[{"name": "A"}, {"name": "A"}])
    assert problems(one("FAIL", twice), "onSuccess") == {
        f"{rp}.inputArtifacts[1].name": "artifact 'A' is listed twice"
    }


def test_other_rules_take_no_commands_or_artifacts() -> None:
    rp = "stages[1].beforeEntry.conditions[0].rules[0]"
    r = var_check() | {
        "commands": ["ls"],
        "inputArtifacts": [{"name": "Src"}],
        "timeoutInMinutes": 1,
    }
    assert problems(one("FAIL", r)) == {
        f"{rp}.commands": "only Commands rules take commands",
        f"{rp}.inputArtifacts": "VariableCheck takes 0 input artifacts, got 1",
        f"{rp}.timeoutInMinutes": "must be between 5 and 86400",
    }


def test_on_failure_blocks() -> None:
    p = "stages[1].onFailure"
    assert problems({}, "onFailure") == {p: "onFailure needs a result or a condition"}
    assert problems({"result": "ROLLBACK", "retryConfiguration": {}}, "onFailure") == {
        f"{p}.retryConfiguration": "applies only with result RETRY"
    }
    assert problems(one(None, var_check()), "onFailure") == {
        f"{p}.conditions[0].result": "required"
    }
    two = {"result": "ROLLBACK", "conditions": [one("ROLLBACK", var_check())["conditions"][0]] * 2}
    assert problems(two, "onFailure") == {f"{p}.conditions": "at most one condition"}


# ---------------------------------------------------------------------------- evaluate


VARS = {("Source", "Branch"): "release/1.2", ("variables", "env"): "prod"}


def lookup(namespace: str, variable: str) -> str | None:
    return VARS.get((namespace, variable))


@pytest.mark.parametrize(
    ("operator", "value", "status"),
    [
        ("EQ", "release/1.2", "Succeeded"),
        ("EQ", "main", "Failed"),
        ("NE", "main", "Succeeded"),
        ("NE", "release/1.2", "Failed"),
        ("CONTAINS", "release", "Succeeded"),
        ("CONTAINS", "hotfix", "Failed"),
        ("MATCHES", r"release/\d+\.\d+", "Succeeded"),
        ("MATCHES", "release", "Failed"),  # the whole value must match, as in Java
        ("MATCHES", r"(?<kind>release)/.*", "Succeeded"),  # Java's named groups
    ],
)
def test_variable_check(operator: str, value: str, status: str) -> None:
    r = RuleDeclaration.model_validate(var_check(Operator=operator, Value=value))
    outcome = evaluate(r, now=0.0, variables=lookup)
    assert outcome.status == status, outcome.summary
    assert outcome.summary.startswith(f"{operator}: 'release/1.2' ")
    assert outcome.succeeded is (status == "Succeeded")


def test_variable_check_resolves_the_value_too() -> None:
    r = RuleDeclaration.model_validate(var_check(Variable="prod-eu", Value="#{variables.env}-eu"))
    assert evaluate(r, now=0.0, variables=lookup).status == "Succeeded"


def test_unresolvable_variable_fails_the_rule() -> None:
    r = RuleDeclaration.model_validate(var_check(Variable="#{Build.Missing}"))
    outcome = evaluate(r, now=0.0, variables=lookup)
    assert (outcome.status, outcome.summary) == ("Failed", "variable #{Build.Missing} has no value")


def test_bad_regex_from_a_variable_fails_the_rule() -> None:
    r = RuleDeclaration.model_validate(var_check(Operator="MATCHES", Value="#{variables.env}("))
    outcome = evaluate(r, now=0.0, variables=lookup)
    assert outcome.status == "Failed"
    assert outcome.summary.startswith("invalid configuration: configuration: Value is not a valid")


def test_deployment_window_in_its_time_zone() -> None:
    # Weekdays 09:00-17:59 in Berlin (UTC+2 in July).
    r = RuleDeclaration.model_validate(window("* * 9-17 ? * MON-FRI", "Europe/Berlin"))
    inside = evaluate(r, now=epoch("2024-07-01T07:30"), variables=no_vars)  # Monday 09:30 Berlin
    assert inside.status == "Succeeded"
    assert inside.summary == (
        "inside deployment window '* * 9-17 ? * MON-FRI' (Europe/Berlin) at 2024-07-01 09:30"
    )
    # Outside: AWS holds the stage until the window opens, so the rule waits, in progress.
    outside = evaluate(r, now=epoch("2024-07-01T06:59"), variables=no_vars)
    assert outside.status == "InProgress" and outside.waiting
    assert outside.retry_at == epoch("2024-07-01T07:00")
    assert outside.summary == (
        "waiting for deployment window '* * 9-17 ? * MON-FRI' (Europe/Berlin) at "
        "2024-07-01 08:59: it opens at 2024-07-01 09:00"
    )
    weekend = evaluate(r, now=epoch("2024-07-06T10:00", "Europe/Berlin"), variables=no_vars)
    assert weekend.summary.endswith("it opens at 2024-07-08 09:00")
    assert weekend.retry_at == epoch("2024-07-08T09:00", "Europe/Berlin")


def test_deployment_window_defaults_to_utc_and_can_never_open() -> None:
    r = RuleDeclaration.model_validate(window("* * 9 ? * *"))
    assert evaluate(r, now=epoch("2024-07-01T09:59"), variables=no_vars).succeeded
    never = RuleDeclaration.model_validate(window("* * * 30 FEB ?"))
    outcome = evaluate(never, now=epoch("2024-07-01T09:59"), variables=no_vars)
    assert outcome.status == "Failed" and outcome.retry_at is None
    assert outcome.summary.endswith("; it does not open again")


def test_deployment_window_from_a_variable() -> None:
    r = RuleDeclaration.model_validate(window("#{variables.cron}"))
    bad = evaluate(r, now=0.0, variables=lambda ns, var: "0 0 0 * * ?")
    assert bad.status == "Failed"
    assert "seconds field '0' must be '*'" in bad.summary
    good = evaluate(r, now=0.0, variables=lambda ns, var: "* * * * * ?")
    assert good.succeeded


def test_lambda_invoke_rule_declaration() -> None:
    rp = "stages[1].beforeEntry.conditions[0].rules[0]"
    ok = rule("LambdaInvoke", configuration={"FunctionName": "gate", "UserParameters": "x"})
    assert problems(one("FAIL", ok)) == {}
    assert needs_worker(RuleDeclaration.model_validate(ok))
    assert worker_queue("LambdaInvoke") == "conveyor.rule.lambdainvoke"
    assert worker_queue("Commands") == "conveyor.rule.commands"
    bad = rule("LambdaInvoke", configuration={"Payload": "x"}, commands=["true"])
    assert problems(one("FAIL", bad)) == {
        f"{rp}.configuration.FunctionName": "required",
        f"{rp}.configuration.Payload": "unknown key",
        f"{rp}.commands": "only Commands rules take commands",
    }


def test_commands_rules_are_not_evaluated_in_the_engine() -> None:
    r = RuleDeclaration.model_validate(rule("Commands", commands=["true"]))
    with pytest.raises(ValueError, match="not evaluated in the engine"):
        evaluate(r, now=0.0, variables=no_vars)


# ---------------------------------------------------------------------------- cron: examples


def matches(cron: str, when: str, tz: str = "UTC") -> bool:
    return in_window(cron, tz, epoch(when, tz))


@pytest.mark.parametrize(
    ("cron", "yes", "no"),
    [
        ("* * * L * ?", "2024-02-29T12:00", "2024-02-28T12:00"),
        ("* * * L * ?", "2023-02-28T12:00", "2023-02-27T12:00"),
        ("* * * L-3 * ?", "2024-01-28T00:00", "2024-01-31T00:00"),
        ("* * * LW * ?", "2024-08-30T00:00", "2024-08-31T00:00"),  # Aug 31 2024 is a Saturday
        ("* * * 15W * ?", "2024-06-14T00:00", "2024-06-15T00:00"),  # 15th Saturday -> Friday
        ("* * * 15W * ?", "2024-09-16T00:00", "2024-09-15T00:00"),  # 15th Sunday -> Monday
        ("* * * 1W * ?", "2024-06-03T00:00", "2024-05-31T00:00"),  # 1st Saturday -> Monday 3rd
        ("* * * 30W * ?", "2024-06-28T00:00", "2024-07-01T00:00"),  # 30th Sunday -> Friday 28th
        ("* * * ? * 6L", "2024-05-31T00:00", "2024-05-24T00:00"),  # last Friday
        ("* * * ? * FRI#3", "2024-05-17T00:00", "2024-05-10T00:00"),  # third Friday
        ("* * * ? * L", "2024-05-04T00:00", "2024-05-05T00:00"),  # alone, L is Saturday
        ("* * * ? * 1", "2024-05-05T00:00", "2024-05-06T00:00"),  # 1 is Sunday
        ("* * 22-2 * * ?", "2024-05-05T01:59", "2024-05-05T03:00"),  # wraps past midnight
        ("* 5/15 * * * ?", "2024-05-05T01:50", "2024-05-05T01:51"),
        ("* */20 * * * ?", "2024-05-05T01:40", "2024-05-05T01:50"),
        ("* 0 12 * JUN-AUG ?", "2024-07-01T12:00", "2024-09-01T12:00"),
        ("* 0 12 * NOV-FEB ?", "2024-01-01T12:00", "2024-03-01T12:00"),
        ("* * * * * ? 2025", "2025-01-01T00:00", "2024-12-31T23:59"),
        ("* * * * * ? 2024-2030/2", "2026-06-01T00:00", "2025-06-01T00:00"),
        ("* 0,30 9 ? * mon-fri", "2024-07-01T09:30", "2024-07-01T09:31"),
    ],
)
def test_cron_examples(cron: str, yes: str, no: str) -> None:
    assert matches(cron, yes)
    assert not matches(cron, no)


def test_cron_reads_the_wall_clock_across_dst() -> None:
    cron = "* 30 2 ? * *"  # 02:30 does not exist in New York on 2024-03-10
    start = epoch("2024-03-10T00:00", "America/New_York")
    found = next_window_start(cron, "America/New_York", start)
    assert found == epoch("2024-03-11T02:30", "America/New_York")
    # 01:30 happens twice on 2024-11-03; both are in the window.
    first = next_window_start(
        "* 30 1 ? * *", "America/New_York", epoch("2024-11-03T00:00", "America/New_York")
    )
    assert first is not None
    second = next_window_start("* 30 1 ? * *", "America/New_York", first + 60)
    assert second == first + 3600


def test_next_window_start_is_now_when_open() -> None:
    now = epoch("2024-07-01T09:30:27")
    assert next_window_start("* * 9 ? * *", "UTC", now) == now


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * * *", "has 5 fields; expected 6"),
        ("* * * * * ? 2024 x", "has 8 fields"),
        ("0 * * * * ?", "seconds field '0' must be '*'"),
        ("* 60 * * * ?", "minutes '60': 60 is not in 0-59"),
        ("* * 24 * * ?", "hours '24': 24 is not in 0-23"),
        ("* * * 0 * ?", "day-of-month '0': 0 is not in 1-31"),
        ("* * * * 13 ?", "month '13': 13 is not in 1-12 or JAN-DEC"),
        ("* * * ? * 8", "day-of-week '8': 8 is not in 1-7 or SUN-SAT"),
        ("* * * ? FOO *", "month 'FOO': value 'FOO' is not a number or a name (JAN-DEC)"),
        ("* */0 * * * ?", "minutes '*/0': step must be between 1 and 59"),
        ("* 1,,2 * * * ?", "minutes field '1,,2' has an empty list item"),
        ("* ? * * * ?", "minutes '?': value '?' is not a number"),
        ("* * * 1 * 2", "set one of them to '?'"),
        ("* * * ? * 2W", "day-of-week '2W': value '2W' is not a number"),
        ("* * * 3#2 * ?", "day-of-month '3#2' is not supported"),
        ("* * * ? * 6#6", "occurrence after '#' must be 1 to 5"),
        ("* * * * * ? 1969", "year '1969': 1969 is not in 1970-2199"),
        ("* * * * * ? 2030-2025", "year '2030-2025': range runs backwards"),
        ("* * * L-31 * ?", "offset must be between 0 and 30"),
    ],
)
def test_cron_errors(cron: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(cron)
    assert message in str(info.value)


# ---------------------------------------------------------------------------- cron: properties

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@st.composite
def items(draw: st.DrawFn, low: int, high: int, names: list[str] | None) -> tuple[str, Any]:
    """One list item as text, and a brute-force membership test written independently."""

    def show(n: int) -> str:
        return names[n - low] if names and draw(st.booleans()) else str(n)

    kind = draw(st.sampled_from(["star", "value", "range"]))
    step = draw(st.one_of(st.none(), st.integers(1, high)))
    if kind == "star":
        a, b, text = low, high, "*"
    elif kind == "value":
        a = draw(st.integers(low, high))
        b, text = (high if step else a), show(a)
    else:
        a, b = draw(st.integers(low, high)), draw(st.integers(low, high))
        text = f"{show(a)}-{show(b)}"
    if step:
        text += f"/{step}"
    span = high - low + 1

    def member(v: int) -> bool:
        inside = a <= v <= b if a <= b else (v >= a or v <= b)
        return inside and ((v - a) % span) % (step or 1) == 0

    return text, member


@st.composite
def fields(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> tuple[str, Any]:
    parts = draw(st.lists(items(low, high, names), min_size=1, max_size=3))
    return ",".join(t for t, _ in parts), (lambda v: any(m(v) for _, m in parts))


@settings(max_examples=400, deadline=None)
@given(
    minutes=fields(0, 59),
    hours=fields(0, 23),
    dom=fields(1, 31),
    month=fields(1, 12, MONTH_NAMES),
    dow=fields(1, 7, DAY_NAMES),
    day_mode=st.sampled_from(["dom", "dow", "any"]),
    zone=st.sampled_from(ZONES),
    when=st.integers(int(epoch("2000-01-01T00:00")), int(epoch("2100-01-01T00:00"))),
)
def test_cron_matches_brute_force_reference(
    minutes: tuple[str, Any],
    hours: tuple[str, Any],
    dom: tuple[str, Any],
    month: tuple[str, Any],
    dow: tuple[str, Any],
    day_mode: str,
    zone: str,
    when: int,
) -> None:
    dom_text = dom[0] if day_mode == "dom" else "?"
    dow_text = dow[0] if day_mode == "dow" else ("*" if day_mode == "any" else "?")
    cron = f"* {minutes[0]} {hours[0]} {dom_text} {month[0]} {dow_text}"
    local = datetime.fromtimestamp(when, ZoneInfo(zone))
    expected = (
        minutes[1](local.minute)
        and hours[1](local.hour)
        and month[1](local.month)
        and (day_mode != "dom" or dom[1](local.day))
        and (day_mode != "dow" or dow[1](quartz_weekday(local.date())))
    )
    assert in_window(cron, zone, when) == expected


# A cron open at some minutes of some hours of every day, and a moment this century.
daily_windows = given(
    minutes=fields(0, 59),
    hours=fields(0, 23),
    zone=st.sampled_from(ZONES),
    when=st.integers(int(epoch("2000-01-01T00:00")), int(epoch("2100-01-01T00:00"))),
)


@settings(max_examples=150, deadline=None)
@daily_windows
def test_next_window_start_is_the_first_matching_minute(
    minutes: tuple[str, Any], hours: tuple[str, Any], zone: str, when: int
) -> None:
    cron = f"* {minutes[0]} {hours[0]} * * ?"
    found = next_window_start(cron, zone, when)
    assert found is not None  # every day has the same minutes: at most a day (plus DST) away
    assert in_window(cron, zone, found)
    t = when - when % 60 + 60
    if not in_window(cron, zone, when):
        assert found % 60 == 0
        while t < found:
            assert not in_window(cron, zone, t)
            t += 60
    else:
        assert found == when


@given(day=st.dates(date(1970, 1, 1), date(2199, 12, 31)))
def test_quartz_weekday_numbers_sunday_one(day: date) -> None:
    assert quartz_weekday(day) == DAY_NAMES.index(calendar.day_abbr[day.weekday()].upper()) + 1


@given(day=st.dates(date(1971, 1, 1), date(2198, 12, 31)))
def test_last_day_and_last_weekday(day: date) -> None:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()
    last = calendar.monthrange(day.year, day.month)[1]
    assert in_window("* * * L * ?", "UTC", noon) == (day.day == last)
    next_week = day + timedelta(days=7)
    assert in_window("* * * ? * 2L", "UTC", noon) == (
        day.weekday() == 0 and next_week.month != day.month
    )
    assume(day.weekday() < 5)
    later_weekdays = [
        d for d in range(day.day + 1, last + 1) if date(day.year, day.month, d).weekday() < 5
    ]
    assert in_window("* * * LW * ?", "UTC", noon) == (not later_weekdays)


@settings(max_examples=150, deadline=None)
@daily_windows
def test_a_deployment_window_rule_passes_inside_and_waits_outside_never_failing(
    minutes: tuple[str, Any], hours: tuple[str, Any], zone: str, when: int
) -> None:
    """The decision behind holding a stage: inside the window the rule succeeds; outside it
    waits, to be judged again exactly when the window next opens; a window that opens every
    day never fails the rule."""
    cron = f"* {minutes[0]} {hours[0]} * * ?"
    r = RuleDeclaration.model_validate(window(cron, zone))
    outcome = evaluate(r, now=float(when), variables=no_vars)
    if in_window(cron, zone, when):
        assert outcome.succeeded and outcome.retry_at is None
    else:
        assert outcome.waiting
        assert outcome.retry_at == next_window_start(cron, zone, when)
        assert outcome.retry_at is not None and outcome.retry_at > when
        again = evaluate(r, now=outcome.retry_at, variables=no_vars)
        assert again.succeeded
