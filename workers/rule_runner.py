"""What one attempt of a worker-run stage-condition rule (Commands) does on a build worker.

The attempt's life around it (lease, heartbeat, recording and applying the result) is
:mod:`workers.attempts`, the same as an action's.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from engine.execution import ActionResult, ExecutionState
from engine.messages import WorkKind
from providers.commands_rule import run_commands_rule
from providers.sandbox import base_environment
from workers.artifacts import ArtifactRef
from workers.attempts import run_attempt
from workers.runtime import Runtime

log = logging.getLogger("conveyor.rules")


def run_rule(
    rt: Runtime, execution_id: str, stage: str, rule_execution_id: str, attempt: int
) -> str:
    """One attempt of one rule evaluation (a Celery task's body)."""

    def work(state: ExecutionState, cancelled: threading.Event) -> ActionResult:
        return evaluate(rt, state, stage, rule_execution_id, cancelled)

    return run_attempt(rt, execution_id, stage, rule_execution_id, attempt, WorkKind.RULE, work)


def evaluate(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    rule_execution_id: str,
    cancelled: threading.Event,
) -> ActionResult:
    st = state.stage(stage)
    rr = st.rule_run(rule_execution_id) if st else None
    assert rr is not None
    rule = state.stage_decl(stage).rule(rr.kind, rr.condition, rr.rule)
    assert rule is not None
    with rt.scratch.directory("conveyor-rule-") as root:
        inputs: dict[str, Path] = {}
        try:
            for art in rule.input_artifacts:
                loc = state.artifacts.get(art.name)
                if loc is None:
                    continue
                inputs[art.name] = root / "in" / art.name
                inputs[art.name].mkdir(parents=True)
                rt.artifacts.download_to_dir(
                    ArtifactRef(**loc.model_dump(exclude={"name"})), inputs[art.name]
                )
            work = root / "work"
            work.mkdir()
            env = base_environment()
            env.update(
                {"CODEPIPELINE_EXECUTION_ID": state.execution_id, "CODEPIPELINE_STAGE": stage}
            )
            with (root / "rule.log").open("w", encoding="utf-8") as log_file:
                ok, summary = run_commands_rule(
                    list(rule.commands or []),
                    work,
                    inputs,
                    env,
                    log_file,
                    rr.deadline,
                    cancelled,
                    rt.sandbox,
                )
        except Exception as exc:  # an infrastructure error fails the rule, never wedges it
            log.exception("rule %s of %s crashed", rr.rule, stage)
            ok, summary = False, f"{type(exc).__name__}: {exc}"
    return ActionResult(succeeded=ok, summary=summary)
