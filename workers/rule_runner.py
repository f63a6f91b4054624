"""A stage-condition rule that runs commands (the Commands rule) on a build worker."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from engine.artifacts import ArtifactRef
from engine.messages import RuleCompleted
from providers.commands_rule import run_commands_rule
from workers.runtime import Runtime

log = logging.getLogger("conveyor.rules")


def run_rule(rt: Runtime, execution_id: str, stage: str, rule_execution_id: str) -> str:
    """Run one rule evaluation if it is still wanted, then report it to the engine."""
    state = rt.store.try_load(execution_id)
    st = state.stage(stage) if state else None
    rr = (
        next((x for x in st.rules if x.rule_execution_id == rule_execution_id), None)
        if st
        else None
    )
    if state is None or rr is None or rr.status != "InProgress":
        return "stale"
    decl = state.definition.stage(stage)
    assert decl is not None
    source = {
        "beforeEntry": decl.before_entry,
        "onSuccess": decl.on_success,
        "onFailure": decl.on_failure,
    }[rr.kind]
    assert source is not None
    rule = next(r for r in source.conditions[rr.condition].rules if r.name == rr.rule)
    with tempfile.TemporaryDirectory(prefix="conveyor-rule-", dir=rt.settings.workdir) as tmp:
        root = Path(tmp)
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
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
            env.update({"CODEPIPELINE_EXECUTION_ID": execution_id, "CODEPIPELINE_STAGE": stage})
            deadline = rr.deadline
            with (root / "rule.log").open("w", encoding="utf-8") as log_file:
                ok, summary = run_commands_rule(
                    list(rule.commands or []),
                    work,
                    inputs,
                    env,
                    log_file,
                    deadline,
                    threading.Event(),
                )
        except Exception as exc:  # an infrastructure error fails the rule, never wedges it
            log.exception("rule %s of %s crashed", rr.rule, stage)
            ok, summary = False, f"{type(exc).__name__}: {exc}"
    event = RuleCompleted(
        now=time.time(),
        execution_id=execution_id,
        stage=stage,
        rule_execution_id=rule_execution_id,
        succeeded=ok,
        summary=summary,
    )
    for delay in (0.0, 1.0, 2.0, 4.0):  # a Redis blip must not lose the verdict
        time.sleep(delay)
        try:
            rt.store.apply(state.pipeline_name, event)
            break
        except Exception:
            log.warning("could not report rule %s yet", rr.rule, exc_info=True)
    # If every try failed, the rule's deadline fails it in the sweep: nothing hangs.
    return "succeeded" if ok else "failed"
