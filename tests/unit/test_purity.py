"""The functional core stays pure: no I/O, no clock, no randomness, no uuid4.

Two checks. Statically, no pure module imports an I/O, clock or randomness module or calls a
clock, a random source or ``open``. At run time, a whole pipeline is driven through
``decide`` (and definitions are validated, rules evaluated) while every such function is
rigged to fail the test if anything calls it.
"""

from __future__ import annotations

import ast
import builtins
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import awsmodel, cron, rules
from engine.definition import validate
from engine.execution import ActionResult, ArtifactLocation, ExecutionState, new_execution
from engine.messages import (
    ActionCompleted,
    ApprovalAnswered,
    Dispatch,
    Event,
    RuleCompleted,
    Started,
    TimerFired,
    WorkKind,
)
from engine.run import PipelineRun
from engine.scheduler import PipelineInfo, View, decide
from providers import default_registry

ENGINE = Path(__file__).resolve().parents[2] / "engine"
PURE = [
    *sorted((ENGINE / "scheduler").glob("*.py")),
    ENGINE / "rules.py",
    ENGINE / "cron.py",
    ENGINE / "definition" / "model.py",
    ENGINE / "definition" / "checks.py",
    ENGINE / "definition" / "loading.py",
    ENGINE / "execution.py",
    ENGINE / "run.py",
    ENGINE / "messages.py",
    ENGINE / "ids.py",
    ENGINE / "variables.py",
    ENGINE / "records.py",
    ENGINE / "event_patterns.py",
]
FORBIDDEN_MODULES = {
    "asyncio",
    "boto3",
    "botocore",
    "celery",
    "http",
    "io",
    "kombu",
    "logging",
    "minio",
    "os",
    "pathlib",
    "random",
    "redis",
    "requests",
    "secrets",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "urllib",
}
# Attribute calls that read a clock or a random source, whatever module they come from.
FORBIDDEN_CALLS = {
    "now",
    "utcnow",
    "today",
    "time",
    "monotonic",
    "perf_counter",
    "uuid1",
    "uuid4",
    "urandom",
    "getrandbits",
    "randint",
    "random",
    "choice",
}
FORBIDDEN_NAMES = {"open", "print", "input", "exec", "eval"}


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ENGINE)))
def test_pure_modules_import_and_call_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [(node.module or "").split(".")[0]]
        else:
            roots = []
        line = getattr(node, "lineno", 0)
        problems += [f"line {line}: imports {r}" for r in roots if r in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Attribute) and fn.attr in FORBIDDEN_CALLS:
                problems.append(f"line {node.lineno}: calls .{fn.attr}()")
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_NAMES:
                problems.append(f"line {node.lineno}: calls {fn.id}()")
    assert problems == []


# ---------------------------------------------------------------------------- at run time


class ImpureCall(AssertionError):
    pass


@pytest.fixture
def rigged(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every clock, random source, network and file open raises while the test runs."""
    cron.load_zone("Europe/Berlin")  # time zone files are read (and cached) up front
    # botocore's model is one file read once per process (engine.awsmodel caches it); read
    # it here, so this test does not depend on an earlier test having loaded it.
    awsmodel.service_model()

    def trap(name: str) -> Any:
        def called(*args: object, **kwargs: object) -> object:
            raise ImpureCall(f"{name} was called")

        return called

    for target, attr in [
        (time, "time"),
        (time, "time_ns"),
        (time, "monotonic"),
        (time, "perf_counter"),
        (uuid, "uuid1"),
        (uuid, "uuid4"),
        (random, "random"),
        (random, "getrandbits"),
        (os, "urandom"),
        (builtins, "open"),
        (socket.socket, "connect"),
    ]:
        monkeypatch.setattr(target, attr, trap(f"{getattr(target, '__name__', target)}.{attr}"))
    yield


def _definition() -> dict[str, Any]:
    def act(name: str, category: str, provider: str, **more: Any) -> dict[str, Any]:
        return {
            "name": name,
            "actionTypeId": {
                "category": category,
                "owner": "AWS",
                "provider": provider,
                "version": "1",
            },
            **more,
        }

    rule = {
        "name": "Window",
        "ruleTypeId": {"category": "Rule", "provider": "DeploymentWindow"},
        "configuration": {"Cron": "* * * * * ?", "TimeZone": "Europe/Berlin"},
    }
    commands = {
        "name": "Check",
        "ruleTypeId": {"category": "Rule", "provider": "Commands"},
        "commands": ["true"],
    }
    return {
        "name": "pure",
        "variables": [{"name": "env", "defaultValue": "prod"}],
        "stages": [
            {
                "name": "Source",
                "actions": [
                    act(
                        "Src",
                        "Source",
                        "S3",
                        configuration={"S3Bucket": "b", "S3ObjectKey": "k.zip"},
                        outputArtifacts=[{"name": "Src"}],
                    )
                ],
            },
            {
                "name": "Build",
                "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [rule]}]},
                "onSuccess": {"conditions": [{"result": "FAIL", "rules": [commands]}]},
                "actions": [
                    act(
                        "B",
                        "Build",
                        "CodeBuild",
                        configuration={"ProjectName": "p-#{variables.env}"},
                        inputArtifacts=[{"name": "Src"}],
                    )
                ],
            },
            {"name": "Approve", "actions": [act("Gate", "Approval", "Manual")]},
        ],
    }


def test_decide_validation_and_rules_touch_no_clock_io_or_randomness(rigged: None) -> None:
    decl = validate(_definition(), default_registry())
    info = PipelineInfo(1, decl)
    run = PipelineRun(name="pure")
    execs: dict[str, ExecutionState] = {}
    ex = new_execution(
        execution_id="e1",
        definition=decl,
        version=1,
        digest="d",
        artifact_bucket="b",
        variables={},
        timeout_minutes=lambda a: 60,
    )
    now = 1_700_000_000.0

    def step(event: Event) -> list[Any]:
        nonlocal run
        decision = decide(View(run, dict(execs), info), event)
        assert decision.rejection is None and decision.changed
        run = decision.run
        execs.update(decision.executions)
        return decision.effects

    effects = step(Started(now=now, execution=ex))
    for _ in range(4):
        now += 1
        work = [e for e in effects if isinstance(e, Dispatch)]
        if not work:
            break
        d = work[0]
        if d.work is WorkKind.RULE:
            effects = step(
                RuleCompleted(
                    now=now,
                    execution_id="e1",
                    stage=d.stage,
                    rule_execution_id=d.action,
                    attempt=d.attempt,
                    succeeded=True,
                )
            )
            continue
        outputs = [ArtifactLocation(name="Src", bucket="b", key="k")] if d.action == "Src" else []
        result = ActionResult(succeeded=True, output_artifacts=outputs)
        effects = step(
            ActionCompleted(
                now=now,
                execution_id="e1",
                stage=d.stage,
                action=d.action,
                attempt=d.attempt,
                result=result,
            )
        )
    gate = execs["e1"].action("Approve", "Gate")
    assert gate is not None and gate.approval_token is not None
    # Nothing is due yet: a timer changes nothing.
    assert not decide(View(run, dict(execs), info), TimerFired(now=now, execution_id="e1")).changed
    step(
        ApprovalAnswered(
            now=now + 2,
            execution_id="e1",
            stage="Approve",
            action="Gate",
            token=gate.approval_token,
            approved=True,
        )
    )
    assert execs["e1"].status.value == "Succeeded"
    assert execs["e1"].action("Build", "B").resolved_configuration == {  # type: ignore[union-attr]
        "ProjectName": "p-prod"
    }
    assert rules.evaluate(
        rules.RuleDeclaration.model_validate(
            {
                "name": "V",
                "ruleTypeId": {"category": "Rule", "provider": "VariableCheck"},
                "configuration": {
                    "Variable": "#{variables.env}",
                    "Value": "prod",
                    "Operator": "EQ",
                },
            }
        ),
        now=now,
        variables=lambda ns, var: "prod",
    ).succeeded
