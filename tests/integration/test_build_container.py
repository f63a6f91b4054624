"""Builds of a project whose settings name an image, in a real container (Docker or Podman).

They run where an engine answers ``info`` and skip, saying which engines failed and how,
where none does. The image is made locally from the host's own bash and coreutils
(:mod:`tests.container_image`), so no registry is needed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from providers import sandbox
from providers.base import Job, Result, S3Access
from providers.codebuild import CodeBuild, CodeBuildConfig
from providers.container import (
    NoEngine,
    client_environment,
    detect_engine,
    reap_orphaned_containers,
    remove_argv,
    run_argv,
)
from providers.sandbox import SandboxPolicy, start_time
from tests.container_image import MARKER_TEXT, EngineSetup, build_image, working_settings
from tests.helpers import wait_for

PROJECT = "in-a-container"


@pytest.fixture(scope="module")
def setup() -> EngineSetup:
    try:
        engine = detect_engine()
    except NoEngine as exc:
        pytest.skip(str(exc))
    build_image(engine)
    return working_settings(engine)  # an engine that answers but runs nothing fails


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch root the build user can pass through, as a worker's is."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-container-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def images(setup: EngineSetup, monkeypatch: pytest.MonkeyPatch) -> EngineSetup:
    monkeypatch.setenv("CONVEYOR_BUILD_IMAGES", json.dumps({PROJECT: build_image(setup.engine)}))
    monkeypatch.setenv("CONVEYOR_CONTAINER_ENGINE", setup.engine.name)
    monkeypatch.setenv("CONVEYOR_CONTAINER_ENGINE_ARGS", json.dumps(setup.engine_args))
    monkeypatch.setenv("CONVEYOR_CONTAINER_RUN_ARGS", json.dumps(setup.run_args))
    return setup


def make_job(
    scratch: Path,
    buildspec: str,
    *,
    files: dict[str, str] | None = None,
    secondary: dict[str, str] | None = None,
    deadline: float | None = None,
) -> Job:
    inputs: dict[str, Path] = {}
    for name, content in {"SourceOutput": files or {}, "Other": secondary or {}}.items():
        if name == "Other" and secondary is None:
            continue
        d = scratch / "in" / name
        d.mkdir(parents=True)
        for rel, text in content.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        inputs[name] = d
    (inputs["SourceOutput"] / "buildspec.yml").write_text(dedent(buildspec))
    out = scratch / "out" / "BuildOutput"
    out.mkdir(parents=True)
    work = scratch / "work"
    work.mkdir(mode=0o700)
    user = sandbox.resolve_build_user(sandbox.DEFAULT_BUILD_USER)
    return Job(
        pipeline_name="demo",
        execution_id="exec-1",
        stage_name="Build",
        action_name="Build",
        attempt=1,
        configuration=CodeBuildConfig.model_validate(
            {"ProjectName": PROJECT, "PrimarySource": "SourceOutput"}
        ),
        variables={},
        inputs=inputs,
        outputs={"BuildOutput": out},
        workdir=work,
        log=io.StringIO(),
        s3=S3Access("http://127.0.0.1:1", "k", "s", "us-east-1"),
        deadline=deadline,
        sandbox=SandboxPolicy(user=user, boundary=scratch),
    )


def build_containers(setup: EngineSetup) -> list[str]:
    """Names of the build containers the engine still has, running or not."""
    out = subprocess.run(
        [*setup.engine.command, "ps", "--all", "--format", "{{.Names}}"],
        env=client_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [n for n in out.split() if n.startswith("conveyor-build-")]


def _marked(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def run(job: Job) -> tuple[Result, str]:
    result = CodeBuild().run(job)
    return result, result.attachments["build-log"].read_text()


def test_a_build_runs_in_its_image_with_state_carried_between_commands(
    images: EngineSetup, scratch: Path
) -> None:
    before = build_containers(images)
    job = make_job(
        scratch,
        """
        version: 0.2
        env:
          variables:
            GREETING: "two\\nlines 'quoted'"
          exported-variables: [FROM_BUILD]
        phases:
          build:
            commands:
              - cat /etc/conveyor-test-image > out/image.txt
              - cd sub
              - export FROM_BUILD=exported; KEPT=kept
              - f() { echo "function $1"; }
              - f works > ../out/state.txt; echo "$PWD $KEPT" >> ../out/state.txt
              - printf '%s' "$GREETING" > ../out/greeting.txt
              - id -u > ../out/uid.txt; echo "$HOME" > ../out/home.txt
              - cat "$CODEBUILD_SRC_DIR_Other/data.txt" > ../out/other.txt
              - echo "$CODEBUILD_BUILD_IMAGE" > ../out/image-name.txt
              - (exit 3) || echo "a failing subshell is fine"
        artifacts:
          base-directory: out
          files: ['**/*']
        """,
        files={"sub/.keep": "", "out/.keep": ""},
        secondary={"data.txt": "secondary source\n"},
    )
    result, log = run(job)
    assert result.succeeded, log
    assert f"({images.engine.name})" in log
    out = job.outputs["BuildOutput"]
    assert (out / "image.txt").read_text() == MARKER_TEXT  # only the image has this file
    src = job.workdir / "codebuild" / "src"
    assert (out / "state.txt").read_text() == f"function works\n{src}/sub kept\n"
    assert (out / "greeting.txt").read_text() == "two\nlines 'quoted'"  # a newline survives
    user = job.sandbox.user
    assert user is not None
    assert (out / "uid.txt").read_text() == f"{user.uid}\n"
    assert (out / "home.txt").read_text().startswith(str(job.workdir / "codebuild" / "state"))
    assert (out / "other.txt").read_text() == "secondary source\n"
    assert (out / "image-name.txt").read_text().strip().endswith("conveyor-test-build:latest")
    assert result.output_variables == {"FROM_BUILD": "exported"}
    assert build_containers(images) == before  # removed when the build ended


def test_a_failing_command_fails_the_build_and_the_container_goes(
    images: EngineSetup, scratch: Path
) -> None:
    job = make_job(
        scratch,
        """
        version: 0.2
        phases:
          build:
            commands:
              - echo before
              - exit 7
              - echo never
        """,
    )
    before = build_containers(images)
    result, log = run(job)
    assert not result.succeeded
    assert "exit status 7" in log
    assert "never" not in log.replace("echo never", "")
    assert build_containers(images) == before


def test_a_timed_out_build_is_killed_with_its_container(images: EngineSetup, scratch: Path) -> None:
    marker = f"ctr-{uuid.uuid4().hex[:10]}"
    job = make_job(
        scratch,
        f"""
        version: 0.2
        phases:
          build:
            commands:
              - (bash -c 'sleep 300; true {marker}-bg' >/dev/null 2>&1 &) ; echo started
              - bash -c 'sleep 300; true {marker}-fg'
        """,
        deadline=time.time() + 8,
    )
    before = build_containers(images)
    started = time.monotonic()
    result, log = run(job)
    assert not result.succeeded
    assert "timed out" in (result.summary or ""), log
    assert time.monotonic() - started < 40
    wait_for(lambda: not _marked(marker), timeout=10)
    assert build_containers(images) == before


def test_a_cancelled_build_leaves_nothing_running(images: EngineSetup, scratch: Path) -> None:
    marker = f"ctr-{uuid.uuid4().hex[:10]}"
    job = make_job(
        scratch,
        f"""
        version: 0.2
        phases:
          build:
            commands:
              - bash -c 'sleep 300; true {marker}'
        """,
    )
    before = build_containers(images)
    threading.Timer(3.0, job.cancelled.set).start()
    result, log = run(job)
    assert "cancelled" in (result.summary or ""), log
    wait_for(lambda: not _marked(marker), timeout=10)
    assert build_containers(images) == before


def test_background_processes_end_with_the_build(images: EngineSetup, scratch: Path) -> None:
    marker = f"ctr-{uuid.uuid4().hex[:10]}"
    job = make_job(
        scratch,
        f"""
        version: 0.2
        phases:
          build:
            commands:
              - (setsid bash -c 'sleep 300; true {marker}' >/dev/null 2>&1 &) ; sleep 0.3
              - >-
                for c in /proc/[0-9]*/cmdline; do
                case "$(cat "$c")" in *{marker}*) echo "seen running";; esac; done 2>/dev/null
        artifacts:
          files: [buildspec.yml]
        """,
    )
    result, log = run(job)
    assert result.succeeded, log
    assert "seen running" in log
    wait_for(lambda: not _marked(marker), timeout=10)


def test_a_worker_start_removes_containers_of_dead_workers_only(
    images: EngineSetup, scratch: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = f"conveyor-build-{os.getpid()}-{start_time(os.getpid())}-{uuid.uuid4().hex[:12]}"
    orphan = f"conveyor-build-{dead.pid}-1-{uuid.uuid4().hex[:12]}"
    image = build_image(images.engine)
    for name in (mine, orphan):
        argv = run_argv(
            images.engine,
            image,
            name,
            user=(os.getuid(), os.getgid()),
            mounts=[],
            workdir=Path("/"),
            extra=images.run_args,
        )
        subprocess.run(argv, env=client_environment(), capture_output=True, check=True)
    try:
        assert {mine, orphan} <= set(build_containers(images))
        assert reap_orphaned_containers() >= 1
        left = build_containers(images)
        assert orphan not in left
        assert mine in left
    finally:
        subprocess.run(remove_argv(images.engine, mine), env=client_environment(), check=False)
        subprocess.run(remove_argv(images.engine, orphan), env=client_environment(), check=False)
