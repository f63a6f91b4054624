"""What one attempt of a worker-run stage-condition rule does on a worker: a Commands rule's
shell commands or a CodeBuild rule's build (on build workers), or a LambdaInvoke rule's
function (on invoke workers).

The attempt's life around it (lease, heartbeat, recording and applying the result) is
:mod:`workers.attempts`, the same as an action's.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from engine.execution import ActionResult, ExecutionState, RuleRun
from engine.messages import WorkKind
from engine.rules import RuleDeclaration
from providers.base import ActionFailed, ArtifactObject, Job, S3Access
from providers.codebuild import CodeBuild, CodeBuildConfig
from providers.commands_rule import run_commands_rule
from providers.job_data import pipeline_context
from providers.lambda_invoke import Invocation, run_function
from providers.sandbox import base_environment
from workers.artifacts import ArtifactRef
from workers.attempts import run_attempt
from workers.located import job_channel
from workers.runner import build_cache_root, input_revisions
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
    if rr.provider == "LambdaInvoke":
        with (
            rt.scratch.directory("conveyor-rule-") as root,
            (root / "function.log").open("w", encoding="utf-8") as log_file,
        ):
            ok, summary = _lambda_rule(rt, state, stage, rr, rule, root, log_file, cancelled)
        return ActionResult(succeeded=ok, summary=summary)
    with rt.scratch.directory("conveyor-rule-") as root:
        inputs: dict[str, Path] = {}
        try:
            # Artifacts travel as stored; both kinds of rule here read files: unpack them.
            for art in rule.input_artifacts:
                loc = state.artifacts.get(art.name)
                if loc is None:
                    continue
                inputs[art.name] = root / "in" / art.name
                inputs[art.name].mkdir(parents=True)
                rt.artifacts.download_to_dir(
                    ArtifactRef(**loc.model_dump(exclude={"name"})), inputs[art.name], name=art.name
                )
            work = root / "work"
            work.mkdir()
            if rr.provider == "CodeBuild":
                ok, summary = _codebuild_rule(rt, state, stage, rr, inputs, work, cancelled)
                return ActionResult(succeeded=ok, summary=summary)
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


def _codebuild_rule(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    rr: RuleRun,
    inputs: dict[str, Path],
    work: Path,
    cancelled: threading.Event,
) -> tuple[bool, str]:
    """The build a CodeBuild action with this configuration would run, by the same runner
    (buildspec from the primary source, secrets, cache, sandbox); the rule succeeds if the
    build does. The rule keeps no artifacts; the build's log goes to the worker's log."""
    s = rt.settings
    try:
        config = CodeBuildConfig.model_validate(rr.resolved_configuration)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return False, f"invalid configuration: {problems}"
    with (work / "rule.log").open("w", encoding="utf-8") as log_file:
        job = Job(
            pipeline_name=state.pipeline_name,
            execution_id=state.execution_id,
            stage_name=stage,
            action_name=rr.rule,
            attempt=rr.attempt,
            configuration=config,
            variables=dict(state.variables),
            inputs=inputs,
            outputs={},
            workdir=work,
            log=log_file,
            s3=S3Access(s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key, s.s3_region),
            deadline=rr.deadline,
            cancelled=cancelled,
            max_artifact_bytes=s.max_artifact_bytes,
            max_artifact_files=s.max_artifact_files,
            api_endpoint=s.api_endpoint,
            inputs_disposable=True,
            input_revisions=input_revisions(state, list(inputs)),
            secrets_file=s.secrets_file,
            cache_root=build_cache_root(rt),
            cache_max_bytes=s.build_cache_max_bytes,
            sandbox=rt.sandbox,
            pipeline_arn=s.account.pipeline_arn(state.pipeline_name),
            account_id=s.account_id,
        )
        try:
            result = CodeBuild().run(job)
        except ActionFailed as exc:
            return False, exc.message
    summary = result.summary or ("build succeeded" if result.succeeded else "build failed")
    return result.succeeded, summary


def _lambda_rule(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    rr: RuleRun,
    rule: RuleDeclaration,
    root: Path,
    log_file: TextIO,
    cancelled: threading.Event,
) -> tuple[bool, str]:
    """Call the rule's function as a Lambda action's, with the rule's input artifacts as
    locations; its PutJobSuccessResult passes the rule, PutJobFailureResult fails it."""
    s = rt.settings
    config = rr.resolved_configuration
    name = config.get("FunctionName", "")
    inputs = {
        art.name: ArtifactObject(loc.bucket, loc.key)
        for art in rule.input_artifacts
        if (loc := state.artifacts.get(art.name)) is not None
    }
    invocation = Invocation(
        function_name=name,
        user_parameters=config.get("UserParameters"),
        inputs=inputs,
        outputs={},
        s3=S3Access(s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key, s.s3_region),
        api_endpoint=s.api_endpoint,
        deadline=rr.deadline,
        cancelled=cancelled,
        workdir=root,
        pipeline_context=pipeline_context(
            state.pipeline_name,
            state.execution_id,
            stage,
            rr.rule,
            pipeline_arn=s.account.pipeline_arn(state.pipeline_name),
        ),
        account_id=s.account_id,
        s3_gateway=s.s3_gateway_endpoint,
    )
    jobs = job_channel(
        rt, state, stage, rr.rule_execution_id, rr.attempt, WorkKind.RULE, rr.deadline
    )
    try:
        result = run_function(invocation, jobs, log_file)
    except ActionFailed as exc:
        return False, exc.message
    except Exception as exc:  # an infrastructure error fails the rule, never wedges it
        log.exception("rule %s of %s crashed", rr.rule, stage)
        return False, f"{type(exc).__name__}: {exc}"
    if result.succeeded:
        return True, result.summary or f"function {name} succeeded"
    return False, result.error_message or f"function {name} failed"
