"""One attempt of one action on a worker: inputs down, provider run, outputs up, result recorded.

Idempotent by (execution, action execution, attempt): a stale or finished attempt is a no-op,
a recorded result is only re-announced, and a lease keeps two workers off the same attempt.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.artifacts import ArtifactRef, artifact_key
from engine.errors import ConveyorError
from engine.execution import ActionResult, ActionStatus, ArtifactLocation, ExecutionState
from engine.store import Store
from providers.base import ActionFailed, Job, Result, S3Access
from workers.runtime import Runtime

log = logging.getLogger("conveyor.worker")


# How often a running attempt checks whether it was abandoned (stop-and-abandon).
CANCEL_CHECK_SECONDS = 1.0
# CodePipeline's quota: all output variables of one action, names and values in UTF-8.
MAX_OUTPUT_VARIABLES_BYTES = 122_880


class Heartbeat(threading.Thread):
    """Renews an action's lease while its attempt runs, and cancels the attempt once the
    execution no longer wants it (abandoned, timed out, superseded by a newer attempt)."""

    def __init__(
        self,
        store: Store,
        member: str,
        holder: str,
        ttl: float,
        cancelled: threading.Event,
        still_wanted: Callable[[], bool],
    ) -> None:
        super().__init__(daemon=True, name="conveyor-heartbeat")
        self.store, self.member, self.holder, self.ttl = store, member, holder, ttl
        self.cancelled, self.still_wanted = cancelled, still_wanted
        self.stopped = threading.Event()

    def run(self) -> None:
        last_renewal = time.monotonic()
        while not self.stopped.wait(min(CANCEL_CHECK_SECONDS, self.ttl / 3)):
            try:
                if not self.cancelled.is_set() and not self.still_wanted():
                    log.info("%s is no longer wanted; cancelling it", self.member)
                    self.cancelled.set()
                if time.monotonic() - last_renewal >= self.ttl / 3:
                    last_renewal = time.monotonic()
                    if not self.store.renew_lease(self.member, self.holder, self.ttl):
                        log.warning("lease %s lost; the sweep may re-dispatch it", self.member)
            except Exception:  # Redis blips must not kill the build; the next beat retries
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self.stopped.set()


def run_attempt(rt: Runtime, execution_id: str, stage: str, action: str, attempt: int) -> str:
    """Run one attempt if it is still the current one. Returns what happened, for logs/tests."""
    store = rt.store
    state = store.try_load(execution_id)
    act = state.action(stage, action) if state else None
    if state is None or act is None:
        return "unknown"
    if act.status is not ActionStatus.IN_PROGRESS or act.attempt != attempt:
        return "stale"
    aeid = act.action_execution_id
    if store.get_result(execution_id, aeid, attempt) is not None:
        rt.send_callback(execution_id, stage, action, attempt)
        return "already-done"
    member = store.lease_member(execution_id, stage, action, aeid, attempt)
    holder = uuid.uuid4().hex
    ttl = rt.settings.lease_seconds
    if not store.claim_lease(member, holder, ttl):
        return "leased-elsewhere"
    cancelled = threading.Event()

    def still_wanted() -> bool:
        now = store.try_load(execution_id)
        current = now.action(stage, action) if now else None
        return bool(
            current and current.status is ActionStatus.IN_PROGRESS and current.attempt == attempt
        )

    beat = Heartbeat(store, member, holder, ttl, cancelled, still_wanted)
    beat.start()
    try:
        result = _execute(rt, state, stage, action, attempt, cancelled)
    finally:
        beat.stop()
    store.record_result(execution_id, aeid, attempt, result)
    rt.send_callback(execution_id, stage, action, attempt)
    return "succeeded" if result.succeeded else "failed"


def _execute(
    rt: Runtime,
    state: ExecutionState,
    stage: str,
    action: str,
    attempt: int,
    cancelled: threading.Event,
) -> ActionResult:
    act = state.action(stage, action)
    sdecl = state.definition.stage(stage)
    assert act is not None and sdecl is not None
    decl = next(a for a in sdecl.actions if a.name == action)
    provider_cls = rt.registry.get(decl.action_type_id)
    if provider_cls is None:
        return ActionResult(
            succeeded=False,
            error_code="UnknownProvider",
            error_message=f"no provider for {decl.action_type_id} on this worker",
        )
    s = rt.settings
    bucket = state.artifact_bucket
    with tempfile.TemporaryDirectory(prefix="conveyor-", dir=s.workdir) as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "action.log"
        outputs: list[ArtifactLocation] = []
        with log_path.open("w", encoding="utf-8") as log_file:
            try:
                config = provider_cls.Config.model_validate(act.resolved_configuration)
                inputs: dict[str, Path] = {}
                for loc in act.input_artifacts:
                    inputs[loc.name] = tmp / "in" / loc.name
                    inputs[loc.name].mkdir(parents=True)
                    rt.artifacts.download_to_dir(
                        ArtifactRef(**loc.model_dump(exclude={"name"})), inputs[loc.name]
                    )
                out_dirs = {a.name: tmp / "out" / a.name for a in decl.output_artifacts}
                for d in out_dirs.values():
                    d.mkdir(parents=True)
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
                    outputs=out_dirs,
                    workdir=tmp / "work",
                    log=log_file,
                    s3=S3Access(
                        s.s3_endpoint_url, s.s3_access_key_id, s.s3_secret_access_key, s.s3_region
                    ),
                    deadline=act.deadline,
                    cancelled=cancelled,
                    revision=_pinned_revision(state, action),
                )
                res = provider_cls().run(job)
                if res.succeeded:
                    for name, d in out_dirs.items():
                        key = artifact_key(
                            state.pipeline_name, name, act.action_execution_id, attempt
                        )
                        ref = rt.artifacts.upload_dir(d, bucket, key)
                        outputs.append(
                            ArtifactLocation(name=name, **ref.model_dump(exclude={"etag"}))
                        )
            except ActionFailed as exc:
                res = Result(succeeded=False, error_code="JobFailed", error_message=exc.message)
            except ConveyorError as exc:
                res = Result(
                    succeeded=False, error_code=type(exc).__name__, error_message=exc.message
                )
            except Exception as exc:  # a provider bug must fail the action, not wedge it
                log.exception("action %s.%s crashed", stage, action)
                res = Result(
                    succeeded=False,
                    error_code="InternalError",
                    error_message=f"{type(exc).__name__}: {exc}",
                )
        log_loc = None
        # One log per action: the provider's own (a build log) when it has one, which the
        # worker's lines also go to (job.log); otherwise the worker's action log.
        attachments = dict(res.attachments) or {"action-log": log_path}
        prefix = f"{state.pipeline_name[:20]}/logs/{act.action_execution_id}-{attempt}"
        for name, path in attachments.items():
            try:
                ref = rt.artifacts.upload_file(path, bucket, f"{prefix}/{name}.log")
            except Exception:
                log.exception("could not store %s for %s.%s", name, stage, action)
                continue
            if log_loc is None or name != "action-log":
                log_loc = ArtifactLocation(name=name, **ref.model_dump(exclude={"etag"}))
    succeeded = res.succeeded and bool(outputs or not decl.output_artifacts)
    error_code, error_message = res.error_code, res.error_message
    variables = dict(res.output_variables)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > MAX_OUTPUT_VARIABLES_BYTES:
        variables = {}  # never stored: later actions must not see a partial namespace
        if succeeded:
            succeeded = False
            error_code = "OutputVariablesSizeExceeded"
            error_message = (
                f"the action's output variables total {size} bytes; CodePipeline allows at "
                f"most {MAX_OUTPUT_VARIABLES_BYTES} bytes for all output variables of an action"
            )
    return ActionResult(
        succeeded=succeeded,
        summary=res.summary,
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


def _pinned_revision(state: ExecutionState, action: str) -> str | None:
    """The object version a poll trigger detected for this source action, if any."""
    for rev in state.source_revisions:
        if rev.get("actionName") == action and rev.get("revisionType") == "S3_OBJECT_VERSION_ID":
            return str(rev.get("revisionId"))
    return None


def now() -> float:
    return time.time()
