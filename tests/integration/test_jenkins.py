"""Build/Custom/Jenkins against a Jenkins-speaking HTTP server on loopback."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from providers import default_registry
from providers.base import ActionFailed, ActionTypeId, Category, Job, S3Access
from providers.jenkins import JOURNAL, JenkinsBuild, JenkinsConfig, JenkinsTest
from tests.helpers import wait_for
from tests.jenkins_fake import FakeJenkins, FakeJob, fake_jenkins
from workers import devstack

pytestmark = pytest.mark.integration


@pytest.fixture
def jenkins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJenkins]:
    with fake_jenkins() as server:
        point_at(server, tmp_path, monkeypatch)
        yield server


def point_at(server: FakeJenkins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "jenkins-token"
    token_file.write_text(server.token + "\n")  # as a mounted secret often ends
    monkeypatch.setenv("CONVEYOR_JENKINS_URL", server.url)
    monkeypatch.setenv("CONVEYOR_JENKINS_USER", server.user)
    monkeypatch.setenv("CONVEYOR_JENKINS_API_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("CONVEYOR_JENKINS_POLL_SECONDS", "0.02")


def make_job(tmp_path: Path, project: str, *, outputs: tuple[str, ...] = ("JenkinsOut",)) -> Job:
    out = {}
    for name in outputs:
        out[name] = tmp_path / "out" / name
        out[name].mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Job(
        pipeline_name="release",
        execution_id="exec-42",
        stage_name="Build",
        action_name="Jenkins",
        attempt=1,
        configuration=JenkinsConfig(ProjectName=project),
        variables={},
        inputs={},
        outputs=out,
        workdir=work,
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
    )


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def log_of(job: Job) -> str:
    assert isinstance(job.log, io.StringIO)
    return job.log.getvalue()


# -- success ---------------------------------------------------------------------------


def test_folder_job_succeeds_with_log_and_artifacts(tmp_path: Path, jenkins: FakeJenkins) -> None:
    chunks = ["Started by remote host\n", "compiling...\n", "tests passed\n", "Finished: SUCCESS\n"]
    jenkins.jobs["team/app"] = FakeJob(
        log_chunks=chunks,
        artifacts={"dist/app.tar.gz": b"\x1f\x8b binary", "report.txt": b"ok\n"},
    )
    job = make_job(tmp_path, "team/app")

    result = JenkinsBuild().run(job)

    build = jenkins.build("team/app")
    assert result.succeeded
    assert result.external_execution_id == str(build.number)
    assert result.external_execution_url == f"{jenkins.url}/job/team/job/app/{build.number}/"
    assert result.summary == "Jenkins job 'team/app' build #1: SUCCESS, 2 archived artifacts"
    assert files_under(job.outputs["JenkinsOut"]) == {
        "dist/app.tar.gz": b"\x1f\x8b binary",
        "report.txt": b"ok\n",
    }
    # The console log arrives whole, in order, each chunk once, across several reads.
    log = log_of(job)
    assert "".join(chunks) in log
    assert log.count("compiling...") == 1
    assert result.attachments["jenkins-console"].read_text() == log
    reads = [p for m, p in jenkins.requests if "progressiveText" in p]
    assert len(reads) >= len(chunks)
    # Parameters CodePipeline's identity travels in; the folder path is /job/a/job/b.
    (item,) = jenkins.triggered("team/app")
    assert item.params == {
        "CODEPIPELINE_PIPELINE_NAME": "release",
        "CODEPIPELINE_EXECUTION_ID": "exec-42",
        "CODEPIPELINE_STAGE_NAME": "Build",
        "CODEPIPELINE_ACTION_NAME": "Jenkins",
    }
    assert ("POST", "/job/team/job/app/buildWithParameters?delay=0sec") in jenkins.requests
    # The queue was polled until the item became a build.
    assert item.polls > jenkins.jobs["team/app"].queue_polls


class _Store(BaseHTTPRequestHandler):
    """Another host serving one object; remembers the Authorization header it was sent."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"stored")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_redirected_artifact_download_leaves_credentials_home(
    tmp_path: Path, jenkins: FakeJenkins
) -> None:
    store = ThreadingHTTPServer(("127.0.0.1", devstack.free_port()), _Store)
    threading.Thread(target=store.serve_forever, args=(0.05,), daemon=True).start()
    try:
        where = f"http://127.0.0.1:{store.server_address[1]}/bucket/big.bin?sig=1"
        jenkins.jobs["app"] = FakeJob(
            artifacts={"big.bin": b""}, artifact_redirects={"big.bin": where}
        )
        job = make_job(tmp_path, "app")
        assert JenkinsBuild().run(job).succeeded
    finally:
        store.shutdown()
        store.server_close()
    assert files_under(job.outputs["JenkinsOut"]) == {"big.bin": b"stored"}
    assert _Store.seen == [None]


def test_crumbs_disabled_and_unparameterized_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_jenkins(crumbs=False) as server:
        point_at(server, tmp_path, monkeypatch)
        server.jobs["plain"] = FakeJob(parameterized=False)
        job = make_job(tmp_path, "plain", outputs=())
        result = JenkinsBuild().run(job)
    assert result.succeeded
    assert result.summary == "Jenkins job 'plain' build #1: SUCCESS"
    assert ("POST", "/job/plain/build?delay=0sec") in server.requests
    assert "takes no parameters" in log_of(job)


def test_test_action_type_is_registered_beside_build() -> None:
    registry = default_registry(entry_points=False)
    build = ActionTypeId(category=Category.BUILD, owner="Custom", provider="Jenkins", version="1")
    test = ActionTypeId(category=Category.TEST, owner="Custom", provider="Jenkins", version="1")
    assert registry.get(build) is JenkinsBuild
    assert registry.get(test) is JenkinsTest


# -- failures a person acts on -------------------------------------------------------------


def test_failing_job_names_job_build_result_and_last_lines(
    tmp_path: Path, jenkins: FakeJenkins
) -> None:
    jenkins.jobs["app"] = FakeJob(
        log_chunks=["npm test\n", "FAIL src/cart.test.js\n", "Finished: FAILURE\n"],
        result="FAILURE",
        artifacts={"junk.txt": b"x"},
    )
    job = make_job(tmp_path, "app")
    result = JenkinsBuild().run(job)
    message = result.error_message or ""
    assert not result.succeeded and result.error_code == "JobFailed"
    assert message.startswith("Jenkins job 'app' build #1 finished FAILURE")
    assert f"{jenkins.url}/job/app/1/console" in message
    assert "FAIL src/cart.test.js" in message
    # The failed build is still identified and its console kept with the action.
    assert result.external_execution_id == "1"
    assert result.external_execution_url == f"{jenkins.url}/job/app/1/"
    assert "FAIL src/cart.test.js" in result.attachments["jenkins-console"].read_text()
    assert files_under(job.outputs["JenkinsOut"]) == {}  # a failed build delivers nothing


@pytest.mark.parametrize("result", ["UNSTABLE", "ABORTED", "NOT_BUILT"])
def test_every_other_result_fails(tmp_path: Path, jenkins: FakeJenkins, result: str) -> None:
    jenkins.jobs["app"] = FakeJob(result=result)
    outcome = JenkinsBuild().run(make_job(tmp_path, "app"))
    assert not outcome.succeeded
    assert f"build #1 finished {result};" in (outcome.error_message or "")


def test_missing_job_says_so(tmp_path: Path, jenkins: FakeJenkins) -> None:
    with pytest.raises(ActionFailed) as failed:
        JenkinsBuild().run(make_job(tmp_path, "team/nope"))
    assert failed.value.message == (
        f"Jenkins job 'team/nope' does not exist at {jenkins.url} (HTTP 404 from "
        f"{jenkins.url}/job/team/job/nope/); ProjectName must be the job's full name, folders "
        "separated by '/'"
    )


def test_wrong_token_is_refused_without_showing_it(
    tmp_path: Path, jenkins: FakeJenkins, monkeypatch: pytest.MonkeyPatch
) -> None:
    jenkins.jobs["app"] = FakeJob()
    wrong = "wrong-" + jenkins.token
    (tmp_path / "wrong-token").write_text(wrong)
    monkeypatch.setenv("CONVEYOR_JENKINS_API_TOKEN_FILE", str(tmp_path / "wrong-token"))
    job = make_job(tmp_path, "app")
    with pytest.raises(ActionFailed) as failed:
        JenkinsBuild().run(job)
    message = failed.value.message
    assert "refused the credentials of user 'robot' (HTTP 401)" in message
    assert "CONVEYOR_JENKINS_API_TOKEN_FILE" in message
    for secret in (wrong, jenkins.token):
        assert secret not in message
        assert secret not in log_of(job)
    assert jenkins.triggered("app") == []


def test_missing_token_file_names_the_setting(
    tmp_path: Path, jenkins: FakeJenkins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_JENKINS_API_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(ActionFailed, match=r"cannot read the Jenkins API token file .*absent"):
        JenkinsBuild().run(make_job(tmp_path, "app"))


def test_no_server_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_JENKINS_URL", raising=False)
    with pytest.raises(ActionFailed, match="set CONVEYOR_JENKINS_URL"):
        JenkinsBuild().run(make_job(tmp_path, "app"))


def test_queue_item_cancelled_in_jenkins(tmp_path: Path, jenkins: FakeJenkins) -> None:
    jenkins.jobs["app"] = FakeJob(cancel_in_queue=True)
    with pytest.raises(ActionFailed, match="was cancelled in Jenkins before it started"):
        JenkinsBuild().run(make_job(tmp_path, "app"))


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "a/../../b", "a\\b"])
def test_unsafe_artifact_path_fails(tmp_path: Path, jenkins: FakeJenkins, bad: str) -> None:
    jenkins.jobs["app"] = FakeJob(artifacts={bad: b"x"})
    with pytest.raises(ActionFailed, match="unsafe path"):
        JenkinsBuild().run(make_job(tmp_path, "app"))
    assert not (tmp_path / "escape.txt").exists()


def test_a_character_split_between_two_reads_arrives_whole(
    tmp_path: Path, jenkins: FakeJenkins
) -> None:
    euro = "€".encode()
    jenkins.jobs["app"] = FakeJob(log_chunks=[b"price: 5" + euro[:1], euro[1:] + b"\n"])
    job = make_job(tmp_path, "app", outputs=())
    assert JenkinsBuild().run(job).succeeded
    assert "price: 5€\n" in log_of(job)


def test_console_log_is_capped_with_a_notice(
    tmp_path: Path, jenkins: FakeJenkins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_JENKINS_MAX_LOG_BYTES", "2000")
    jenkins.jobs["chatty"] = FakeJob(log_chunks=["x" * 99 + "\n"] * 50 + ["the end\n"])
    result = JenkinsBuild().run(make_job(tmp_path, "chatty", outputs=()))
    stored = result.attachments["jenkins-console"].read_text()
    assert result.succeeded
    assert len(stored.encode()) < 2000 + 200
    assert "longer than 2000 bytes (CONVEYOR_JENKINS_MAX_LOG_BYTES)" in stored
    assert "the end" not in stored


def test_artifacts_over_the_limit_fail(tmp_path: Path, jenkins: FakeJenkins) -> None:
    jenkins.jobs["app"] = FakeJob(artifacts={"a.bin": b"x" * 600, "b.bin": b"y" * 600})
    job = make_job(tmp_path, "app")
    job.max_artifact_bytes = 1000
    with pytest.raises(ActionFailed, match=r"exceed 1000 bytes \(CONVEYOR_MAX_ARTIFACT_BYTES\)"):
        JenkinsBuild().run(job)


@pytest.mark.parametrize("bad", ["", "a//b", "/lead", "trail/", " "])
def test_project_name_is_checked(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not a Jenkins job name"):
        JenkinsConfig(ProjectName=bad)


# -- stopping, timeouts, outages -------------------------------------------------------------


def test_cancellation_stops_the_running_build(tmp_path: Path, jenkins: FakeJenkins) -> None:
    jenkins.jobs["forever"] = FakeJob(log_chunks=["tick\n"] * 1000, result=None)
    job = make_job(tmp_path, "forever")
    failure: list[ActionFailed] = []

    def run() -> None:
        try:
            JenkinsBuild().run(job)
        except ActionFailed as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: "tick" in log_of(job), timeout=10, message="the build never logged")
    job.cancelled.set()
    thread.join(10)
    assert not thread.is_alive()
    build = jenkins.build("forever")
    assert jenkins.stops == [f"{jenkins.url}/job/forever/{build.number}/"]
    assert build.stopped
    assert failure and "stopped while the build ran" in failure[0].message


def test_deadline_cancels_the_queued_item(tmp_path: Path, jenkins: FakeJenkins) -> None:
    jenkins.jobs["busy"] = FakeJob(queue_polls=10_000)
    job = make_job(tmp_path, "busy")
    job.deadline = time.time() + 0.5
    with pytest.raises(ActionFailed, match="timed out while the build waited in the queue"):
        JenkinsBuild().run(job)
    (item,) = jenkins.triggered("busy")
    assert jenkins.cancelled_items == [item.number]
    assert jenkins.builds == []


def test_unreachable_jenkins_is_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = devstack.free_port()  # nothing listens there
    monkeypatch.setenv("CONVEYOR_JENKINS_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CONVEYOR_JENKINS_USER", "robot")
    monkeypatch.delenv("CONVEYOR_JENKINS_API_TOKEN_FILE", raising=False)
    with pytest.raises(ActionFailed) as failed:
        JenkinsBuild().run(make_job(tmp_path, "app"))
    assert failed.value.retryable
    assert f"Jenkins at http://127.0.0.1:{port} did not answer" in failed.value.message


def test_a_retried_run_follows_the_same_build(tmp_path: Path, jenkins: FakeJenkins) -> None:
    """Jenkins answers 503 mid-build: the worker's retry resumes that build and its log."""
    chunks = ["one\n", "two\n", "three\n"]
    jenkins.jobs["app"] = FakeJob(
        log_chunks=chunks, artifacts={"x.txt": b"1"}, outage_after_first_log_read=True
    )
    job = make_job(tmp_path, "app")
    with pytest.raises(ActionFailed) as failed:
        JenkinsBuild().run(job)
    assert failed.value.retryable
    assert "did not answer (HTTP 503)" in failed.value.message

    result = JenkinsBuild().run(job)

    assert result.succeeded
    assert len(jenkins.triggered("app")) == 1
    assert len(jenkins.builds) == 1
    log = log_of(job)
    assert "".join(chunks) in log
    assert all(log.count(c) == 1 for c in chunks)
    assert json.loads((job.workdir / JOURNAL).read_text())["build_url"].endswith("/job/app/1/")
