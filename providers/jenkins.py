"""Build/Custom/Jenkins/1 and Test/Custom/Jenkins/1: run a Jenkins job as the action.

CodePipeline's Jenkins action names only the job (``ProjectName``); the server and the
credentials live with the installation (``CONVEYOR_JENKINS_*``), never in the definition,
so the API token cannot leak through ``get-pipeline``. The job is started with
``buildWithParameters`` (execution id, stage and action as ``CODEPIPELINE_*``
parameters), its queue item followed to the build, the console log copied into the
action's log as it grows, the result mapped, and the build's archived artifacts become
the output artifact.

A transient failure (Jenkins unreachable) makes the worker run this again within the same
attempt; ``jenkins-build.json`` in the work directory remembers the queue item, build and
log offset, so that run picks up the same build instead of starting a second one.
"""

from __future__ import annotations

import codecs
import json
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from providers._jenkins_http import (
    JenkinsClient,
    JenkinsHTTPError,
    JenkinsUnreachable,
    job_path,
)
from providers.base import (
    ActionFailed,
    ActionTypeId,
    Category,
    Job,
    Provider,
    ProviderConfig,
    Result,
)
from providers.ziputil import MAX_BYTES_SETTING, MAX_FILES_SETTING

JOURNAL = "jenkins-build.json"
CONSOLE = "jenkins-console.log"
LOG_NAME = "jenkins-console"
TAIL_LINES = 5
DOWNLOAD_CHUNK = 1 << 16


class JenkinsSettings(BaseSettings):
    """Where the Jenkins server is and who Conveyor is there (env ``CONVEYOR_JENKINS_*``)."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_JENKINS_", extra="ignore")

    url: str | None = None
    user: str | None = None
    # A file holding the user's API token (a mounted secret); its value is never logged.
    api_token_file: Path | None = None
    poll_seconds: float = 2.0
    # The console log kept with the action is cut here (Jenkins keeps the whole of it).
    max_log_bytes: int = 50 * 1024**2
    request_timeout_seconds: float = 30.0

    def token(self) -> str | None:
        if self.api_token_file is None:
            return None
        try:
            return self.api_token_file.read_text().strip()
        except OSError as exc:
            raise ActionFailed(
                f"cannot read the Jenkins API token file {self.api_token_file} "
                f"(CONVEYOR_JENKINS_API_TOKEN_FILE): {exc.strerror or exc}"
            ) from None


class JenkinsConfig(ProviderConfig):
    ProjectName: str

    @field_validator("ProjectName")
    @classmethod
    def _project(cls, value: str) -> str:
        parts = value.split("/")
        if not value or any(not part.strip() for part in parts):
            raise ValueError(
                f"'{value}' is not a Jenkins job name: give the job's full name, folders "
                "separated by '/' (e.g. 'team/app')"
            )
        return value


@dataclass
class _Journal:
    """What a run has started so far, kept for a retried run of the same attempt."""

    queue_url: str | None = None
    build_url: str | None = None
    log_start: int = 0

    @classmethod
    def load(cls, path: Path) -> _Journal:
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


class _ConsoleLog:
    """The build's console log in a file of its own (stored as the action's log), mirrored
    to ``job.log``, cut at ``cap`` bytes with a notice. Appends, so a retried run of the
    attempt continues the file the earlier run wrote."""

    def __init__(self, path: Path, mirror: TextIO, cap: int) -> None:
        self.path, self.mirror, self.cap = path, mirror, cap
        self.size = path.stat().st_size if path.exists() else 0
        self.cut = self.size >= cap
        self.tail: list[str] = []

    def write(self, text: str) -> None:
        self.tail = (self.tail + text.splitlines())[-TAIL_LINES:]
        if self.cut:
            return
        data = text.encode()
        if self.size + len(data) > self.cap:
            data = data[: self.cap - self.size]
            text = data.decode(errors="ignore")
            self.cut = True
        self._append(text)
        if self.cut:
            self._append(
                f"\n[Jenkins] the console log is longer than {self.cap} bytes "
                f"(CONVEYOR_JENKINS_MAX_LOG_BYTES); the rest is in the build's console in Jenkins\n"
            )

    def _append(self, text: str) -> None:
        data = text.encode()
        with self.path.open("ab") as fh:
            fh.write(data)
        self.size += len(data)
        self.mirror.write(text)
        self.mirror.flush()


class _Stopped(Exception):
    """The action was cancelled or ran past its deadline; ``why`` says which."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class JenkinsBuild(Provider):
    action_type = ActionTypeId(
        category=Category.BUILD, owner="Custom", provider="Jenkins", version="1"
    )
    Config = JenkinsConfig
    # CodePipeline's limits for a Jenkins action are 0-5 inputs and outputs. Inputs are
    # not sent to Jenkins (the job fetches its own sources); outputs take the archived
    # artifacts, so only one output artifact is meaningful.
    max_inputs = 5
    max_outputs = 1

    def run(self, job: Job) -> Result:
        config: JenkinsConfig = job.configuration
        settings = JenkinsSettings()
        if not settings.url:
            raise ActionFailed(
                f"{self.action_type} needs a Jenkins server: set CONVEYOR_JENKINS_URL (and "
                "CONVEYOR_JENKINS_USER, CONVEYOR_JENKINS_API_TOKEN_FILE) on the workers"
            )
        client = JenkinsClient(
            settings.url,
            settings.user,
            settings.token(),
            timeout=settings.request_timeout_seconds,
        )
        run = _Run(job, config.ProjectName, client, settings)
        try:
            return run.execute()
        except JenkinsUnreachable as exc:
            raise ActionFailed(
                f"Jenkins at {settings.url} did not answer ({exc.reason})",
                retryable=True,
            ) from None
        except JenkinsHTTPError as exc:
            raise ActionFailed(run.explain(exc)) from None


class JenkinsTest(JenkinsBuild):
    action_type = ActionTypeId(
        category=Category.TEST, owner="Custom", provider="Jenkins", version="1"
    )


class _Run:
    """One run of the provider for one attempt, resuming what an earlier run started."""

    def __init__(
        self, job: Job, project: str, client: JenkinsClient, settings: JenkinsSettings
    ) -> None:
        self.job, self.project, self.client, self.settings = job, project, client, settings
        self.job_url = client.url(job_path(project) + "/")
        self.journal_path = job.workdir / JOURNAL
        self.journal = _Journal.load(self.journal_path)
        self.console = _ConsoleLog(job.workdir / CONSOLE, job.log, settings.max_log_bytes)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def execute(self) -> Result:
        job = self.job
        if job.inputs and not self.journal.queue_url:
            names = ", ".join(job.inputs)
            self._say(f"input artifacts ({names}) are not sent to Jenkins; the job fetches its own")
        try:
            if not self.journal.queue_url:
                self._trigger()
            if not self.journal.build_url:
                self._wait_for_build()
            build = self._follow_build()
        except _Stopped as stop:
            self._stop()
            raise ActionFailed(f"Jenkins job '{self.project}': {stop.why}") from None
        build_url = self.journal.build_url or ""
        number = str(build.get("number", "?"))
        result = build.get("result")
        if result == "SUCCESS":
            count = self._fetch_artifacts(build, build_url)
            summary = f"Jenkins job '{self.project}' build #{number}: SUCCESS"
            if job.outputs:
                summary += f", {count} archived artifact{'s' if count != 1 else ''}"
            error = None
        else:
            summary = error = self._failure_message(number, result, build_url)
        return Result(
            succeeded=error is None,
            summary=summary,
            error_code=None if error is None else "JobFailed",
            error_message=error,
            external_execution_id=number,
            external_execution_url=build_url,
            attachments={LOG_NAME: self.console.path},
        )

    # -- the steps -----------------------------------------------------------------------

    def _trigger(self) -> None:
        job = self.job
        params = {
            "CODEPIPELINE_PIPELINE_NAME": job.pipeline_name,
            "CODEPIPELINE_EXECUTION_ID": job.execution_id,
            "CODEPIPELINE_STAGE_NAME": job.stage_name,
            "CODEPIPELINE_ACTION_NAME": job.action_name,
        }
        # delay=0sec skips the job's quiet period: the pipeline already decided to build.
        url = self.job_url + "buildWithParameters?delay=0sec"
        try:
            location = self.client.post(url, params)
        except JenkinsHTTPError as exc:
            if not _not_parameterized(exc):
                raise
            # A job without parameters refuses buildWithParameters; /build starts it alike.
            self._say("the job takes no parameters; starting it without them")
            location = self.client.post(self.job_url + "build?delay=0sec")
        if not location or "/queue/item/" not in location:
            raise ActionFailed(
                f"Jenkins accepted the build of job '{self.project}' but named no queue item "
                f"(Location: {location or 'missing'}); is {self.settings.url} a Jenkins server?"
            )
        self.journal.queue_url = location.rstrip("/") + "/"
        self.journal.save(self.journal_path)
        self._say(f"queued job '{self.project}': {self.journal.queue_url}")

    def _wait_for_build(self) -> None:
        queue_url = self.journal.queue_url or ""
        while True:
            try:
                item = self.client.get_json(queue_url + "api/json")
            except JenkinsHTTPError as exc:
                if exc.status == 404:
                    raise ActionFailed(
                        f"Jenkins forgot queue item {queue_url} of job '{self.project}' before "
                        "it became a build (Jenkins keeps left queue items for about 5 "
                        "minutes); check the job's build history"
                    ) from None
                raise
            if item.get("cancelled"):
                raise ActionFailed(
                    f"the queued build of Jenkins job '{self.project}' was cancelled in "
                    f"Jenkins before it started ({queue_url})"
                )
            executable = item.get("executable")
            if isinstance(executable, dict) and executable.get("url"):
                build_url = urllib.parse.urljoin(queue_url, str(executable["url"]))
                self.journal.build_url = build_url.rstrip("/") + "/"
                self.journal.save(self.journal_path)
                self._say(f"build #{executable.get('number', '?')}: {self.journal.build_url}")
                return
            self._pause(f"while the build waited in the queue ({item.get('why') or 'queued'})")

    def _follow_build(self) -> dict[str, Any]:
        """Copy the console log as it grows until the build is over; its final JSON."""
        build_url = self.journal.build_url or ""
        while True:
            # The build's state is read before the log: a build seen finished has written
            # all of its log, so the read after it is the last one needed.
            build = self.client.get_json(build_url + "api/json")
            more = self._copy_log(build_url)
            if not build.get("building") and not more:
                return build
            self._pause("while the build ran")

    def _copy_log(self, build_url: str) -> bool:
        chunk = self.client.progressive_text(build_url, self.journal.log_start)
        # Incremental: a character split across two reads is decoded whole.
        text = self.decoder.decode(chunk.data, final=not chunk.more)
        if text:
            self.console.write(text)
        if chunk.next_start != self.journal.log_start:
            self.journal.log_start = chunk.next_start
            self.journal.save(self.journal_path)
        return chunk.more

    def _fetch_artifacts(self, build: dict[str, Any], build_url: str) -> int:
        if not self.job.outputs:
            return 0
        target = next(iter(self.job.outputs.values()))
        paths = [str(a.get("relativePath", "")) for a in build.get("artifacts") or []]
        if len(paths) > self.job.max_artifact_files:
            raise ActionFailed(
                f"build {build_url} archived {len(paths)} files; the limit is "
                f"{self.job.max_artifact_files} files ({MAX_FILES_SETTING})"
            )
        budget = self.job.max_artifact_bytes
        for rel in paths:
            dest = target.joinpath(*_safe_parts(rel, build_url))
            dest.parent.mkdir(parents=True, exist_ok=True)
            quoted = "/".join(urllib.parse.quote(p) for p in rel.split("/"))
            with (
                self.client.get(build_url + "artifact/" + quoted) as response,
                dest.open("wb") as out,
            ):
                while block := response.read(DOWNLOAD_CHUNK):
                    budget -= len(block)
                    if budget < 0:
                        raise ActionFailed(
                            f"the artifacts archived by build {build_url} exceed "
                            f"{self.job.max_artifact_bytes} bytes ({MAX_BYTES_SETTING})"
                        )
                    out.write(block)
            self._say(f"artifact: {rel}")
        return len(paths)

    # -- stopping --------------------------------------------------------------------------

    def _pause(self, during: str) -> None:
        """Wait one poll interval; raise _Stopped if the action is cancelled or out of time."""
        job = self.job
        wait = self.settings.poll_seconds
        if job.deadline is not None:
            left = job.deadline - time.time()
            if left <= 0:
                raise _Stopped(f"the action timed out {during}")
            wait = min(wait, left)
        if job.cancelled.wait(wait):
            raise _Stopped(f"the action was stopped {during}")

    def _stop(self) -> None:
        """Stop the build (or take it out of the queue) so Jenkins does not run on alone."""
        try:
            if self.journal.build_url:
                self.client.post(self.journal.build_url + "stop")
                self._say(f"asked Jenkins to stop {self.journal.build_url}")
            elif self.journal.queue_url:
                number = self.journal.queue_url.rstrip("/").rsplit("/", 1)[-1]
                self.client.post(self.client.url(f"queue/cancelItem?id={number}"))
                self._say(f"asked Jenkins to cancel queue item {number}")
        except (JenkinsHTTPError, JenkinsUnreachable) as exc:
            self._say(f"could not stop the Jenkins build: {exc}")

    # -- messages --------------------------------------------------------------------------

    def _failure_message(self, number: str, result: Any, build_url: str) -> str:
        outcome = f"finished {result}" if result else "ended without a result"
        message = f"Jenkins job '{self.project}' build #{number} {outcome}"
        message += f"; console: {build_url}console"
        tail = [line.strip() for line in self.console.tail if line.strip()]
        if tail:
            message += " — last lines: " + " | ".join(tail[-3:])[:400]
        return message

    def explain(self, exc: JenkinsHTTPError) -> str:
        """An HTTP error from Jenkins as something a person can fix. Never the token."""
        base = self.settings.url
        who = f"user '{self.settings.user}'" if self.settings.user else "anonymous access"
        if exc.status == 401:
            return (
                f"Jenkins at {base} refused the credentials of {who} (HTTP 401): check "
                "CONVEYOR_JENKINS_USER and the API token in CONVEYOR_JENKINS_API_TOKEN_FILE"
            )
        if exc.status == 403:
            detail = "a valid crumb" if "crumb" in exc.body.lower() else "permission"
            return (
                f"Jenkins at {base} refused {exc.method} {exc.url} for {who} (HTTP 403, "
                f"{detail}): the user needs Job/Build and Job/Read on '{self.project}'"
            )
        if exc.status == 404 and not self.journal.queue_url:
            return (
                f"Jenkins job '{self.project}' does not exist at {base} (HTTP 404 from "
                f"{self.job_url}); ProjectName must be the job's full name, folders "
                "separated by '/'"
            )
        return f"Jenkins answered {exc.method} {exc.url} with HTTP {exc.status}: {exc.body}"

    def _say(self, text: str) -> None:
        self.console.write(f"[Jenkins] {text}\n")


def _not_parameterized(exc: JenkinsHTTPError) -> bool:
    return exc.status in (400, 500) and "not parameterized" in exc.body.lower()


def _safe_parts(rel: str, build_url: str) -> tuple[str, ...]:
    """An archived artifact's path as parts that stay inside the output directory."""
    path = PurePosixPath(rel)
    parts = path.parts
    if (
        not rel
        or path.is_absolute()
        or "\\" in rel
        or any(p in ("", ".", "..") for p in parts)
        or "\x00" in rel
    ):
        raise ActionFailed(
            f"build {build_url} archived an artifact with an unsafe path {rel!r}; "
            "only relative paths inside the workspace are accepted"
        )
    return parts
