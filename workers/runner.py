"""What one attempt of an action does on a worker: inputs down, provider run, outputs up.

The attempt's life around it (lease, heartbeat, recording and applying the result) is
:mod:`workers.attempts`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TextIO, TypeVar

from engine.errors import ConveyorError, ProviderError
from engine.execution import ActionResult, ArtifactLocation, ExecutionState
from engine.messages import WorkKind
from engine.variables import MAX_OUTPUT_VARIABLES_BYTES, output_variables_size
from providers.base import ActionFailed, Category, Job, Provider, Result, S3Access
from workers.artifacts import ArtifactRef, ArtifactStore, artifact_key
from workers.attempts import run_attempt
from workers.located import (
    declared_provider,
    input_locations,
    job_channel,
    job_queue,
    output_locations,
    written_output,
)
from workers.retry import RetriesExhausted, Retry, RetryPolicy, retrying
from workers.runtime import Runtime

T = TypeVar("T")

log = logging.getLogger("conveyor.worker")


def run_action(rt: Runtime, execution_id: str, stage: str, action: str, attempt: int) -> str:
    """One attempt of one action (a Celery task's body)."""

    def work(state: ExecutionState, cancelled: threading.Event) -> ActionResult:
        return execute(rt, state, stage, action, attempt, cancelled)

    return run_attempt(rt, execution_id, stage, action, attempt, WorkKind.ACTION, work)


def execute(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    action: str,
    attempt: int,
    cancelled: threading.Event,
) -> ActionResult:
    """Inputs down, the provider's run, outputs up, the log up: each step retried on its own
    through transient failures (workers.retry), so a step that finished is never redone."""
    act = state.action(stage, action)
    assert act is not None and act.action_execution_id is not None
    decl = state.action_decl(stage, action)
    provider_cls = rt.registry.get(decl.action_type_id) or declared_provider(
        rt, decl.action_type_id
    )
    if provider_cls is None:
        return ActionResult(
            succeeded=False,
            error_code="UnknownProvider",
            error_message=f"no provider for {decl.action_type_id} on this worker",
        )
    s = rt.settings
    bucket = state.artifact_bucket
    policy = RetryPolicy(
        max_attempts=s.transient_retry_attempts, budget_seconds=s.transient_retry_seconds
    )
    with rt.scratch.directory() as tmp:
        log_path = tmp / "action.log"
        outputs: list[ArtifactLocation] = []
        attachments: dict[str, Path] = {}  # the provider's logs, kept if a later step fails
        with log_path.open("w", encoding="utf-8") as log_file:
            steps = _Steps(policy, act.deadline, cancelled, _Notes(log_file), f"{stage}.{action}")
            try:
                config = provider_cls.Config.model_validate(act.resolved_configuration)
                located = provider_cls.uses_artifact_locations  # its code reads S3 itself
                # Artifacts travel byte for byte; an action that reads files unpacks them.
                unpacked = provider_cls.needs_contents(config)
                inputs: dict[str, Path] = {}
                input_files: dict[str, Path] = {}
                for loc in [] if located else act.input_artifacts:
                    ref = ArtifactRef(**loc.model_dump(exclude={"name"}))
                    input_files[loc.name] = tmp / "in-objects" / loc.name
                    steps.run(
                        f"downloading input artifact {loc.name}",
                        partial(_download, rt.artifacts, ref, input_files[loc.name]),
                    )
                    if unpacked:
                        archive = input_files.pop(loc.name)
                        inputs[loc.name] = tmp / "in" / loc.name
                        rt.artifacts.unpack(
                            archive,
                            inputs[loc.name],
                            name=loc.name,
                            where=rt.artifacts.object_url(ref.bucket, ref.key),
                        )
                        archive.unlink()
                out_dirs = {
                    a.name: tmp / "out" / a.name for a in decl.output_artifacts if not located
                }
                (tmp / "work").mkdir()
                job = Job(
                    pipeline_name=state.pipeline_name,
                    execution_id=state.execution_id,
                    stage_name=stage,
                    action_name=action,
                    attempt=attempt,
                    configuration=config,
                    variables=dict(state.variables),
                    inputs=inputs,
                    input_files=input_files,
                    outputs=out_dirs,
                    workdir=tmp / "work",
                    log=log_file,
                    s3=S3Access(
                        s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key, s.s3_region
                    ),
                    deadline=act.deadline,
                    cancelled=cancelled,
                    revision=_pinned_revision(state, action),
                    max_artifact_bytes=s.max_artifact_bytes,
                    max_artifact_files=s.max_artifact_files,
                    api_endpoint=s.api_endpoint,
                    s3_gateway_url=s.s3_gateway_endpoint,
                    pipeline_arn=s.account.pipeline_arn(state.pipeline_name),
                    account_id=s.account_id,
                    inputs_disposable=True,
                    input_locations=input_locations(act) if located else {},
                    output_locations=(
                        output_locations(state, act, decl, attempt) if located else {}
                    ),
                    jobs=(
                        job_channel(
                            rt,
                            state,
                            stage,
                            action,
                            attempt,
                            WorkKind.ACTION,
                            act.deadline,
                            job_queue(provider_cls, act.resolved_configuration),
                        )
                        if located
                        else None
                    ),
                    action_execution_id=act.action_execution_id,
                    input_revisions=input_revisions(state, [*inputs, *input_files]),
                    secrets_file=s.secrets_file,
                    cache_root=build_cache_root(rt),
                    cache_max_bytes=s.build_cache_max_bytes,
                    commands=list(decl.commands or []),
                    output_variable_names=list(decl.output_variables or []),
                    environment_variables=[
                        e.model_dump() for e in decl.environment_variables or []
                    ],
                    output_files={a.name: list(a.files) for a in decl.output_artifacts if a.files},
                    sandbox=rt.sandbox,
                )
                res = steps.run("running the provider", partial(_run_provider, provider_cls(), job))
                attachments = dict(res.attachments)
                if res.succeeded:
                    (tmp / "zip").mkdir()
                    for name, d in out_dirs.items():
                        # Zipped once; only the upload of that zip is retried.
                        if name in res.verbatim_outputs:
                            packed = rt.artifacts.package_verbatim(
                                res.verbatim_outputs[name], name=name
                            )
                        elif name in res.ready_outputs:
                            packed = rt.artifacts.package_file(res.ready_outputs[name], name=name)
                        else:
                            packed = rt.artifacts.package_dir(
                                d, tmp / "zip" / f"{name}.zip", name=name
                            )
                        key = artifact_key(
                            state.pipeline_name, name, act.action_execution_id, attempt
                        )
                        ref = steps.run(
                            f"uploading output artifact {name}",
                            partial(rt.artifacts.upload_packed, packed, bucket, key),
                        )
                        outputs.append(
                            ArtifactLocation(name=name, **ref.model_dump(exclude={"etag"}))
                        )
                    for name, obj in job.output_locations.items():
                        ref = steps.run(
                            f"checking output artifact {name}",
                            partial(written_output, rt.artifacts, name, obj),
                        )
                        outputs.append(
                            ArtifactLocation(name=name, **ref.model_dump(exclude={"etag"}))
                        )
            except RetriesExhausted as exc:
                steps.notes.line(f"Giving up: {exc.message}")
                log.warning("%s.%s: %s", stage, action, exc.message)
                res = _failure(exc.error, exc.message)
            except Exception as exc:
                res = _failure(exc)
                if res.error_code == "InternalError":  # a bug must fail the action, not wedge it
                    log.exception("action %s.%s crashed", stage, action)
        log_loc = None
        # One log per action: the provider's own (a build log) when it has one, which the
        # worker's lines also go to (job.log, then steps.notes); else the worker's action log,
        # kept when there is something to read in it: the action failed or met transient
        # failures. (CodePipeline keeps no log of an S3 deploy either; one object less per
        # action is a good part of what the lightest action costs.)
        if not attachments and (not res.succeeded or steps.retried):
            attachments = {"action-log": log_path}
        if attachments:
            steps.notes.also_to(attachments[_primary_name(attachments)])
        prefix = f"{state.pipeline_name[:20]}/logs/{act.action_execution_id}-{attempt}"
        for name, path in attachments.items():
            try:
                ref = steps.run(
                    f"uploading the {name}",
                    partial(rt.artifacts.upload_file, path, bucket, f"{prefix}/{name}.log"),
                )
            except Exception as exc:  # the action's outcome stands without its log
                log.warning("could not store %s for %s.%s: %s", name, stage, action, exc)
                continue
            if log_loc is None or name != "action-log":
                log_loc = ArtifactLocation(name=name, **ref.model_dump(exclude={"etag"}))
    succeeded = res.succeeded and bool(outputs or not decl.output_artifacts)
    error_code, error_message = res.error_code, res.error_message
    variables = dict(res.output_variables)
    size = output_variables_size(variables)
    if size > MAX_OUTPUT_VARIABLES_BYTES:
        variables = {}  # never stored: later actions must not see a partial namespace
        if succeeded:
            succeeded = False
            error_code = "OutputVariablesSizeExceeded"
            error_message = (
                f"the action's output variables total {size} bytes; CodePipeline allows at "
                f"most {MAX_OUTPUT_VARIABLES_BYTES} bytes for all output variables of an action"
            )
    summary = res.summary
    if succeeded and steps.retried:
        summary = _with_retries(summary, steps.retried)
    return ActionResult(
        succeeded=succeeded,
        summary=summary,
        error_code=error_code,
        error_message=error_message,
        external_execution_id=res.external_execution_id,
        external_execution_url=res.external_execution_url,
        output_artifacts=outputs,
        output_variables=variables,
        revision_id=res.revision_id,
        revision_summary=res.revision_summary,
        log_location=log_loc,
    )


class _Notes:
    """The worker's own lines in the action's log (retries), stamped like a build log's.

    They go to ``job.log`` while it is open. A provider's own log (a build log), when it has
    one, is the log that is stored: once it is complete, every line noted so far is
    appended to it, and later ones (retries of the log's own upload) go there as well.
    """

    def __init__(self, log_file: TextIO) -> None:
        self._log_file = log_file
        self._own = Path(log_file.name)
        self._stored: Path | None = None
        self._lines: list[str] = []

    def line(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        entry = f"[Conveyor] {stamp} {text}\n"
        self._lines.append(entry)
        if not self._log_file.closed:
            self._log_file.write(entry)
            self._log_file.flush()
        elif self._stored == self._own:
            _append(self._own, [entry])
        if self._stored is not None and self._stored != self._own:
            _append(self._stored, [entry])

    def also_to(self, stored: Path) -> None:
        """``stored`` is the log that will be uploaded: make it hold every line."""
        if stored != self._own and stored.exists():
            _append(stored, self._lines)
        self._stored = stored


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(lines)


class _Steps:
    """Runs each step of the attempt under the retry policy, noting every retry."""

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: float | None,
        cancelled: threading.Event,
        notes: _Notes,
        action: str,
    ) -> None:
        self.policy, self.deadline, self.cancelled = policy, deadline, cancelled
        self.notes, self.action = notes, action
        self.retried = 0  # transient failures retried, over all steps
        self.gave_up = False

    def run(self, what: str, op: Callable[[], T]) -> T:
        """Run one step. Once a step has used up its retries (the endpoint stayed down for
        the whole budget), later steps (the log's upload) get one try: the action has
        failed already, and its report should not wait another budget for a log."""
        policy = replace(self.policy, max_attempts=1) if self.gave_up else self.policy
        failures = 0

        def note(retry: Retry) -> None:
            nonlocal failures
            failures += 1
            self.retried += 1
            text = retry.describe()
            self.notes.line(f"{what}: {text}")
            log.warning("%s: %s: %s", self.action, what, text)

        try:
            result = retrying(
                op,
                policy,
                deadline=self.deadline,
                on_retry=note,
                transient=_is_transient,
                wait=self.cancelled.wait,
            )
        except RetriesExhausted:
            self.gave_up = True
            raise
        if failures:
            self.notes.line(f"{what}: succeeded on attempt {failures + 1}")
        return result


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ActionFailed | ProviderError) and exc.retryable


def _download(store: ArtifactStore, ref: ArtifactRef, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    store.download_verified(ref, dest)


def _run_provider(provider: Provider, job: Job) -> Result:
    for directory in job.outputs.values():
        _fresh_dir(directory)  # a retried run starts from empty outputs
    return provider.run(job)


def _fresh_dir(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _primary_name(attachments: dict[str, Path]) -> str:
    """Which attachment becomes the action's log: a provider's own over the action log."""
    names = [n for n in attachments if n != "action-log"]
    return names[-1] if names else "action-log"


def _failure(exc: BaseException, message: str | None = None) -> Result:
    """A failed step as the attempt's result: the message people see, a code by type."""
    if isinstance(exc, ActionFailed):
        code, text = "JobFailed", exc.message
    elif isinstance(exc, ConveyorError):
        code, text = type(exc).__name__, exc.message
    else:
        code, text = "InternalError", f"{type(exc).__name__}: {exc}"
    return Result(succeeded=False, error_code=code, error_message=message or text)


def _with_retries(summary: str | None, retried: int) -> str:
    failures = f"{retried} transient failure{'s' if retried != 1 else ''}"
    if summary:
        return f"{summary} (after retrying {failures})"
    return f"Succeeded after retrying {failures}"


# Revision types a source action can fetch exactly (an S3 object's ETag cannot be).
_PINNABLE = ("S3_OBJECT_VERSION_ID", "IMAGE_DIGEST", "COMMIT_ID")


def _pinned_revision(state: ExecutionState, action: str) -> str | None:
    """The revision a trigger (a poll, a webhook, a sourceRevisions override) pinned this
    source action to: an object version, an image digest or a git commit."""
    for rev in state.source_revisions:
        if rev.get("actionName") == action and rev.get("revisionType") in _PINNABLE:
            return str(rev.get("revisionId"))
    return None


def build_cache_root(rt: Runtime) -> Path:
    """Where builds on this worker keep ``cache.paths`` between runs."""
    return Path(rt.settings.build_cache_dir or rt.scratch.root / "build-cache")


def input_revisions(state: ExecutionState, artifacts: list[str]) -> dict[str, str]:
    """Input artifact -> the revision its source action recorded on this execution (a commit
    id, an S3 version id); artifacts not made by a source action are left out."""
    producer: dict[str, str] = {}
    for stage in state.decl.stages:
        for action in stage.actions:
            if action.action_type_id.category is not Category.SOURCE:
                continue  # only sources record revisions (by action name, unique among them)
            for out in action.output_artifacts:
                producer.setdefault(out.name, action.name)
    revisions = {
        str(rev.get("actionName")): str(rev["revisionId"])
        for rev in state.source_revisions
        if rev.get("revisionId")
    }
    return {
        name: revisions[producer[name]]
        for name in artifacts
        if name in producer and producer[name] in revisions
    }
