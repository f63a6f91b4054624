"""Compute/AWS/Commands/1: CodePipeline's Commands action, run by the local buildspec runner.

On AWS the action runs its ``commands`` in a CodePipeline-managed CodeBuild build; here it
is a build whose buildspec is made from the action declaration: one ``build`` phase holding
the commands, ``outputVariables`` as ``env.exported-variables`` (read from the shell after
the last command), each output artifact's ``files`` as its artifact section (every file of
the source directory when none are given) and ``environmentVariables`` (PLAINTEXT or
SECRETS_MANAGER) as the action's environment. The first input artifact is the working
directory (``CODEBUILD_SRC_DIR``), the others are at ``CODEBUILD_SRC_DIR_<name>``, and the
``CODEBUILD_*`` variables are those of a CodeBuild build.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast, get_args

from providers.base import (
    ActionFailed,
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.bash_session import BuildLog
from providers.buildspec import ArtifactSpec, Buildspec, Phase
from providers.codebuild import BuildRunner, EnvType, EnvVar

ALL_FILES = ["**/*"]


class CommandsConfig(ProviderConfig):
    """The Commands action has no configuration keys; it is all in the declaration."""


class _CommandsRunner(BuildRunner):
    label = "Commands"

    def _load_buildspec(self, src: Path, log: BuildLog) -> Buildspec:
        job = self.job
        log.line(f"Running {len(job.commands)} commands of action {job.action_name}")
        return Buildspec(
            phases=[Phase("build", commands=list(job.commands))],
            exported_variables=list(job.output_variable_names),
            secondary_artifacts={
                name: ArtifactSpec(files=job.output_files.get(name) or ALL_FILES)
                for name in job.outputs
            },
        )


class CommandsAction(Provider):
    action_type = ActionTypeId(
        category=Category.COMPUTE, owner="AWS", provider="Commands", version="1"
    )
    Config = CommandsConfig
    takes_commands = True
    # The Commands action's artifact bounds (CodePipeline: 1 to 10 inputs, 0 or 1 output).
    min_inputs = 1
    max_inputs = 10
    min_outputs = 0
    max_outputs = 1
    # AWS: "The timeout for builds with the Commands action is 55 minutes".
    default_timeout_minutes = 55

    def run(self, job: Job) -> Result:
        if not job.commands:
            raise ActionFailed("a Commands action needs 1 to 50 commands in its declaration")
        env: list[EnvVar] = []
        for item in job.environment_variables:
            kind = item.get("type", "PLAINTEXT")
            if kind not in get_args(EnvType):
                raise ActionFailed(f"environmentVariables {item.get('name')}: type {kind!r}")
            env.append(EnvVar(item["name"], item["value"], cast(EnvType, kind)))
        return _CommandsRunner(job, job.action_name, None, env).run()
