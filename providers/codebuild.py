"""Build/AWS/CodeBuild/1 and Test/AWS/CodeBuild/1 as a local buildspec runner.

The same pipeline definition that names a CodeBuild project runs here against the
``buildspec.yml`` in its primary source, with CodeBuild's phase rules: a failing
install or pre_build skips the rest; a failing build still runs post_build (with
``CODEBUILD_BUILD_SUCCEEDING=0``) and the build still fails; ``finally`` always runs. The
log is written in CodeBuild's ``[Container]`` style so people can read it the way they
read CodeBuild logs.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import field_validator

from providers.base import (
    ActionFailed,
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.bash_session import BashSession, BuildLog
from providers.buildspec import (
    ArtifactPathError,
    ArtifactSpec,
    Buildspec,
    BuildspecError,
    Phase,
    collect_artifacts,
    find_buildspec,
    parse_buildspec,
)
from providers.s3_source import bool_string
from providers.sandbox import base_environment
from providers.ziputil import UnsafeArchiveError, check_tree

LOG_NAME = "build-log"


class CodeBuildConfig(ProviderConfig):
    ProjectName: str
    PrimarySource: str | None = None
    EnvironmentVariables: str | None = None
    BatchEnabled: str | None = None
    CombineArtifacts: str | None = None

    @field_validator("BatchEnabled", "CombineArtifacts", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        return bool_string(value)

    @field_validator("EnvironmentVariables")
    @classmethod
    def _env_json(cls, value: str | None) -> str | None:
        if value is not None:
            parse_environment_variables(value)
        return value

    def environment(self) -> dict[str, str]:
        return parse_environment_variables(self.EnvironmentVariables or "[]")


def parse_environment_variables(text: str) -> dict[str, str]:
    """CodePipeline's ``[{"name": .., "value": .., "type": "PLAINTEXT"}]`` as a dict.

    Only PLAINTEXT is supported: passing a Parameter Store name through as if it were the
    value would run the build with the wrong secret rather than fail.
    """
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"EnvironmentVariables is not valid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("EnvironmentVariables must be a JSON list of {name, value, type}")
    env: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"EnvironmentVariables[{i}] needs a string 'name'")
        kind = item.get("type", "PLAINTEXT")
        if kind != "PLAINTEXT":
            raise ValueError(
                f"EnvironmentVariables[{i}] type {kind!r} is not supported (PLAINTEXT only)"
            )
        env[item["name"]] = str(item.get("value", ""))
    return env


@dataclass
class BuildState:
    """How far the build got; the first failure is what the summary reports."""

    failed_phase: str | None = None
    reason: str | None = None
    aborted_at: str | None = None
    stopped: str | None = None

    @property
    def succeeding(self) -> bool:
        return self.failed_phase is None and self.stopped is None

    def fail(self, phase: str, reason: str) -> None:
        if self.failed_phase is None:
            self.failed_phase, self.reason = phase, reason


class _CodeBuildRunner:
    """One build: prepare sources, run phases, collect artifacts."""

    def __init__(self, job: Job, config: CodeBuildConfig) -> None:
        self.job = job
        self.config = config
        self.build_id = f"{config.ProjectName}:{uuid.uuid4()}"
        self.root = job.workdir / "codebuild"
        self.state = BuildState()

    def run(self) -> Result:
        if self.root.exists():  # a retried attempt reusing its workdir starts clean
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        log_path = self.job.workdir / "build.log"
        log = BuildLog(log_path, self.job.log, self.job.sandbox.log_max_bytes)
        session: BashSession | None = None
        exported: dict[str, str] = {}
        try:
            log.line(
                f"Running build {self.build_id} for CodeBuild project {self.config.ProjectName}"
            )
            src, secondaries = self._prepare_sources(log)
            spec = self._load_buildspec(src, log)
            if spec is not None:
                session = BashSession(
                    src,
                    self.root / "state",
                    self._environment(src, secondaries, spec),
                    log,
                    self.job.cancelled,
                    self.job.deadline,
                    self.job.sandbox,
                )
                self._run_phases(spec, session, log)
                session.end_processes()  # none may change the source while it is read
                if self.state.succeeding:
                    self._upload_artifacts(spec, src, log)
                exported = session.read_variables(spec.exported_variables)
        except Exception as exc:
            # Keep the log's last line truthful when setup itself fails (bad PrimarySource).
            self.state.fail("DOWNLOAD_SOURCE", getattr(exc, "message", None) or repr(exc))
            raise
        finally:
            if session is not None:
                session.close()
            log.line(f"Build {self.build_id} finished: {self._summary()}")
            log.close()
        return Result(
            succeeded=self.state.succeeding,
            summary=self._summary(),
            error_code=None if self.state.succeeding else self._error_code(),
            error_message=None if self.state.succeeding else self._summary(),
            external_execution_id=self.build_id,
            output_variables=exported,
            attachments={LOG_NAME: log_path},
        )

    # -- preparation ---------------------------------------------------------------

    def _prepare_sources(self, log: BuildLog) -> tuple[Path, dict[str, Path]]:
        """Copy inputs so the build can write freely without touching the worker's copy."""
        inputs = self.job.inputs
        if not inputs:
            raise ActionFailed("CodeBuild needs at least one input artifact")
        primary = self.config.PrimarySource or next(iter(inputs))
        if primary not in inputs:
            raise ActionFailed(
                f"PrimarySource {primary!r} is not one of the input artifacts {list(inputs)}"
            )
        log.line("Entering phase DOWNLOAD_SOURCE")
        src = self.root / "src"
        shutil.copytree(inputs[primary], src, symlinks=True)
        secondaries: dict[str, Path] = {}
        for name, path in inputs.items():
            if name != primary:
                secondaries[name] = self.root / "src-secondary" / name
                shutil.copytree(path, secondaries[name], symlinks=True)
        log.line(f"CODEBUILD_SRC_DIR={src} (primary source {primary})")
        return src, secondaries

    def _load_buildspec(self, src: Path, log: BuildLog) -> Buildspec | None:
        try:
            path = find_buildspec(src)
            spec = parse_buildspec(path.read_text())
        except (BuildspecError, UnicodeDecodeError) as exc:
            log.line(f"Phase complete: DOWNLOAD_SOURCE State: FAILED ({exc})")
            self.state.fail("DOWNLOAD_SOURCE", str(exc))
            self.state.aborted_at = "DOWNLOAD_SOURCE"
            return None
        log.line(f"Using buildspec {path.name}")
        if self.config.BatchEnabled == "true":
            log.line("BatchEnabled is set: the local runner runs one build, not a batch")
        return spec

    def _environment(
        self, src: Path, secondaries: dict[str, Path], spec: Buildspec
    ) -> dict[str, str]:
        """Allowed worker env < buildspec env < action EnvironmentVariables < CODEBUILD_*.

        The same precedence as CodeBuild, where CodePipeline's variables arrive as a
        start-build override. Of the worker's own environment only what
        :func:`providers.sandbox.base_environment` allows (PATH, locale) is handed on.
        """
        env = base_environment()
        env.update(spec.variables)
        env.update(self.config.environment())
        job = self.job
        arn = f"arn:aws:codebuild:{job.s3.region}:000000000000:build/{self.build_id}"
        env.update(
            {
                "CODEBUILD_CI": "true",
                "CODEBUILD_BUILD_ID": self.build_id,
                "CODEBUILD_BUILD_ARN": arn,
                "CODEBUILD_BUILD_NUMBER": str(job.attempt),
                "CODEBUILD_INITIATOR": f"codepipeline/{job.pipeline_name}",
                "CODEBUILD_SOURCE_VERSION": job.execution_id,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": job.execution_id,
                "CODEBUILD_SRC_DIR": str(src),
                "CODEBUILD_START_TIME": str(int(time.time() * 1000)),
                "CODEBUILD_BUILD_IMAGE": "local",
                "AWS_REGION": job.s3.region,
                "AWS_DEFAULT_REGION": job.s3.region,
            }
        )
        for name, path in secondaries.items():
            env[f"CODEBUILD_SRC_DIR_{name}"] = str(path)
        return env

    # -- phases --------------------------------------------------------------------

    def _run_phases(self, spec: Buildspec, session: BashSession, log: BuildLog) -> None:
        for phase in spec.phases:
            # After install/pre_build abort nothing else runs; after build, post_build does.
            if self.state.aborted_at is not None and not (
                self.state.aborted_at == "build" and phase.name == "post_build"
            ):
                log.line(f"Skipping phase {phase.name.upper()}")
                continue
            self._run_phase(phase, session, log)
            if self.state.stopped:
                return

    def _run_phase(self, phase: Phase, session: BashSession, log: BuildLog) -> None:
        name = phase.name.upper()
        log.line(f"Entering phase {name}")
        failure = self._run_commands(phase.commands, session, log)
        if phase.finally_commands and not self.state.stopped:
            # finally always runs; the summary still reports the first failure.
            finally_failure = self._run_commands(phase.finally_commands, session, log)
            failure = failure or finally_failure
        if self.state.stopped:
            log.line(f"Phase complete: {name} State: STOPPED ({self.state.stopped})")
            self.state.fail(name, f"build {self.state.stopped} in phase {name}")
            return
        if failure is None:
            log.line(f"Phase complete: {name} State: SUCCEEDED")
            return
        log.line(f"Phase complete: {name} State: FAILED")
        log.line(f"Phase context status code: COMMAND_EXECUTION_ERROR Message: {failure}")
        self.state.fail(name, failure)
        if phase.on_failure == "ABORT" and self.state.aborted_at is None:
            self.state.aborted_at = phase.name

    def _run_commands(self, commands: list[str], session: BashSession, log: BuildLog) -> str | None:
        """Run until one fails; returns that failure's description."""
        for command in commands:
            log.line(f"Running command {command}")
            outcome = session.run(
                command,
                {"CODEBUILD_BUILD_SUCCEEDING": "1" if self.state.succeeding else "0"},
            )
            if outcome.stopped:
                self.state.stopped = outcome.stopped
                log.line(f"Command {outcome.stopped}: {command}")
                return f"command `{command}` {outcome.stopped}"
            if not outcome.ok:
                log.line(
                    f"Command did not exit successfully {command} exit status {outcome.exit_code}"
                )
                return f"command `{command}` exited {outcome.exit_code}"
        return None

    # -- artifacts -----------------------------------------------------------------

    def _artifact_plan(self, spec: Buildspec) -> list[tuple[str, ArtifactSpec, Path]]:
        """Which buildspec artifact section fills which output artifact.

        Secondary artifacts match outputs by identifier; the primary ``artifacts`` section
        fills the first output that no identifier claims (with one output, that output).
        """
        plan: list[tuple[str, ArtifactSpec, Path]] = []
        primary_used = False
        for name, dest in self.job.outputs.items():
            if name in spec.secondary_artifacts:
                plan.append((name, spec.secondary_artifacts[name], dest))
            elif spec.artifacts is not None and not primary_used:
                plan.append((name, spec.artifacts, dest))
                primary_used = True
            else:
                raise ArtifactPathError(
                    f"output artifact {name!r} has no artifacts section in the buildspec "
                    f"(add artifacts.files or artifacts.secondary-artifacts.{name})"
                )
        return plan

    def _upload_artifacts(self, spec: Buildspec, src: Path, log: BuildLog) -> None:
        if not self.job.outputs:
            return
        log.line("Entering phase UPLOAD_ARTIFACTS")
        try:
            for name, artifact, dest in self._artifact_plan(spec):
                count = collect_artifacts(artifact, src, dest)
                log.line(f"Collected {count} files into output artifact {name}")
                try:
                    check_tree(
                        dest,
                        max_bytes=self.job.max_artifact_bytes,
                        max_files=self.job.max_artifact_files,
                    )
                except UnsafeArchiveError as exc:
                    raise ArtifactPathError(f"output artifact {name} is too large: {exc}") from exc
        except ArtifactPathError as exc:
            log.line(f"Phase complete: UPLOAD_ARTIFACTS State: FAILED ({exc})")
            self.state.fail("UPLOAD_ARTIFACTS", str(exc))
            return
        log.line("Phase complete: UPLOAD_ARTIFACTS State: SUCCEEDED")

    # -- results -------------------------------------------------------------------

    def _summary(self) -> str:
        if self.state.succeeding:
            return "Build succeeded"
        if self.state.stopped:
            return f"Build {self.state.stopped} in phase {self.state.failed_phase}"
        return f"Build failed in phase {self.state.failed_phase}: {self.state.reason}"

    def _error_code(self) -> str:
        return "ConfigurationError" if self.state.failed_phase == "DOWNLOAD_SOURCE" else "JobFailed"


class _CodeBuildBase(Provider):
    Config = CodeBuildConfig
    min_inputs = 1
    max_inputs = 5
    min_outputs = 0
    max_outputs = 5
    # AWS: "CodeBuild build action and test action: 8 hours" (CodePipeline quotas).
    default_timeout_minutes = 8 * 60

    def run(self, job: Job) -> Result:
        return _CodeBuildRunner(job, job.configuration).run()


class CodeBuild(_CodeBuildBase):
    action_type = ActionTypeId(
        category=Category.BUILD, owner="AWS", provider="CodeBuild", version="1"
    )


class CodeBuildTest(_CodeBuildBase):
    action_type = ActionTypeId(
        category=Category.TEST, owner="AWS", provider="CodeBuild", version="1"
    )
