"""Build/AWS/CodeBuild/1 and Test/AWS/CodeBuild/1 as a local buildspec runner.

The same pipeline definition that names a CodeBuild project runs here against the
``buildspec.yml`` in its primary source, with CodeBuild's phase rules: a failing
install or pre_build skips the rest; a failing build still runs post_build (with
``CODEBUILD_BUILD_SUCCEEDING=0``) and the build still fails; ``finally`` always runs. The
log is written in CodeBuild's ``[Container]`` style so people can read it the way they
read CodeBuild logs.

Parameter Store and Secrets Manager values come from the local secrets source
(:mod:`providers.secrets`) and are masked in the log. Test reports are parsed into the
action's summary; as on CodeBuild, failed test cases fail nothing by themselves (a test
action fails when a command fails). ``cache.paths`` are kept per project on the worker.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

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
from providers.build_cache import BuildCache
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
from providers.container import ContainerBuild, container_for
from providers.reports import GroupTotals, collect_reports, summary_text, write_json
from providers.s3_source import bool_string
from providers.sandbox import base_environment
from providers.secrets import Masker, SecretNotFound, SecretsSource
from providers.ziputil import UnsafeArchiveError, check_tree

LOG_NAME = "build-log"
REPORTS_NAME = "test-reports"
EnvType = Literal["PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER"]
ENV_TYPES: tuple[EnvType, ...] = ("PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER")


class EnvVar(NamedTuple):
    name: str
    value: str
    type: EnvType = "PLAINTEXT"


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

    def environment(self) -> list[EnvVar]:
        return parse_environment_variables(self.EnvironmentVariables or "[]")


def parse_environment_variables(text: str) -> list[EnvVar]:
    """CodePipeline's ``[{"name": .., "value": .., "type": "PLAINTEXT"}]``, checked.

    PARAMETER_STORE and SECRETS_MANAGER values are names, resolved when the build starts.
    """
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"EnvironmentVariables is not valid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("EnvironmentVariables must be a JSON list of {name, value, type}")
    env: list[EnvVar] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError(f"EnvironmentVariables[{i}] needs a string 'name'")
        kind = item.get("type", "PLAINTEXT")
        if kind not in ENV_TYPES:
            raise ValueError(
                f"EnvironmentVariables[{i}] ({item['name']}): type {kind!r} is not one of "
                f"{', '.join(ENV_TYPES)}"
            )
        value = item.get("value", "")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(
                f"EnvironmentVariables[{i}] ({item['name']}): 'value' must be a string"
            )
        env.append(EnvVar(item["name"], str(value), kind))
    return env


class UnresolvedVariable(Exception):
    """A variable could not be resolved; the message names it and what it refers to."""


def resolve_environment(
    spec: Buildspec, action_env: list[EnvVar], source: SecretsSource, masker: Masker
) -> dict[str, str]:
    """The buildspec's env, then the action's EnvironmentVariables over it, secrets resolved
    (and handed to ``masker``). Raises UnresolvedVariable naming the first that is missing."""
    env = dict(spec.variables)

    def fetch(where: str, kind: EnvType, name: str) -> str:
        if kind == "PLAINTEXT":
            return name
        try:
            value = source.parameter(name) if kind == "PARAMETER_STORE" else source.secret(name)
        except SecretNotFound as exc:
            raise UnresolvedVariable(f"{where}: {exc}") from None
        masker.add(value)
        return value

    for var, name in spec.parameter_store.items():
        env[var] = fetch(f"env.parameter-store.{var}", "PARAMETER_STORE", name)
    for var, ref in spec.secrets_manager.items():
        env[var] = fetch(f"env.secrets-manager.{var}", "SECRETS_MANAGER", ref)
    for i, item in enumerate(action_env):
        env[item.name] = fetch(f"EnvironmentVariables[{i}] {item.name}", item.type, item.value)
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


class BuildRunner:
    """One build: prepare sources, run phases, collect artifacts, reports and cache.

    The CodeBuild provider reads the buildspec from the primary source; the Commands
    action (:mod:`providers.commands_action`) hands over one it made from its declaration.
    """

    label = "Build"
    shell_prefix = ""  # "set -o posix" for env.shell sh

    def __init__(
        self, job: Job, project: str, primary: str | None, action_env: list[EnvVar]
    ) -> None:
        self.job = job
        self.project = project
        self.primary = primary
        self.action_env = action_env
        self.build_id = f"{project}:{uuid.uuid4()}"
        self.root = job.workdir / "codebuild"
        self.state = BuildState()
        self.masker = Masker()
        self.reports: list[GroupTotals] = []
        self.container: ContainerBuild | None = None

    def run(self) -> Result:
        if self.root.exists():  # a retried attempt reusing its workdir starts clean
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        log_path = self.job.workdir / "build.log"
        mirror = self.masker.stream(self.job.log)
        log = BuildLog(log_path, mirror, self.job.sandbox.log_max_bytes)
        session: BashSession | None = None
        exported: dict[str, str] = {}
        attachments: dict[str, Path] = {}
        try:
            log.line(f"Running build {self.build_id} for CodeBuild project {self.project}")
            self.container = container_for(self.project)
            if self.container is not None:
                engine = self.container.engine.name
                log.line(f"Building in image {self.container.image} ({engine})")
            src, secondaries = self._prepare_sources(log)
            spec = self._load_buildspec(src, log)
            env = self._environment(src, secondaries, spec, log) if spec is not None else None
            if spec is not None and env is not None:
                # Restored before the session starts, which hands the source tree (cached
                # files included) to the build user.
                cache = self._cache(log)
                if cache is not None and spec.cache_paths:
                    cache.restore(src)
                session = BashSession(
                    src,
                    self.root / "state",
                    env,
                    log,
                    self.job.cancelled,
                    self.job.deadline,
                    self.job.sandbox,
                    self.container,
                    secondaries=list(secondaries.values()),
                )
                self._run_phases(spec, session, log)
                session.end_processes()  # none may change the source while it is read
                if self.state.succeeding:
                    self._upload_artifacts(spec, src, log)
                if spec.reports and not self.state.stopped:
                    attachments.update(self._collect_reports(spec, src, log))
                if cache is not None and spec.cache_paths and self.state.succeeding:
                    cache.save(src, spec.cache_paths)
                exported = self._exported(session, spec, log)
        except Exception as exc:
            # Keep the log's last line truthful when setup itself fails (bad PrimarySource).
            self.state.fail("DOWNLOAD_SOURCE", getattr(exc, "message", None) or repr(exc))
            raise
        finally:
            if session is not None:
                session.close()
            log.line(f"{self.label} {self.build_id} finished: {self._summary()}")
            log.close()
            mirror.close()
            self.masker.mask_file(log_path)
        attachments[LOG_NAME] = log_path  # last: the worker stores the last one as the log
        summary = self._summary()
        return Result(
            succeeded=self.state.succeeding,
            summary=summary,
            error_code=None if self.state.succeeding else self._error_code(),
            error_message=None if self.state.succeeding else summary,
            external_execution_id=self.build_id,
            output_variables=exported,
            attachments=attachments,
        )

    # -- preparation ---------------------------------------------------------------

    def _prepare_sources(self, log: BuildLog) -> tuple[Path, dict[str, Path]]:
        """The inputs as the build's own trees, which it may change freely."""
        inputs = self.job.inputs
        if not inputs:
            raise ActionFailed(f"{self.label} needs at least one input artifact")
        primary = self.primary or next(iter(inputs))
        if primary not in inputs:
            raise ActionFailed(
                f"PrimarySource {primary!r} is not one of the input artifacts {list(inputs)}"
            )
        self.primary = primary
        log.line("Entering phase DOWNLOAD_SOURCE")
        src = self.root / "src"
        self._take(inputs[primary], src)
        secondaries: dict[str, Path] = {}
        for name, path in inputs.items():
            if name != primary:
                secondaries[name] = self.root / "src-secondary" / name
                self._take(path, secondaries[name])
        log.line(f"CODEBUILD_SRC_DIR={src} (primary source {primary})")
        return src, secondaries

    def _take(self, source: Path, target: Path) -> None:
        """The input as the build's own tree: moved when the worker says nothing reads it
        again (one rename instead of re-creating every file), else copied."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.job.inputs_disposable:
            shutil.move(source, target)
        else:
            shutil.copytree(source, target, symlinks=True)

    def _load_buildspec(self, src: Path, log: BuildLog) -> Buildspec | None:
        try:
            path = find_buildspec(src)
            spec = parse_buildspec(path.read_text())
        except (BuildspecError, UnicodeDecodeError) as exc:
            self._setup_failed(str(exc), log)
            return None
        log.line(f"Using buildspec {path.name}")
        if getattr(self.job.configuration, "BatchEnabled", None) == "true":
            log.line("BatchEnabled is set: the local runner runs one build, not a batch")
        return spec

    def _setup_failed(self, reason: str, log: BuildLog) -> None:
        log.line(f"Phase complete: DOWNLOAD_SOURCE State: FAILED ({reason})")
        self.state.fail("DOWNLOAD_SOURCE", reason)
        self.state.aborted_at = "DOWNLOAD_SOURCE"

    def source_version(self) -> str:
        """The primary input's revision (a commit id, an S3 version id), else the execution."""
        primary = self.primary or ""
        return self.job.input_revisions.get(primary) or self.job.execution_id

    def _environment(
        self, src: Path, secondaries: dict[str, Path], spec: Buildspec, log: BuildLog
    ) -> dict[str, str] | None:
        """Worker env < buildspec env < action EnvironmentVariables < CODEBUILD_*.

        The same precedence as CodeBuild, where CodePipeline's variables arrive as a
        start-build override. Of the worker's own environment only what
        :func:`providers.sandbox.base_environment` allows (PATH, locale) is handed on.
        None (and the build failed) when a parameter or secret cannot be resolved.
        """
        needs_source = (
            spec.parameter_store
            or spec.secrets_manager
            or any(v.type != "PLAINTEXT" for v in self.action_env)
        )
        try:
            # Read only when asked for: a broken secrets file fails the builds that use it.
            source = SecretsSource.load(self.job.secrets_file if needs_source else None)
            resolved = resolve_environment(spec, self.action_env, source, self.masker)
        except (SecretNotFound, UnresolvedVariable) as exc:
            self._setup_failed(str(exc), log)
            return None
        env = base_environment()
        env.update(resolved)
        job = self.job
        arn = f"arn:aws:codebuild:{job.s3.region}:000000000000:build/{self.build_id}"
        version = self.source_version()
        env.update(
            {
                "CODEBUILD_CI": "true",
                "CODEBUILD_BUILD_ID": self.build_id,
                "CODEBUILD_BUILD_ARN": arn,
                "CODEBUILD_BUILD_NUMBER": str(job.attempt),
                "CODEBUILD_INITIATOR": f"codepipeline/{job.pipeline_name}",
                "CODEBUILD_SOURCE_VERSION": version,
                "CODEBUILD_RESOLVED_SOURCE_VERSION": version,
                "CODEBUILD_SRC_DIR": str(src),
                "CODEBUILD_START_TIME": str(int(time.time() * 1000)),
                "CODEBUILD_BUILD_IMAGE": self.container.image if self.container else "local",
                "AWS_REGION": job.s3.region,
                "AWS_DEFAULT_REGION": job.s3.region,
            }
        )
        for name, path in secondaries.items():
            env[f"CODEBUILD_SRC_DIR_{name}"] = str(path)
            if name in job.input_revisions:
                env[f"CODEBUILD_SOURCE_VERSION_{name}"] = job.input_revisions[name]
        self.shell_prefix = "set -o posix\n" if spec.shell == "sh" else ""
        return env

    def _cache(self, log: BuildLog) -> BuildCache | None:
        if self.job.cache_root is None:
            return None
        return BuildCache(self.job.cache_root, self.project, self.job.cache_max_bytes, log.line)

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
                self.shell_prefix + command,
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

    def _exported(self, session: BashSession, spec: Buildspec, log: BuildLog) -> dict[str, str]:
        """``exported-variables`` as the shell left them; never one holding a secret."""
        values = session.read_variables(spec.exported_variables)
        for name in [n for n, v in values.items() if self.masker.holds_secret(v)]:
            log.line(f"Not exporting {name}: its value holds a secret")
            del values[name]
        return values

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

    # -- reports -------------------------------------------------------------------

    def _collect_reports(self, spec: Buildspec, src: Path, log: BuildLog) -> dict[str, Path]:
        self.reports = collect_reports(spec.reports, src)
        for group in self.reports:
            log.line(
                f"Report group {group.name} ({group.file_format}): {group.files} files, "
                f"{group.describe()}, {group.duration_seconds:.3f}s"
            )
            for problem in group.problems:
                log.line(f"Report group {group.name}: {problem}")
        path = self.job.workdir / "test-reports.json"
        write_json(self.reports, path)
        return {REPORTS_NAME: path}

    # -- results -------------------------------------------------------------------

    def _summary(self) -> str:
        if self.state.succeeding:
            text = f"{self.label} succeeded"
        elif self.state.stopped:
            text = f"{self.label} {self.state.stopped} in phase {self.state.failed_phase}"
        else:
            text = f"{self.label} failed in phase {self.state.failed_phase}: {self.state.reason}"
        tests = summary_text(self.reports)
        if tests:
            text = f"{text}; {tests}"
        return self.masker.mask(text)

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
        config: CodeBuildConfig = job.configuration
        return BuildRunner(
            job, config.ProjectName, config.PrimarySource, config.environment()
        ).run()


class CodeBuild(_CodeBuildBase):
    action_type = ActionTypeId(
        category=Category.BUILD, owner="AWS", provider="CodeBuild", version="1"
    )


class CodeBuildTest(_CodeBuildBase):
    action_type = ActionTypeId(
        category=Category.TEST, owner="AWS", provider="CodeBuild", version="1"
    )
